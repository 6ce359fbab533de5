"""The viewer's SAM-decoder mode: clicks prompt SAM's mask decoder on the embedding rendered for the
tab's own camera, and the 2D mask is shown live as a server-rendered image; "Lift to 3D" turns the
same prompts into a selection of Gaussians (`splatseg.imitation.aggregate`).

A click (world ray) becomes a 3D prompt point: the picking ray's rendered depth along the ray
(`picking.ray_render`) gives the surface point origin + depth * direction. Every frame renders, for
the tab's camera at the overlay size, the splats' colour and depth (one render), the imitation
field's SAM embedding, projects the prompt points with the depth test (`imitation.views.visible`:
points behind a surface in this camera are left out), runs the decoder (multimask, the chosen or
the best-scoring mask) and tints the mask over the render; prompt points are drawn as dots
(green positive, red negative). Moving the camera re-answers the same 3D prompts from there.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from splatseg.imitation.aggregate import Aggregation, LiftViews, PointPrompt, aggregate, prompts_in_view
from splatseg.imitation.refine import refine_scores
from splatseg.imitation.views import DecoderRun, View, render_geometry
from splatseg.query import QueryError, Selection
from splatseg.viewer.camera import viewer_matrices
from splatseg.viewer.display import highlight_colors
from splatseg.viewer.picking import PickingTensors, ray_render
from splatseg.viewer.session import MIN_HIT_ALPHA

MASK_CHOICES: tuple[str, ...] = ("best", "0", "1", "2")
"""The decoder mask shown: the highest-scoring one, or one of SAM's three by index."""

DOT_RADIUS = 3
"""Radius in pixels of the prompt markers drawn on the frame."""


@dataclass
class DecoderFrame:
    """One rendered frame: image uint8 [h, w, 3], mask bool [h, w] (None when no positive point is
    visible), SAM's scores [3] (or None), the mask index shown, the camera and the time taken."""

    image: np.ndarray
    mask: np.ndarray | None
    scores: np.ndarray | None
    index: int | None
    view: View
    seconds: float


class DecoderTab:
    """One tab's decoder prompts (3D points) and their live 2D mask (module doc)."""

    def __init__(self, run: DecoderRun, picking: PickingTensors, lift_views: LiftViews, max_side: int = 320):
        self.run, self.picking, self.lift_views = run, picking, lift_views
        self.max_side = int(max_side)
        self.rgb = torch.from_numpy(np.ascontiguousarray(run.splats.base_rgb, np.float32)).to(run.device)
        self.points: list[PointPrompt] = []
        self.mask_choice = "best"
        self.lock = threading.RLock()
        self.last: DecoderFrame | None = None

    @property
    def mask_index(self) -> int | None:
        return None if self.mask_choice == "best" else int(self.mask_choice)

    def set_mask_choice(self, choice: str) -> None:
        if choice not in MASK_CHOICES:
            raise QueryError(f"mask choice must be one of {MASK_CHOICES}, got {choice!r}")
        with self.lock:
            self.mask_choice = choice

    def click(self, origin, direction, focal_px: float, positive: bool = True) -> PointPrompt:
        """Adds the surface point under a world ray as a prompt; QueryError on empty space."""
        hit = ray_render(self.picking, origin, direction, focal_px)
        if hit.alpha < MIN_HIT_ALPHA:
            raise QueryError(f"nothing under the cursor (opacity {hit.alpha:.2f} along the ray): click on the scene")
        d = np.asarray(direction, np.float64)
        point = PointPrompt(np.asarray(origin, np.float64) + hit.depth * d / np.linalg.norm(d), positive)
        with self.lock:
            self.points.append(point)
        return point

    def clear(self) -> None:
        with self.lock:
            self.points = []
            self.last = None

    def view_for(self, wxyz, position, fov_y: float, width: int, height: int) -> View:
        s = self.max_side / max(width, height, 1)
        w, h = max(1, round(width * s)), max(1, round(height * s))
        viewmat, K = viewer_matrices(np.asarray(wxyz), np.asarray(position), fov_y, w, h)
        return View(viewmat, K, w, h)

    def frame(self, wxyz, position, fov_y: float, width: int, height: int) -> DecoderFrame:
        """The live frame for a viser camera (wxyz, position, vertical fov, canvas size)."""
        t0 = time.perf_counter()
        view = self.view_for(wxyz, position, fov_y, width, height)
        with self.lock:
            points, index = list(self.points), self.mask_index
        geo, colour = render_geometry(self.run.params, view, self.rgb)
        rgb = colour + (1.0 - geo.alpha[..., None])  # over white
        xy, labels = prompts_in_view(view, geo, points)
        mask = scores = chosen = None
        if (labels == 1).any():
            out = self.run.decode(view, xy, labels)
            chosen = out.choose(index)
            mask, scores = out.masks[chosen], out.scores
            selected, dimmed = highlight_colors(np.clip(rgb, 0.0, 1.0))
            rgb = np.where(mask[..., None], selected, dimmed)
        image = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        draw_dots(image, xy, labels)
        result = DecoderFrame(image, mask, scores, chosen, view, time.perf_counter() - t0)
        with self.lock:
            self.last = result
        return result

    def lift(self, threshold: float = 0.5, refine: bool = False) -> tuple[Selection, Aggregation]:
        """The 3D selection of the current prompts, seen from the last frame's camera."""
        with self.lock:
            points, index, last = list(self.points), self.mask_index, self.last
        if not any(p.positive for p in points):
            raise QueryError("add a positive decoder click first")
        if last is None:
            raise QueryError("no decoder frame yet: move the camera or click once more")
        agg = aggregate(self.run, points=points, source_view=last.view, mask_index=index, threshold=threshold,
                        lift_views=self.lift_views)
        scores = agg.scores
        if refine:
            scores = refine_scores(scores, self.lift_views, agg.view_masks, self.run.splats.base_rgb)
        return Selection(mask=scores > threshold, scores=scores.astype(np.float32)), agg

    def describe(self) -> str:
        with self.lock:
            pos = sum(p.positive for p in self.points)
            neg = len(self.points) - pos
            last = self.last
        text = f"Decoder: {pos} positive, {neg} negative point(s)"
        if last is not None and last.scores is not None:
            text += f"; SAM scores {', '.join(f'{s:.2f}' for s in last.scores)} (showing mask {last.index}); {1e3 * last.seconds:.0f} ms"
        elif pos:
            text += "; no positive point is visible from here"
        return text


def draw_dots(image: np.ndarray, xy: np.ndarray, labels: np.ndarray) -> None:
    """Paints prompt markers in place: green for positive, red for negative, white rim."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[-DOT_RADIUS - 1 : DOT_RADIUS + 2, -DOT_RADIUS - 1 : DOT_RADIUS + 2]
    disc = xx * xx + yy * yy
    for (x, y), lab in zip(xy, labels):
        cx, cy = int(x), int(y)
        for r2, colour in (((DOT_RADIUS + 1) ** 2, (255, 255, 255)), (DOT_RADIUS**2, (40, 200, 60) if lab == 1 else (230, 40, 40))):
            ys, xs = cy + yy[disc <= r2], cx + xx[disc <= r2]
            ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            image[ys[ok], xs[ok]] = colour
