"""EWA projection of 3D Gaussians into C pinhole cameras, following gsplat 1.5.3's fused kernel
(`ProjectionEWA3DGSFused.cu`, "classic" mode) in differentiable PyTorch.

Frames and units: means in world units; `viewmats` [C, 4, 4] map world -> OpenCV camera (x right,
y down, z forward); `Ks` [C, 3, 3] in pixels; 2D quantities in pixels with the image's top-left
corner at (0, 0), so pixel (i, j) has its centre at (i + 0.5, j + 0.5).

Rules copied from gsplat:
- covariance = R S S^T R^T, R from the normalised w x y z quaternion, S = diag(scales);
- Jacobian of the perspective map at the mean, with x/z and y/z clamped to 1.3 x the half field of
  view (measured from the principal point), so Gaussians far off-screen do not blow up;
- eps2d added to the diagonal of the 2D covariance; conic = its inverse;
- culled (radii = 0): camera z outside [near, far], det <= 0, opacity < 1/255, or the box
  mean +- radius entirely outside the image; radius per axis = ceil(extent * sqrt(cov2d_ii)) with the
  opacity-aware extent min(3.33, sqrt(2 ln(255 opacity))), the box that holds every pixel whose
  alpha reaches 1/255.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
"""Pairs with alpha below this are skipped (gsplat's ALPHA_THRESHOLD)."""
MAX_EXTENT = 3.33
"""Largest box half-size in standard deviations (gsplat)."""
FOV_CLAMP = 0.3
"""x/z and y/z are clamped at (image edge + 0.3 x half-width) / focal in the Jacobian (gsplat)."""


class Projection(NamedTuple):
    means2d: Tensor  # [C, N, 2] pixels; 0 where culled
    conics: Tensor  # [C, N, 3] inverse 2D covariance (a, b, c) = [[a, b], [b, c]]; 0 where culled
    depths: Tensor  # [C, N] camera-frame z of the mean
    radii: Tensor  # [C, N, 2] int32 box half-sizes in pixels (x, y); 0 = culled (no gradient)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[N, 4] w x y z (normalised here) -> [N, 3, 3] rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def project(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> Projection:
    """Project all Gaussians into all cameras; differentiable in means, quats and scales."""
    R = viewmats[:, :3, :3]  # [C, 3, 3]
    t = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    x, y, z = means_c.unbind(-1)  # [C, N]

    with torch.no_grad():
        in_range = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(in_range, z, torch.ones_like(z))  # culled entries must not divide by ~0

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x_pos = (width - cx) / fx + FOV_CLAMP * (0.5 * width / fx)
    lim_x_neg = cx / fx + FOV_CLAMP * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + FOV_CLAMP * (0.5 * height / fy)
    lim_y_neg = cy / fy + FOV_CLAMP * (0.5 * height / fy)
    tx = z_safe * torch.maximum(torch.minimum(x / z_safe, lim_x_pos), -lim_x_neg)
    ty = z_safe * torch.maximum(torch.minimum(y / z_safe, lim_y_pos), -lim_y_neg)
    rz = 1.0 / z_safe
    zeros = torch.zeros_like(z)
    J = torch.stack(
        [fx * rz, zeros, -fx * tx * rz * rz, zeros, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(z.shape + (2, 3))  # [C, N, 2, 3]

    M = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3] = R S
    JWM = torch.einsum("cnij,cjk,nkl->cnil", J, R, M)  # [C, N, 2, 3]
    cov2d = JWM @ JWM.transpose(-1, -2)  # [C, N, 2, 2] = J W (R S S^T R^T) W^T J^T
    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b

    with torch.no_grad():
        opac = opacities.detach().expand_as(z)
        extent = torch.sqrt(2.0 * torch.log(torch.clamp(opac * 255.0, min=1.0))).clamp(max=MAX_EXTENT)
        rx = torch.ceil(extent * torch.sqrt(a.clamp(min=0)))
        ry = torch.ceil(extent * torch.sqrt(c.clamp(min=0)))
        mx = (fx * x / z_safe + cx).detach()
        my = (fy * y / z_safe + cy).detach()
        visible = (
            in_range
            & (det > 0)
            & (opac >= ALPHA_MIN)
            & ((rx > 0) | (ry > 0))
            & (mx + rx > 0)
            & (mx - rx < width)
            & (my + ry > 0)
            & (my - ry < height)
        )
        radii = torch.where(visible[..., None], torch.stack([rx, ry], dim=-1), 0.0).to(torch.int32)

    det_safe = torch.where(visible, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    conics = torch.where(visible[..., None], conics, 0.0)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)
    means2d = torch.where(visible[..., None], means2d, 0.0)
    return Projection(means2d=means2d, conics=conics, depths=z, radii=radii)


def camera_centers(viewmats: Tensor) -> Tensor:
    """[C, 4, 4] world -> camera -> [C, 3] camera centres in the world frame."""
    return torch.linalg.inv(viewmats)[:, :3, 3]

