"""Clicks -> rendered feature: the feature field seen by one pixel whose optical axis is a world ray.

A viewer click arrives as a world ray (origin [3], unit direction [3], world frame, scene units).
`ray_render` renders a 1x1 image with `splatseg.render.render` from a pinhole camera placed at the
ray origin and looking down the ray (OpenCV axes: z along the ray), with the focal length of the
user's camera (pixels, `focal_from_fov`) so the pixel's footprint matches the one clicked. The
channels rendered are the per-Gaussian features [N, D], so the result is the rendered feature F [D]
that `splatseg.query` expects (not normalised by alpha, like the stored feature maps).

Before rendering, Gaussians that cannot touch the pixel are dropped: those behind the near plane
and those whose centre lies further from the ray than 4 standard deviations (with the off-axis
stretch |v| / t of the projection, v = centre - origin, t = depth along the ray) plus two pixel
footprints (covering the renderer's 0.3 px^2 screen-space blur). Their alpha at the pixel is below
the rasteriser's own 1/255 cut (reached at ~3.3 sigma), so the result is unchanged. The test runs first on chunks of `CHUNK` Gaussians consecutive in Morton (Z-curve) order,
each bounded by a sphere (centre c, radius r, largest scale S in the chunk): a chunk is skipped when
even its nearest possible member could not reach the ray. A click then costs O(N / CHUNK) plus the
members of a few chunks, and the composite of the few hundred Gaussians near the ray.

The composite (`pixel_weights`) is the renderer's arithmetic for a 1x1 image written out for its
one pixel, in float64 NumPy: gsplat's EWA projection (`render.projection.project`: the Jacobian's
field-of-view clamp, eps2d = 0.3), alpha = min(0.999, o exp(-sigma)) kept when >= 1/255, front
to back by camera z, stopping before the first Gaussian that would take the transmittance to
<= 1e-4 (`render.torch_raster`). It skips the renderer's opacity-aware screen box and candidate
window: a pair with alpha >= 1/255 lies inside the alpha ellipse (so o >= 1/255 too), which the box
always holds (its extent sqrt(2 ln(255 o)) is clamped at 3.33 only for o > 1). A `render` call of a 1x1 image
costs a fixed ~3-6 ms of small torch operations (projection, pair selection, a sparse matrix);
this costs a few hundred microseconds for the same numbers (tests compare it with `render`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from splatseg.render.projection import ALPHA_MIN, FOV_CLAMP, quat_to_rotmat
from splatseg.render.torch_raster import ALPHA_MAX, T_MIN


NEAR_PLANE = 0.01
"""Near plane of the picking camera (scene units), as the renderer's default."""

EPS2D = 0.3
"""Screen-space blur added to the 2D covariance (pixels^2), as the renderer's default."""

CULL_SIGMAS = 4.0
"""Gaussians further than this many standard deviations from the ray are not rendered."""

CHUNK = 256
"""Gaussians per culling chunk (consecutive in Morton order). Measured once on a 3M-Gaussian
surface cloud like `scripts/bench_query.py`'s (`surface_field`), CHUNK changed between runs, other
jobs on the machine: near_ray 8.0 / 4.0 / 2.6 / 2.1 ms at 1024 / 512 / 256 / 128; smaller chunks
bound their members tighter, but the per-chunk pass grows as N / CHUNK."""

COMPOSITE_BATCH = 256
"""The pixel composite projects the Gaussians near the ray in depth-ordered batches of this many and
stops after the batch where the transmittance ends (what lies behind an opaque surface is never
projected; the result is the same as projecting all)."""


@dataclass
class RayHit:
    """What one pixel along a ray sees: feature [D] (alpha-weighted sum of Gaussian features),
    alpha (accumulated opacity in [0, 1]) and depth (expected distance along the ray, scene units;
    0 when nothing is hit)."""

    feature: np.ndarray
    alpha: float
    depth: float


@dataclass
class PickingTensors:
    """Activated geometry and features as float32 CPU tensors, prepared once per viewer.

    means [N, 3] world, quats [N, 4] w x y z unit, scales [N, 3] standard deviations (scene units),
    opacities [N] in (0, 1), features [N, D]. For the culling (NumPy, so a click's latency does not
    depend on torch's thread pool): means_np [N, 3] (sharing memory with `means`), order [N]
    (Gaussian indices in Morton order, chunk k being order[k * CHUNK : (k + 1) * CHUNK]),
    sorted_means [N, 3] and sorted_max_scale [N] (centres and largest of the three scales in Morton
    order, so a chunk's members are read from consecutive memory: gathering them through `order`
    instead costs a random access each, the larger part of a click at 1M Gaussians) and per chunk:
    chunk_centre [C, 3], chunk_radius [C], chunk_scale [C] (largest scale in the chunk).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    features: Tensor
    means_np: np.ndarray
    order: np.ndarray
    sorted_means: np.ndarray
    sorted_max_scale: np.ndarray
    chunk_centre: np.ndarray
    chunk_radius: np.ndarray
    chunk_scale: np.ndarray

    @classmethod
    def build(cls, means, quats, scales, opacities, features) -> "PickingTensors":
        def t(a) -> Tensor:
            a = a if isinstance(a, Tensor) else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            return a.detach().to("cpu", torch.float32).contiguous()

        means_t, scales_t = t(means), t(scales)
        means_np, max_scale = means_t.numpy(), scales_t.numpy().max(axis=1)
        order = morton_order(means_np)
        starts = np.arange(0, len(order), CHUNK)
        counts = np.diff(np.append(starts, len(order)))
        sorted_means, sorted_max_scale = means_np[order], max_scale[order]
        centre = np.add.reduceat(sorted_means.astype(np.float64), starts, axis=0) / counts[:, None] if len(order) else np.zeros((0, 3))
        dist = np.linalg.norm(sorted_means - np.repeat(centre, counts, axis=0), axis=1)
        radius = np.maximum.reduceat(dist, starts) if len(order) else np.zeros(0)
        scale = np.maximum.reduceat(sorted_max_scale, starts) if len(order) else np.zeros(0)
        return cls(means_t, t(quats), scales_t, t(opacities).reshape(-1), t(features), means_np,
                   order, sorted_means, sorted_max_scale, centre, radius * (1 + 1e-6) + 1e-9, scale)


def morton_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Indices [N] sorting points [N, 3] along a Z-order curve over their bounding box."""
    if len(points) == 0:
        return np.zeros(0, np.int64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    q = ((points - lo) / np.maximum(hi - lo, 1e-12) * ((1 << bits) - 1)).astype(np.uint64)
    code = np.zeros(len(points), np.uint64)
    for b in range(bits):
        for axis in range(3):
            code |= ((q[:, axis] >> np.uint64(b)) & np.uint64(1)) << np.uint64(3 * b + axis)
    return np.argsort(code, kind="stable")


def focal_from_fov(fov_y: float, image_height: float) -> float:
    """Focal length in pixels of a pinhole camera with vertical field of view `fov_y` (radians)
    over `image_height` pixels."""
    if not (0.0 < fov_y < math.pi) or image_height <= 0:
        raise ValueError(f"need 0 < fov_y < pi and a positive image height, got {fov_y}, {image_height}")
    return 0.5 * float(image_height) / math.tan(0.5 * float(fov_y))


def ray_camera(origin: np.ndarray, direction: np.ndarray, focal_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(viewmat [4, 4] world -> camera, K [3, 3]) of a 1x1-pixel OpenCV camera at `origin` whose
    optical axis (+z) is `direction`; the pixel centre (0.5, 0.5) lies on the axis."""
    o = np.asarray(origin, np.float64).reshape(3)
    z = np.asarray(direction, np.float64).reshape(3)
    norm = np.linalg.norm(z)
    if not (np.isfinite(norm) and norm > 0 and np.all(np.isfinite(o))):
        raise ValueError(f"ray must have a finite origin and a non-zero direction, got {o}, {z}")
    z = z / norm
    helper = np.zeros(3)
    helper[np.argmin(np.abs(z))] = 1.0
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # right-handed: x cross y = z
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ o
    K = np.array([[focal_px, 0.0, 0.5], [0.0, focal_px, 0.5], [0.0, 0.0, 1.0]])
    return viewmat, K


def _reach(scale, dist, t, focal_px: float):
    """Largest distance from the ray at which a Gaussian of std `scale`, centre distance `dist` from
    the origin and depth `t` along the ray can still touch the pixel: 4 sigma stretched by the
    projection (|v| / t) plus two pixel footprints."""
    return CULL_SIGMAS * scale * dist / t + (2.0 / focal_px) * t


def chunk_positions(chunks: np.ndarray, num_gaussians: int) -> np.ndarray:
    """Positions [M] in Morton order (indices into `order`, `sorted_means`) of the members of the
    given chunks (ascending chunk ids [k]; chunk c holds positions c * CHUNK .. (c + 1) * CHUNK - 1),
    without touching the other N - M entries."""
    pos = (np.asarray(chunks, np.int64)[:, None] * CHUNK + np.arange(CHUNK)).ravel()
    return pos[pos < num_gaussians]


@dataclass
class PixelWeights:
    """The picking pixel's blend: gaussians [n] int64 (indices into the picking tensors, front to
    back) with weights [n] float64 (alpha x transmittance, as the renderer's), accumulated alpha and
    expected camera z (0 when nothing is hit). A value v [N, K] renders as weights @ v[gaussians]."""

    gaussians: np.ndarray
    weights: np.ndarray
    alpha: float
    depth: float

    def composite(self, values: np.ndarray) -> np.ndarray:
        """[K] float64: per-Gaussian `values` [n, K] (rows of `gaussians`, in their order) blended."""
        return self.weights @ np.asarray(values, np.float64)


def pixel_weights(tensors: PickingTensors, idx: np.ndarray, viewmat: np.ndarray, focal_px: float) -> PixelWeights:
    """The blend that `render` makes for the 1x1 image of `ray_camera(..., focal_px)` (world ->
    camera `viewmat` [4, 4], principal point at the pixel centre) over the Gaussians `idx` [M]
    (module doc). Only the Gaussians in front of the point where the transmittance ends are
    projected, so the values to blend are gathered for those alone."""
    f = float(focal_px)
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    pc = tensors.means_np[idx].astype(np.float64) @ R.T + t  # [M, 3] camera frame
    order = np.argsort(pc[:, 2], kind="stable")  # front to back; ties by position, as the renderer
    kept, kept_w, log_t, wz = [], [], 0.0, 0.0
    for b0 in range(0, len(order), COMPOSITE_BATCH):
        rows = order[b0 : b0 + COMPOSITE_BATCH]
        alpha = _pixel_alphas(tensors, idx[rows], pc[rows], R, f)
        live = np.flatnonzero(alpha >= ALPHA_MIN)  # the others leave the transmittance unchanged
        alpha, rows = alpha[live], rows[live]
        log1m = np.log1p(-alpha)
        incl = log_t + np.cumsum(log1m)
        n = int(np.searchsorted(-incl, -math.log(T_MIN), side="left"))  # keep while incl > log(T_MIN)
        weights = alpha[:n] * np.exp(incl[:n] - log1m[:n])
        kept.append(idx[rows[:n]])
        kept_w.append(weights)
        wz += float(weights @ pc[rows[:n], 2])
        if n:
            log_t = float(incl[n - 1])
        if n < len(live):  # the pixel stopped inside this batch
            break
    acc = float(-np.expm1(log_t))
    gaussians = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    weights = np.concatenate(kept_w) if kept_w else np.zeros(0)
    return PixelWeights(gaussians.astype(np.int64, copy=False), weights, acc, (wz / acc) if acc > 0 else 0.0)


def _pixel_alphas(tensors: PickingTensors, idx: np.ndarray, pc: np.ndarray, R: np.ndarray, f: float) -> np.ndarray:
    """alpha [M] at the picking pixel of Gaussians `idx` [M] with camera-frame centres `pc` [M, 3]
    (camera rotation R [3, 3], focal `f` px); 0 where the renderer culls or skips the pair."""
    x, y, z = pc.T
    in_range = z >= NEAR_PLANE
    z = np.where(in_range, z, 1.0)
    lim = 0.5 / f + FOV_CLAMP * (0.5 / f)  # (width - cx) / fx + clamp; cx = width / 2 = 0.5
    tx, ty = z * np.clip(x / z, -lim, lim), z * np.clip(y / z, -lim, lim)
    J = np.zeros((len(z), 2, 3))
    J[:, 0, 0] = J[:, 1, 1] = f / z
    J[:, 0, 2], J[:, 1, 2] = -f * tx / (z * z), -f * ty / (z * z)
    M = quat_to_rotmat(tensors.quats[idx]).double().numpy() * tensors.scales[idx].numpy().astype(np.float64)[:, None, :]  # R S
    JWM = np.einsum("nij,jk,nkl->nil", J, R, M)
    cov = JWM @ JWM.transpose(0, 2, 1)
    a, b, c = cov[:, 0, 0] + EPS2D, 0.5 * (cov[:, 0, 1] + cov[:, 1, 0]), cov[:, 1, 1] + EPS2D
    det = a * c - b * b
    op = tensors.opacities[idx].numpy().astype(np.float64)
    dx, dy = f * x / z, f * y / z  # mean - pixel centre (pixels)
    visible = in_range & (det > 0)  # the renderer's box and opacity tests hold wherever alpha >= 1/255 (module doc)
    det = np.where(visible, det, 1.0)
    sigma = (0.5 * (c * dx * dx + a * dy * dy) - b * dx * dy) / det  # conic = [[c, -b], [-b, a]] / det
    alpha = np.minimum(op * np.exp(-np.maximum(sigma, 0.0)), ALPHA_MAX)
    return np.where(visible & (sigma >= 0) & (alpha >= ALPHA_MIN), alpha, 0.0)


def near_ray(tensors: PickingTensors, origin: np.ndarray, direction: np.ndarray, focal_px: float) -> np.ndarray:
    """Indices [M] int64 of the Gaussians that can contribute to the 1x1 picking pixel (module doc)."""
    o = np.asarray(origin, np.float64).reshape(3)
    d = np.asarray(direction, np.float64).reshape(3)
    d = d / np.linalg.norm(d)
    f = float(focal_px)
    # chunks: every member has depth in [tc - r, tc + r], distance to the ray >= perp - r and
    # distance to the origin <= |vc| + r; keep a chunk unless that bound already fails
    vc = tensors.chunk_centre - o  # [C, 3]
    tc = vc @ d
    dc = np.linalg.norm(vc, axis=1)
    perp_c = np.sqrt(np.maximum(dc * dc - tc * tc, 0.0))
    r = tensors.chunk_radius
    t_lo = tc - r
    straddles = t_lo <= NEAR_PLANE  # members may sit anywhere around the camera: test them all
    bound = _reach(tensors.chunk_scale, dc + r, np.maximum(t_lo, NEAR_PLANE), f) + (2.0 / f) * 2 * r
    keep_chunk = (tc + r > NEAR_PLANE) & (straddles | (perp_c - r <= bound))
    pos = chunk_positions(np.flatnonzero(keep_chunk), len(tensors.order))
    # exact per-Gaussian test on the members of the surviving chunks (consecutive memory per chunk)
    v = tensors.sorted_means[pos].astype(np.float64) - o  # [M, 3]
    t = v @ d
    dist2 = np.einsum("ij,ij->i", v, v)
    perp2 = np.maximum(dist2 - t * t, 0.0)
    tcl = np.maximum(t, NEAR_PLANE)
    reach = _reach(tensors.sorted_max_scale[pos], np.sqrt(dist2), tcl, f)
    return tensors.order[pos[(t > NEAR_PLANE) & (perp2 <= reach * reach)]]


def ray_render(tensors: PickingTensors, origin: np.ndarray, direction: np.ndarray, focal_px: float) -> RayHit:
    """Renders the features seen along a world ray by one pixel of focal length `focal_px`."""
    D = int(tensors.features.shape[1])
    idx = near_ray(tensors, origin, direction, focal_px)
    if idx.size == 0:
        return RayHit(np.zeros(D, np.float32), 0.0, 0.0)
    viewmat, _ = ray_camera(origin, direction, focal_px)
    pw = pixel_weights(tensors, idx, viewmat, focal_px)
    return RayHit(feature=pw.composite(tensors.features.numpy()[pw.gaussians]).astype(np.float32), alpha=pw.alpha, depth=pw.depth)


def ray_feature(means, quats, scales, opacities, features, origin, direction, focal_px: float) -> np.ndarray:
    """Rendered feature [D] seen along a world ray (origin [3], direction [3]) by a pixel of focal
    length `focal_px`. Inputs are activated tensors or arrays: means [N, 3], quats [N, 4] (w x y z),
    scales [N, 3], opacities [N], features [N, D]. For repeated calls build `PickingTensors` once
    and call `ray_render`."""
    return ray_render(PickingTensors.build(means, quats, scales, opacities, features), origin, direction, focal_px).feature


def scores_along_ray(tensors: PickingTensors, lifted: np.ndarray, origin: np.ndarray, direction: np.ndarray, focal_px: float,
                     min_alpha: float = 0.05) -> np.ndarray | None:
    """The 3D scores [K] in [0, 1] of the surface a world ray's pixel sees: the lifted scores
    (`lifted` [K, N] uint8, /255) of the Gaussians along the ray, alpha-composited and divided by
    the accumulated alpha. None when the pixel sees less than `min_alpha` of anything."""
    idx_np = near_ray(tensors, origin, direction, focal_px)
    if idx_np.size == 0:
        return None
    viewmat, _ = ray_camera(origin, direction, focal_px)
    pw = pixel_weights(tensors, idx_np, viewmat, focal_px)
    if pw.alpha < min_alpha:
        return None
    return np.clip((pw.composite(lifted[:, pw.gaussians].T) / 255.0 / pw.alpha).astype(np.float32), 0.0, 1.0)
