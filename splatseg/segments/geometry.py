"""Per-view geometry rendered from the splats, as the segment sources consume it.

Frames and units: OpenCV camera frame (x right, y down, z forward); depth is camera-frame z in scene
units; pixel (i, j) has its centre at (i + 0.5, j + 0.5) (see `splatseg.types`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Geometry:
    """What the splats give for one view; the caller renders it (this package never renders).

    Attributes:
        depth: float32 [H, W] expected camera-frame z (scene units); <= 0 or non-finite = unknown.
        alpha: float32 [H, W] accumulated opacity in [0, 1]; pixels below 0.5 count as empty.
        K: float [3, 3] pinhole intrinsics in pixels of this H x W image.
    """

    depth: np.ndarray
    alpha: np.ndarray
    K: np.ndarray

    def check(self, shape: tuple[int, int]) -> None:
        """ValueError (one line) unless depth and alpha are [H, W] with (H, W) = shape and K is 3x3."""
        if np.shape(self.depth) != tuple(shape) or np.shape(self.alpha) != tuple(shape):
            raise ValueError(
                f"geometry depth {np.shape(self.depth)} and alpha {np.shape(self.alpha)} must match the image size {tuple(shape)}"
            )
        if np.shape(self.K) != (3, 3):
            raise ValueError(f"geometry K must be 3x3, got {np.shape(self.K)}")

    def valid(self, min_alpha: float = 0.5) -> np.ndarray:
        """bool [H, W]: pixels with alpha >= min_alpha and a finite positive depth."""
        d = np.asarray(self.depth)
        return (np.asarray(self.alpha) >= min_alpha) & np.isfinite(d) & (d > 0)


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """float64 [H, W, 3] camera-frame points of the pixel centres at camera-z `depth` [H, W]."""
    H, W = depth.shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    u = np.arange(W, dtype=np.float64) + 0.5
    v = np.arange(H, dtype=np.float64) + 0.5
    z = depth.astype(np.float64)
    x = (u[None, :] - cx) / fx * z
    y = (v[:, None] - cy) / fy * z
    return np.stack([x, y, z], axis=-1)


def normals_from_depth(depth: np.ndarray, K: np.ndarray, valid: np.ndarray | None = None, edge_aware: bool = False,
                       step: int = 1) -> np.ndarray:
    """float32 [H, W, 3] unit camera-frame normals facing the camera (n . p < 0).

    Points are back-projected with K; the normal is the cross product of the finite differences of
    the point map along x and y over `step` pixels: central differences (the mean of the two
    one-sided ones), or with `edge_aware` the one-sided difference with the smaller relative depth
    change, so a pixel next to a depth step or a crease takes its normal from its own surface only
    (a larger step averages out depth noise without mixing surfaces). Where one neighbour is invalid
    the other side is used. Pixels that are invalid (or have no valid neighbour along an axis) get a
    zero normal.
    """
    H, W = depth.shape
    if valid is None:
        valid = np.isfinite(depth) & (depth > 0)
    k = max(1, int(step))
    d = np.where(valid, depth, 0.0)
    P = backproject(d, K)
    zsafe = np.where(valid, d, 1.0).astype(np.float64)

    def diff(axis: int) -> tuple[np.ndarray, np.ndarray]:
        fwd = np.zeros_like(P)
        bwd = np.zeros_like(P)
        vf = np.zeros((H, W), bool)
        vb = np.zeros((H, W), bool)
        if axis == 1 and W > k:
            fwd[:, :-k] = P[:, k:] - P[:, :-k]
            vf[:, :-k] = valid[:, k:] & valid[:, :-k]
            bwd[:, k:] = P[:, k:] - P[:, :-k]
            vb[:, k:] = valid[:, k:] & valid[:, :-k]
        elif axis == 0 and H > k:
            fwd[:-k] = P[k:] - P[:-k]
            vf[:-k] = valid[k:] & valid[:-k]
            bwd[k:] = P[k:] - P[:-k]
            vb[k:] = valid[k:] & valid[:-k]
        if edge_aware:
            rf = np.where(vf, np.abs(fwd[..., 2]) / zsafe, np.inf)
            rb = np.where(vb, np.abs(bwd[..., 2]) / zsafe, np.inf)
            use_f = vf & (rf <= rb)
            g = np.where(use_f[..., None], fwd, bwd * vb[..., None])
            return g, vf | vb
        n = vf.astype(np.float64) + vb.astype(np.float64)
        g = (fwd * vf[..., None] + bwd * vb[..., None]) / np.maximum(n, 1)[..., None]
        return g, n > 0

    gx, okx = diff(1)
    gy, oky = diff(0)
    nrm = np.cross(gx, gy)
    length = np.linalg.norm(nrm, axis=-1, keepdims=True)
    ok = valid & okx & oky & (length[..., 0] > 0)
    nrm = np.where(ok[..., None], nrm / np.maximum(length, 1e-30), 0.0)
    flip = np.sum(nrm * P, axis=-1) > 0
    nrm[flip] *= -1
    return nrm.astype(np.float32)


def smooth_depth(depth: np.ndarray, valid: np.ndarray, sigma: float, weight: np.ndarray | None = None) -> np.ndarray:
    """float64 [H, W]: `depth` smoothed with a Gaussian of `sigma` pixels as a weighted mean over the
    valid pixels only (weights `weight`, e.g. the rendered opacity, times `valid`), so empty pixels and
    faint fringes do not pull the depth; unchanged for sigma <= 0; 0 outside `valid`."""
    from scipy import ndimage as ndi

    z = np.where(valid, np.asarray(depth, np.float64), 0.0)
    if sigma <= 0:
        return z
    w = valid.astype(np.float64) if weight is None else np.where(valid, np.clip(np.asarray(weight, np.float64), 0.0, None), 0.0)
    num = ndi.gaussian_filter(w * z, sigma, mode="nearest")
    den = ndi.gaussian_filter(w, sigma, mode="nearest")
    return np.where(valid & (den > 1e-12), num / np.maximum(den, 1e-12), 0.0)


def fit_support_plane(points: np.ndarray, normals: np.ndarray, mask: np.ndarray, tolerance: float, max_angle_deg: float,
                      iterations: int = 128, samples: int = 2000, seed: int = 0) -> tuple[np.ndarray, float] | None:
    """The dominant plane of a view by RANSAC: (unit normal m facing the camera, offset c) with
    m . p + c = 0 for points p on it (camera frame), or None when `mask` has fewer than 3 pixels.

    points [H, W, 3] camera-frame points, normals [H, W, 3] unit normals (0 = unknown), mask bool
    [H, W] pixels to fit. A pixel supports a plane when its distance to it is below
    `tolerance * z` (z = the pixel's depth, so the tolerance is relative, like the depth noise) and
    its normal is within `max_angle_deg` of the plane's. Hypotheses (2 x `iterations`) are planes
    through 3 random pixels, and through 1 random pixel with its normal (likely to hit a plane that
    holds only a small share of the view), of a fixed-seed subsample of `samples` pixels; the best is
    refined by least squares on its supporters (twice)."""
    idx = np.flatnonzero(mask.ravel())
    if idx.size < 3:
        return None
    rng = np.random.default_rng(seed)
    if idx.size > samples:
        idx = rng.choice(idx, samples, replace=False)
    P = points.reshape(-1, 3)[idx]
    N = normals.reshape(-1, 3)[idx]
    tol = tolerance * P[:, 2]
    cos_max = np.cos(np.radians(max_angle_deg))
    tri = rng.integers(0, len(P), (iterations, 3))
    one = rng.integers(0, len(P), iterations)
    m = np.concatenate([np.cross(P[tri[:, 1]] - P[tri[:, 0]], P[tri[:, 2]] - P[tri[:, 0]]), N[one]])
    origin = np.concatenate([P[tri[:, 0]], P[one]])
    length = np.linalg.norm(m, axis=1)
    ok = length > 1e-12
    if not ok.any():
        return None
    m = m[ok] / length[ok, None]
    c = -np.sum(m * origin[ok], axis=1)
    flip = c < 0  # orient towards the camera (origin): m . 0 + c > 0
    m[flip] *= -1
    c[flip] *= -1
    dist = P @ m.T + c[None, :]  # [S, hyp]
    support = (np.abs(dist) < tol[:, None]) & (np.abs(N @ m.T) > cos_max)
    best = int(np.argmax(support.sum(0)))
    m_best, c_best = m[best], c[best]
    flat_P = points.reshape(-1, 3)[mask.ravel()]
    flat_N = normals.reshape(-1, 3)[mask.ravel()]
    for _ in range(2):
        d = flat_P @ m_best + c_best
        inl = (np.abs(d) < tolerance * flat_P[:, 2]) & (np.abs(flat_N @ m_best) > cos_max)
        if inl.sum() < 3:
            break
        Q = flat_P[inl]
        mean = Q.mean(0)
        _, _, vt = np.linalg.svd(Q - mean, full_matrices=False)
        m_new = vt[-1]
        c_new = -float(m_new @ mean)
        if c_new < 0:
            m_new, c_new = -m_new, -c_new
        m_best, c_best = m_new, c_new
    return m_best, float(c_best)
