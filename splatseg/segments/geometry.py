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


def normals_from_depth(depth: np.ndarray, K: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """float32 [H, W, 3] unit camera-frame normals facing the camera (n . p < 0).

    Points are back-projected with K; the normal is the cross product of the central finite
    differences of the point map along x and y. Pixels that are invalid (or whose differences would
    use an invalid neighbour on both sides) get a zero normal.
    """
    H, W = depth.shape
    if valid is None:
        valid = np.isfinite(depth) & (depth > 0)
    d = np.where(valid, depth, 0.0)
    P = backproject(d, K)
    # One-sided differences where one neighbour is invalid, central where both are valid.
    def diff(axis: int) -> tuple[np.ndarray, np.ndarray]:
        fwd = np.zeros_like(P)
        bwd = np.zeros_like(P)
        vf = np.zeros((H, W), bool)
        vb = np.zeros((H, W), bool)
        if axis == 1:
            fwd[:, :-1] = P[:, 1:] - P[:, :-1]
            vf[:, :-1] = valid[:, 1:] & valid[:, :-1]
            bwd[:, 1:] = P[:, 1:] - P[:, :-1]
            vb[:, 1:] = valid[:, 1:] & valid[:, :-1]
        else:
            fwd[:-1] = P[1:] - P[:-1]
            vf[:-1] = valid[1:] & valid[:-1]
            bwd[1:] = P[1:] - P[:-1]
            vb[1:] = valid[1:] & valid[:-1]
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
