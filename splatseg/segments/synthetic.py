"""A small analytic test scene for the segment sources: boxes on a textured ground plane, ray-cast
with numpy (no splats, no weights), with exact ground-truth object and part ids.

World frame: z up, units metres. Camera: OpenCV axes (x right, y down, z forward); depth = camera-z.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from splatseg.segments.geometry import Geometry


@dataclass
class SyntheticView:
    """One rendered view.

    Attributes:
        rgb: uint8 [H, W, 3].
        geometry: depth (camera z, metres), alpha (1 on surfaces, 0 on empty sky) and K.
        object_ids: int64 [H, W]; 0 = ground, 1.. = boxes, -1 = empty.
        part_ids: int64 [H, W]; 0 / 1 = the two differently coloured halves of box 1, -1 elsewhere.
    """

    rgb: np.ndarray
    geometry: Geometry
    object_ids: np.ndarray
    part_ids: np.ndarray


# (centre x, centre y, size x, size y, height, yaw degrees, colour of half x<0, colour of half x>=0)
_BOXES = (
    (-0.55, 0.25, 0.9, 0.5, 0.6, 20.0, (0.80, 0.22, 0.18), (0.20, 0.30, 0.80)),
    (0.75, -0.35, 0.5, 0.5, 0.45, -15.0, (0.25, 0.65, 0.30), (0.25, 0.65, 0.30)),
)


def render_boxes_scene(seed: int = 0, width: int = 160, height: int = 120, fov_deg: float = 60.0,
                       eye=(0.3, -3.2, 2.1), target=(0.0, 0.1, 0.2), ground_half_size: float = 2.0) -> SyntheticView:
    """Two boxes of different colours and depths on a tilted (as seen) textured ground square; box 1
    has two differently coloured halves. `seed` drives the ground texture and pixel noise."""
    rng = np.random.default_rng(seed)
    eye = np.asarray(eye, np.float64)
    fwd = np.asarray(target, np.float64) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=1)  # camera -> world rotation (columns = camera axes)
    f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)
    u = np.arange(width) + 0.5
    v = np.arange(height) + 0.5
    dc = np.stack(np.broadcast_arrays((u[None, :] - K[0, 2]) / f, (v[:, None] - K[1, 2]) / f, np.ones((height, width))), -1)
    dw = dc @ R.T  # [H, W, 3]; camera z of eye + t * dw is t

    t_best = np.full((height, width), np.inf)
    obj = np.full((height, width), -1, np.int64)
    part = np.full((height, width), -1, np.int64)
    base = np.zeros((height, width, 3))
    normal = np.zeros((height, width, 3))

    # Ground square z = 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -eye[2] / dw[..., 2]
    P = eye + t[..., None] * dw
    hit = (t > 0) & (np.abs(P[..., 0]) <= ground_half_size) & (np.abs(P[..., 1]) <= ground_half_size)
    tex = _smooth_noise(rng, 64, 4.0)
    gi = np.clip(((P[..., 0] + ground_half_size) / (2 * ground_half_size) * 63).astype(int), 0, 63)
    gj = np.clip(((P[..., 1] + ground_half_size) / (2 * ground_half_size) * 63).astype(int), 0, 63)
    ground_col = 0.55 + 0.12 * tex[np.where(hit, gj, 0), np.where(hit, gi, 0)]
    t_best[hit] = t[hit]
    obj[hit] = 0
    base[hit] = np.stack([ground_col, ground_col * 0.97, ground_col * 0.9], -1)[hit]
    normal[hit] = (0.0, 0.0, 1.0)

    for k, (cx, cy, sx, sy, h, yaw, col0, col1) in enumerate(_BOXES, start=1):
        c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
        Rb = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])  # box -> world
        o = (eye - [cx, cy, h / 2]) @ Rb  # ray origin in the box frame
        d = dw @ Rb
        half = np.array([sx / 2, sy / 2, h / 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - o) / d
            t2 = (half - o) / d
        tmin = np.minimum(t1, t2)
        tmax = np.maximum(t1, t2)
        t_in = tmin.max(-1)
        t_out = tmax.min(-1)
        hitb = (t_in <= t_out) & (t_in > 0) & (t_in < t_best)
        axis = tmin.argmax(-1)
        n_local = np.zeros((height, width, 3))
        np.put_along_axis(n_local, axis[..., None], -np.sign(np.take_along_axis(d, axis[..., None], -1)), -1)
        x_local = o[0] + t_in * d[..., 0]
        t_best[hitb] = t_in[hitb]
        obj[hitb] = k
        half_id = (x_local >= 0).astype(np.int64)
        col = np.where(half_id[..., None] == 1, np.asarray(col1), np.asarray(col0))
        base[hitb] = col[hitb]
        normal[hitb] = (n_local @ Rb.T)[hitb]
        part[hitb] = half_id[hitb] if k == 1 else -1

    light = np.array([0.4, -0.5, 0.77])
    light /= np.linalg.norm(light)
    shade = 0.7 + 0.3 * np.clip(normal @ light, 0, 1)
    rgb = base * shade[..., None] + rng.normal(0.0, 0.015, base.shape)
    sky = obj < 0
    rgb[sky] = (0.75, 0.85, 0.95)
    rgb = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    depth = np.where(sky, 0.0, t_best).astype(np.float32)
    alpha = (~sky).astype(np.float32)
    return SyntheticView(rgb=rgb, geometry=Geometry(depth=depth, alpha=alpha, K=K), object_ids=obj, part_ids=part)


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """[n, n] smooth noise with unit standard deviation."""
    a = ndi.gaussian_filter(rng.normal(size=(n, n)), sigma, mode="wrap")
    return a / max(a.std(), 1e-12)
