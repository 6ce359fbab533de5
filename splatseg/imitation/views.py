"""Cameras of the decoder path and what the splats show in them: depth, visibility of 3D points,
rendered embeddings, decoder masks.

A `View` is one pinhole camera (viewmat world -> OpenCV camera [4, 4], K [3, 3] in pixels of a
W x H image): a scene view, a held-out view, or the viewer's camera. `DecoderRun` holds what a run
gives the decoder path (splats, scene cameras, training views, the imitation field) and renders,
per view, the expected depth and opacity (`geometry`, full resolution) and SAM's embedding
(`embedding`); scene views' renders are cached.

Visibility of a world point X in a view (`visible`): it projects inside the image in front of the
camera, the pixel there is covered (alpha >= `MIN_ALPHA`), and its camera depth z is within
`DEPTH_TOLERANCE` * z of the rendered depth at that pixel (so it is not hidden behind a surface).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from splatseg.data import load_scene
from splatseg.imitation.decoder import DecodedMasks
from splatseg.devices import resolve_device
from splatseg.imitation.distill import read_run_info
from splatseg.imitation.field import Imitation, load_imitation
from splatseg.data.placement import splats_in_world
from splatseg.render import render
from splatseg.run import RunError
from splatseg.types import Cameras, Splats

MIN_ALPHA = 0.5
"""Accumulated opacity above which a pixel shows a surface."""

DEPTH_TOLERANCE = 0.03
"""Relative depth difference within which a projected point counts as the visible surface."""


@dataclass(frozen=True, eq=False)
class View:
    """One pinhole camera (module doc)."""

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int
    name: str = ""

    @classmethod
    def of(cls, cameras: Cameras, i: int) -> "View":
        return cls(cameras.viewmats[i].astype(np.float64), cameras.Ks[i].astype(np.float64),
                   int(cameras.widths[i]), int(cameras.heights[i]), cameras.names[i])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixels [P, 2] x right y down, camera depth z [P]) of world points [P, 3]."""
        p = np.asarray(points, np.float64).reshape(-1, 3)
        cam = p @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]
        z = cam[:, 2]
        safe = np.where(np.abs(z) > 1e-12, z, 1e-12)
        uv = cam[:, :2] / safe[:, None] * np.diag(self.K)[:2] + self.K[:2, 2]
        return uv, z

    def backproject(self, x: float, y: float, depth: float) -> np.ndarray:
        """World point [3] at pixel position (x, y) and camera depth z = `depth`."""
        ray = np.linalg.solve(self.K, np.array([x, y, 1.0]))
        cam = ray * depth
        R, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return R.T @ (cam - t)

    def scaled(self, max_side: int) -> "View":
        """The same camera for an image whose long side is at most `max_side` pixels."""
        f = min(1.0, max_side / max(self.width, self.height))
        w, h = max(1, round(self.width * f)), max(1, round(self.height * f))
        K = self.K.copy()
        K[0] *= w / self.width
        K[1] *= h / self.height
        return View(self.viewmat, K, w, h, self.name)


@dataclass
class Geometry:
    """Expected camera depth [H, W] (0 where empty) and accumulated opacity [H, W] of a view."""

    depth: np.ndarray
    alpha: np.ndarray


def render_geometry(params: dict, view: View, colors: torch.Tensor | None = None) -> tuple[Geometry, np.ndarray | None]:
    """(Geometry, rendered channels [H, W, D] or None) of a view; `colors` [N, D] optional."""
    dev = params["means"].device
    ch = colors if colors is not None else params["means"].new_zeros(params["means"].shape[0], 1)
    with torch.no_grad():
        out = render(params["means"], params["quats"], params["scales"], params["opacities"], ch,
                     torch.as_tensor(view.viewmat[None], dtype=torch.float32, device=dev),
                     torch.as_tensor(view.K[None], dtype=torch.float32, device=dev), view.width, view.height)
    geo = Geometry(out.depths[0, ..., 0].cpu().numpy(), out.alphas[0, ..., 0].cpu().numpy())
    return geo, (out.colors[0].cpu().numpy() if colors is not None else None)


def visible(view: View, geo: Geometry, points: np.ndarray, tolerance: float = DEPTH_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """(visible bool [P], pixels [P, 2]) of world points [P, 3] in a view (module doc)."""
    uv, z = view.project(points)
    inside = (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < view.width) & (uv[:, 1] >= 0) & (uv[:, 1] < view.height)
    ok = np.zeros(len(z), bool)
    if inside.any():
        col = np.clip(uv[inside, 0].astype(np.int64), 0, view.width - 1)
        row = np.clip(uv[inside, 1].astype(np.int64), 0, view.height - 1)
        d = geo.depth[row, col]
        a = geo.alpha[row, col]
        ok[inside] = (a >= MIN_ALPHA) & (np.abs(z[inside] - d) <= tolerance * z[inside])
    return ok, uv


@dataclass
class DecoderRun:
    """A run's splats, cameras, training views and imitation field, with per-view render caches."""

    run_dir: Path
    info: dict
    splats: Splats
    params: dict
    cameras: Cameras
    imitation: Imitation | None
    device: torch.device
    _geometry: dict = field(default_factory=dict, repr=False)
    _embedding: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, run_dir: Path, device: str = "auto", imitation: Imitation | None = None, with_imitation: bool = True) -> "DecoderRun":
        """Reads RUN (run.json, the splats, the scene's cameras, imitation.npz unless
        `with_imitation` is False: then only geometry is available, as for exact-mask sources)."""
        info = read_run_info(run_dir)
        splats_path = Path(info["splats"])
        if not splats_path.is_file():
            raise FileNotFoundError(f"the run's splats file {splats_path} is missing")
        splats = splats_in_world(splats_path, info.get("splats_transform"))  # the cameras' frame
        if imitation is None and with_imitation:
            imitation = load_imitation(run_dir, len(splats))
        dev = resolve_device(device)
        if imitation is not None:
            imitation.model.to(dev)
            imitation.decoder.sam.to(dev)
        params = {k: v.to(dev) for k, v in splats.torch_params().items()}
        return cls(Path(run_dir), info, splats, params, load_scene(info["scene"]).cameras, imitation, dev)

    @property
    def num_gaussians(self) -> int:
        return len(self.splats)

    @property
    def train_views(self) -> list[int]:
        return [self.cameras.index_of(n) for n in self.info.get("train_views") or self.cameras.names]

    def view(self, stem: str) -> View:
        return View.of(self.cameras, self.cameras.index_of(stem))

    def geometry(self, view: View) -> Geometry:
        key = view.name
        if key and key in self._geometry:
            return self._geometry[key]
        geo, _ = render_geometry(self.params, view)
        if key:
            self._geometry[key] = geo
        return geo

    def embedding(self, view: View) -> torch.Tensor:
        """SAM embedding [1, C, g, g] rendered for a view (cached for named views)."""
        if self.imitation is None:
            raise RunError(f"{self.run_dir} was loaded without its imitation field")
        key = view.name
        if key and key in self._embedding:
            return self._embedding[key]
        emb = self.imitation.render_embedding(self.params, view.viewmat, view.K, view.width, view.height)
        if key:
            self._embedding[key] = emb
        return emb

    def decode(self, view: View, points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None = None,
               multimask: bool = True) -> DecodedMasks:
        return self.imitation.decoder.predict(self.embedding(view), view.width, view.height, points, labels, box, multimask)
