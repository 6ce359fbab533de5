"""Server-side renders for a viewer camera with `splatseg.render.render`: the selection overlay or
the feature map in PCA colours, as uint8 images [h, w, 3] for `scene.set_background_image`.

- "selection": channels [N, 4] = (DC colour rgb, selected 0/1). The rendered mask channel m in
  [0, 1] (the selection's 2D coverage as the renderer composites it) blends the image between
  the selected and dimmed colours of the client-side highlight (`display.highlight_colors`).
- "features": per-Gaussian features [N, D] projected on their first three principal axes,
  normalised to [0, 1] (1st..99th percentile), rendered as 3 channels. Projection is linear, so
  this is the PCA of the rendered feature map (up to the alpha-weighted mean).
Images are rendered at the viewer camera's aspect with the longest side `max_side` pixels and
composited over a white background.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from splatseg.render import render
from splatseg.viewer.camera import viewer_matrices
from splatseg.viewer.display import highlight_colors
from splatseg.viewer.picking import NEAR_PLANE, PickingTensors

OverlayMode = Literal["off", "selection", "features"]
OVERLAY_MODES: tuple[str, ...] = ("off", "selection", "features")

PCA_SAMPLE = 50_000
"""Gaussians sampled to fit the principal axes of the features."""


def pca_colors(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """float32 [N, 3] in [0, 1]: features [N, D] on their first three principal axes."""
    f = np.asarray(features, np.float32)
    n, d = f.shape
    rng = np.random.default_rng(seed)
    sample = f[rng.choice(n, PCA_SAMPLE, replace=False)] if n > PCA_SAMPLE else f
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    axes = np.zeros((3, d), np.float32)
    axes[: min(3, vt.shape[0])] = vt[:3]
    proj = (f - mean) @ axes.T  # [N, 3]
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    return np.clip((proj - lo) / np.maximum(hi - lo, 1e-8), 0.0, 1.0).astype(np.float32)


class OverlayRenderer:
    """Renders overlay images for arbitrary viewer cameras (see module doc)."""

    def __init__(self, tensors: PickingTensors, base_rgb: np.ndarray, max_side: int = 320):
        self.tensors = tensors
        self.max_side = int(max_side)
        self.rgb = torch.from_numpy(np.ascontiguousarray(base_rgb, np.float32))  # [N, 3] in [0, 1]
        self._pca: torch.Tensor | None = None

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """Render size (w, h): the canvas aspect with the longest side `max_side`."""
        s = self.max_side / max(width, height, 1)
        return max(1, round(width * s)), max(1, round(height * s))

    def render(self, mode: OverlayMode, wxyz, position, fov_y: float, width: int, height: int, mask: np.ndarray | None) -> np.ndarray:
        """uint8 [h, w, 3] image of `mode` for a viser camera (wxyz, position, vertical fov,
        canvas size in pixels) and the current selection mask [N] bool (or None)."""
        w, h = self.size_for(width, height)
        viewmat, K = viewer_matrices(np.asarray(wxyz), np.asarray(position), fov_y, w, h)
        t = self.tensors
        if mode == "selection":
            m = torch.zeros(t.means.shape[0], 1) if mask is None else torch.from_numpy(mask.astype(np.float32))[:, None]
            colors = torch.cat([self.rgb, m], dim=1)
        elif mode == "features":
            if self._pca is None:
                self._pca = torch.from_numpy(pca_colors(t.features.numpy()))
            colors = self._pca
        else:
            raise ValueError(f"unknown overlay mode {mode!r} (choose from {OVERLAY_MODES[1:]})")
        with torch.no_grad():
            out = render(
                t.means, t.quats, t.scales, t.opacities, colors,
                torch.from_numpy(viewmat[None]).float(), torch.from_numpy(K[None]).float(), w, h, near_plane=NEAR_PLANE,
            )
        img = out.colors[0].numpy()  # [h, w, C]
        alpha = out.alphas[0].numpy()  # [h, w, 1]
        rgb = img[..., :3] + (1.0 - alpha)  # over white
        if mode == "selection" and mask is not None:
            cover = np.clip(img[..., 3:4], 0.0, 1.0)
            selected, dimmed = highlight_colors(rgb)
            rgb = cover * selected + (1.0 - cover) * dimmed
        return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
