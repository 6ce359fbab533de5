"""Rendered depth as an RGB image for SAM (Segment-Any-RGBD's input), without matplotlib.

Segment-Any-RGBD (Cen et al., 2023) maps a depth map [H, W] to RGB [H, W, 3] through matplotlib's
'plasma' colour map and gives that image to SAM, so geometry rather than texture decides the
segments (its README shows `Depth_plasma.png` as SAM's input). Here:

    d = 1 / z  on the valid pixels (alpha >= `min_alpha`, finite z > 0),
    t = (d - min d) / (max d - min d)   in [0, 1]   (1 = nearest, 0 = farthest; one range per view),
    rgb = plasma(t)

Inverse depth is used because it is affine in the pixel coordinates on any plane (a table top is a
smooth ramp, not a curve bunched up at the far end) and gives near objects most of the colour range.
Invalid pixels (nothing rendered there) are black (0, 0, 0), a colour plasma never takes.
`PLASMA_ANCHORS` holds 9 samples of matplotlib's plasma (t = 0, 1/8, ..., 1; values to about 0.01),
linearly interpolated: hand-written because matplotlib is not a dependency and SAM only needs a
smooth, luminance-monotone map, not matplotlib's exact 256 entries.
"""

from __future__ import annotations

import numpy as np

from splatseg.segments.geometry import Geometry

PLASMA_ANCHORS = np.array([
    [0.050, 0.030, 0.528],
    [0.287, 0.010, 0.628],
    [0.494, 0.012, 0.658],
    [0.665, 0.139, 0.586],
    [0.798, 0.280, 0.470],
    [0.898, 0.411, 0.359],
    [0.973, 0.558, 0.251],
    [0.993, 0.726, 0.156],
    [0.940, 0.975, 0.131],
], np.float64)
"""matplotlib 'plasma' at t = 0, 0.125, ..., 1 (RGB in [0, 1])."""


def plasma(t: np.ndarray) -> np.ndarray:
    """float [...] in [0, 1] (clipped) -> uint8 [..., 3] RGB, piecewise linear through PLASMA_ANCHORS."""
    t = np.clip(np.asarray(t, np.float64), 0.0, 1.0)
    x = np.linspace(0.0, 1.0, len(PLASMA_ANCHORS))
    rgb = np.stack([np.interp(t, x, PLASMA_ANCHORS[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb * 255.0).astype(np.uint8)


def normalised_inverse_depth(geometry: Geometry, min_alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(t float32 [H, W] in [0, 1], valid bool [H, W]): the module docstring's t (0 where invalid)."""
    valid = geometry.valid(min_alpha)
    t = np.zeros(np.shape(geometry.depth), np.float32)
    if valid.any():
        inv = 1.0 / np.asarray(geometry.depth, np.float64)[valid]
        lo, hi = float(inv.min()), float(inv.max())
        t[valid] = (inv - lo) / (hi - lo) if hi > lo else 1.0
    return t, valid


def colorize_depth(geometry: Geometry, min_alpha: float = 0.5) -> np.ndarray:
    """uint8 [H, W, 3] RGB: plasma of the normalised inverse depth, black where nothing was rendered."""
    t, valid = normalised_inverse_depth(geometry, min_alpha)
    rgb = plasma(t)
    rgb[~valid] = 0
    return rgb
