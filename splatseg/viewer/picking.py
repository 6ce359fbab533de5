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
members of a few chunks, and a render of the few hundred Gaussians near the ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from splatseg.render import render

NEAR_PLANE = 0.01
"""Near plane of the picking camera (scene units), as the renderer's default."""

CULL_SIGMAS = 4.0
"""Gaussians further than this many standard deviations from the ray are not rendered."""

CHUNK = 1024
"""Gaussians per culling chunk (consecutive in Morton order)."""


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
    depend on torch's thread pool): means_np [N, 3] (sharing memory with `means`), max_scale [N]
    (largest of the three scales), order [N] (Gaussian indices in Morton order, chunk k being
    order[k * CHUNK : (k + 1) * CHUNK]) and per chunk: chunk_centre [C, 3], chunk_radius [C],
    chunk_scale [C] (largest max_scale in the chunk).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    features: Tensor
    means_np: np.ndarray
    max_scale: np.ndarray
    order: np.ndarray
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
        sorted_means = means_np[order].astype(np.float64)
        centre = np.add.reduceat(sorted_means, starts, axis=0) / counts[:, None] if len(order) else np.zeros((0, 3))
        dist = np.linalg.norm(sorted_means - np.repeat(centre, counts, axis=0), axis=1)
        radius = np.maximum.reduceat(dist, starts) if len(order) else np.zeros(0)
        scale = np.maximum.reduceat(max_scale[order], starts) if len(order) else np.zeros(0)
        return cls(means_t, t(quats), scales_t, t(opacities).reshape(-1), t(features), means_np, max_scale,
                   order, centre, radius * (1 + 1e-6) + 1e-9, scale)


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
    members = tensors.order[np.repeat(keep_chunk, CHUNK)[: len(tensors.order)]]
    # exact per-Gaussian test on the members of the surviving chunks
    v = tensors.means_np[members].astype(np.float64) - o  # [M, 3]
    t = v @ d
    dist2 = np.einsum("ij,ij->i", v, v)
    perp2 = np.maximum(dist2 - t * t, 0.0)
    tcl = np.maximum(t, NEAR_PLANE)
    reach = _reach(tensors.max_scale[members], np.sqrt(dist2), tcl, f)
    return members[(t > NEAR_PLANE) & (perp2 <= reach * reach)]


def ray_render(tensors: PickingTensors, origin: np.ndarray, direction: np.ndarray, focal_px: float) -> RayHit:
    """Renders the features seen along a world ray by one pixel of focal length `focal_px`."""
    D = int(tensors.features.shape[1])
    idx = torch.from_numpy(near_ray(tensors, origin, direction, focal_px))
    if idx.numel() == 0:
        return RayHit(np.zeros(D, np.float32), 0.0, 0.0)
    viewmat, K = ray_camera(origin, direction, focal_px)
    with torch.no_grad():
        out = render(
            tensors.means[idx], tensors.quats[idx], tensors.scales[idx], tensors.opacities[idx], tensors.features[idx],
            torch.from_numpy(viewmat[None]).float(), torch.from_numpy(K[None]).float(), 1, 1, near_plane=NEAR_PLANE,
        )
    return RayHit(
        feature=out.colors[0, 0, 0].cpu().numpy().astype(np.float32),
        alpha=float(out.alphas[0, 0, 0, 0]),
        depth=float(out.depths[0, 0, 0, 0]),
    )


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
    idx = torch.from_numpy(idx_np)
    values = torch.from_numpy(np.ascontiguousarray(lifted[:, idx_np].T, dtype=np.float32) * (1.0 / 255.0))
    viewmat, K = ray_camera(origin, direction, focal_px)
    with torch.no_grad():
        out = render(tensors.means[idx], tensors.quats[idx], tensors.scales[idx], tensors.opacities[idx], values,
                     torch.from_numpy(viewmat[None]).float(), torch.from_numpy(K[None]).float(), 1, 1, near_plane=NEAR_PLANE)
    alpha = float(out.alphas[0, 0, 0, 0])
    if alpha < min_alpha:
        return None
    return np.clip(out.colors[0, 0, 0].cpu().numpy().astype(np.float32) / alpha, 0.0, 1.0)
