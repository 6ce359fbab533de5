"""Initial Gaussians for reconstruction: from sparse points, or random points in the view volume.

Frames and units: points are world-frame [P, 3] in scene units; cameras follow `types.Cameras`
(OpenCV, world -> camera viewmats, intrinsics in pixels). Images are float32 [H, W, 3] in [0, 1]
at the cameras' sizes. The result is a `Splats` with raw values (log-scales, opacity logits,
unnormalised quaternions, SH coefficients with `sh0 = (rgb - 0.5) / SH_C0` and zero `shN`).

Random initialisation ("the region seen by most cameras"):
- the common view volume: uniform samples in a box around the cameras' focus point (the
  least-squares point nearest to all optical axes) kept when at least `min_views` of the cameras
  see them;
- a far shell: for `far_fraction` of the points, a random pixel of a random camera pushed to a
  depth between the far side of the common volume and twice the focus distance, so that a real
  background has Gaussians to grow from.
Colours are the mean of the image pixels each point projects to (where visible).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from splatseg.types import SH_C0, Cameras, Splats, num_sh_bases

_NEAR = 1e-3  # camera-frame z below which a point counts as behind the camera


def scene_extent(cameras: Cameras) -> float:
    """1.1 x the largest distance of a camera centre from their mean (reference 3DGS); at least
    a small positive value so single-camera scenes still get a usable scale."""
    c = cameras.centers
    radius = float(np.linalg.norm(c - c.mean(axis=0), axis=1).max()) if len(c) else 0.0
    return 1.1 * radius if radius > 1e-6 else 1.0


def project(points: np.ndarray, cameras: Cameras) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points [P,3] -> pixel coords uv [C,P,2], camera z [C,P], visibility mask [C,P]
    (in front of the camera and inside the image)."""
    R = cameras.viewmats[:, :3, :3]  # [C,3,3]
    t = cameras.viewmats[:, :3, 3]  # [C,3]
    pc = np.einsum("cij,pj->cpi", R, points) + t[:, None, :]  # [C,P,3]
    z = pc[..., 2]
    zs = np.where(z > _NEAR, z, np.inf)
    K = cameras.Ks
    u = K[:, 0, 0, None] * pc[..., 0] / zs + K[:, 0, 2, None]
    v = K[:, 1, 1, None] * pc[..., 1] / zs + K[:, 1, 2, None]
    W = cameras.widths[:, None]
    H = cameras.heights[:, None]
    vis = (z > _NEAR) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    return np.stack([u, v], axis=-1), z, vis


def focus_point(cameras: Cameras) -> np.ndarray:
    """World point [3] closest (least squares) to all optical axes; for nearly parallel axes
    (forward-facing captures) the camera centres' mean moved forward by the scene extent."""
    c2w = cameras.camtoworlds
    o = c2w[:, :3, 3]
    d = c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=1, keepdims=True)  # OpenCV +z forward
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for oi, di in zip(o, d):
        P = np.eye(3) - np.outer(di, di)
        A += P
        b += P @ oi
    fallback = o.mean(axis=0) + d.mean(axis=0) * scene_extent(cameras)
    if len(o) < 2 or np.linalg.cond(A) > 1e6:
        return fallback
    p = np.linalg.solve(A, b)
    in_front = np.einsum("ci,ci->c", p[None] - o, d) > 0
    return p if in_front.mean() >= 0.5 else fallback


def random_points(
    cameras: Cameras,
    num: int,
    *,
    far_fraction: float,
    min_views: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """`num` world points [num, 3]: (1 - far_fraction) in the common view volume, the rest in a
    far shell behind it (see the module docstring). ValueError if the cameras share no volume."""
    if num <= 0:
        raise ValueError(f"the number of initial points must be positive, got {num}")
    focus = focus_point(cameras)
    centers = cameras.centers
    dist = np.linalg.norm(centers - focus, axis=1)  # [C]
    half = float(np.median(dist))
    n_far = int(round(num * np.clip(far_fraction, 0.0, 1.0)))
    n_common = num - n_far
    need_views = max(1, int(np.ceil(min_views * len(cameras))))

    common: list[np.ndarray] = []
    got = 0
    for _ in range(200):
        if got >= n_common:
            break
        cand = focus + rng.uniform(-half, half, size=(max(4096, 4 * n_common), 3))
        _, _, vis = project(cand, cameras)
        keep = cand[vis.sum(axis=0) >= need_views]
        common.append(keep)
        got += len(keep)
    common_pts = np.concatenate(common, axis=0)[:n_common] if common else np.zeros((0, 3))
    if len(common_pts) < n_common:
        raise ValueError(
            f"could not place random initial points: no volume is seen by {need_views} of the {len(cameras)} cameras "
            "(lower init_min_views, or give the scene sparse points)"
        )

    # Far shell: random pixel rays from random cameras, depth beyond the common volume.
    cam = rng.integers(0, len(cameras), size=n_far)
    u = rng.uniform(0, cameras.widths[cam])
    v = rng.uniform(0, cameras.heights[cam])
    K = cameras.Ks[cam]
    x = (u - K[:, 0, 2]) / K[:, 0, 0]
    y = (v - K[:, 1, 2]) / K[:, 1, 1]
    d_focus = dist[cam]
    radius = np.sqrt(3.0) * half
    depth = rng.uniform(np.maximum(d_focus, d_focus + 0.5 * radius), 2.0 * d_focus + radius)
    pc = np.stack([x * depth, y * depth, depth, np.ones_like(depth)], axis=-1)  # [n_far, 4]
    c2w = cameras.camtoworlds[cam]
    far_pts = np.einsum("nij,nj->ni", c2w, pc)[:, :3]
    return np.concatenate([common_pts, far_pts], axis=0)


def colors_from_images(points: np.ndarray, cameras: Cameras, images: list[np.ndarray], default: float = 0.5) -> np.ndarray:
    """Mean image colour [P, 3] in [0, 1] over the views that see each point (`default` if none).
    `images[c]` is float [H_c, W_c, 3] at camera c's size."""
    uv, _, vis = project(points, cameras)
    acc = np.zeros((len(points), 3))
    cnt = np.zeros(len(points))
    for c, img in enumerate(images):
        m = vis[c]
        if not m.any():
            continue
        col = np.clip(uv[c, m, 0].astype(np.int64), 0, img.shape[1] - 1)
        row = np.clip(uv[c, m, 1].astype(np.int64), 0, img.shape[0] - 1)
        acc[m] += img[row, col]
        cnt[m] += 1
    out = np.full((len(points), 3), default)
    seen = cnt > 0
    out[seen] = acc[seen] / cnt[seen, None]
    return out.astype(np.float32)


def splats_from_points(
    points: np.ndarray, colors: np.ndarray, *, sh_degree: int, opacity: float, scale_mult: float = 1.0
) -> Splats:
    """Isotropic Gaussians at `points` [P,3] with colours [P,3] in [0,1]: scale = mean distance to
    the 3 nearest neighbours (times `scale_mult`), identity rotation, the given opacity."""
    P = len(points)
    if P == 0:
        raise ValueError("cannot initialise Gaussians from zero points")
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"initial opacity must be in (0, 1), got {opacity}")
    pts = np.asarray(points, dtype=np.float64)
    k = min(4, P)
    if k > 1:
        dists, _ = cKDTree(pts).query(pts, k=k)
        nn = dists[:, 1:].mean(axis=1)
    else:
        nn = np.ones(1)
    nn = np.maximum(nn, max(float(np.median(nn)) * 1e-3, 1e-7)) * scale_mult
    log_scales = np.repeat(np.log(nn)[:, None], 3, axis=1)
    quats = np.zeros((P, 4))
    quats[:, 0] = 1.0
    sh0 = ((np.clip(colors, 0.0, 1.0) - 0.5) / SH_C0)[:, None, :]
    shN = np.zeros((P, num_sh_bases(sh_degree) - 1, 3))
    logit = np.log(opacity / (1.0 - opacity))
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return Splats(
        means=f32(pts),
        quats=f32(quats),
        log_scales=f32(log_scales),
        opacity_logits=f32(np.full(P, logit)),
        sh0=f32(sh0),
        shN=f32(shN),
    )
