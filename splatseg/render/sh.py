"""Real spherical harmonics, degrees 0..3, with gsplat's basis order, signs and constants.

`sh_to_rgb(degree, coeffs [..., B, 3], dirs [..., 3]) -> [..., 3]` evaluates the first
(degree + 1)^2 bases at the normalised view directions (any length, normalised inside; gsplat uses
dir = mean - camera centre in world coordinates) and returns sum_b basis_b * coeff_b, without the
+0.5 offset and clamp (the renderer adds those, as gsplat's `rasterization` does).
"""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.2820947917738781
SH_C1 = 0.48860251190292
MAX_SH_DEGREE = 3


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """[..., 3] unit directions -> [..., (degree+1)^2] basis values (Sloan's fast evaluation)."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    bases = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        bases += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        z2 = z * z
        tmp_b = -1.092548430592079 * z
        c1 = x * x - y * y
        s1 = 2.0 * x * y
        bases += [
            0.5462742152960395 * s1,
            tmp_b * y,
            0.9461746957575601 * z2 - 0.3153915652525201,
            tmp_b * x,
            0.5462742152960395 * c1,
        ]
    if degree >= 3:
        tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
        tmp_b = 1.445305721320277 * z
        c2 = x * c1 - y * s1
        s2 = x * s1 + y * c1
        bases += [
            -0.5900435899266435 * s2,
            tmp_b * s1,
            tmp_c * y,
            z * (1.865881662950577 * z2 - 1.119528997770346),
            tmp_c * x,
            tmp_b * c1,
            -0.5900435899266435 * c2,
        ]
    return torch.stack(bases, dim=-1)


def sh_to_rgb(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """SH coefficients [..., B, 3] (B >= (degree+1)^2) at directions [..., 3] -> [..., 3]."""
    num_bases = (degree + 1) ** 2
    if coeffs.shape[-2] < num_bases:
        raise ValueError(f"sh_degree {degree} needs {num_bases} SH coefficients per channel, got {coeffs.shape[-2]}")
    unit = torch.nn.functional.normalize(dirs, dim=-1)
    bases = sh_bases(degree, unit)  # [..., num_bases]
    return (bases[..., None] * coeffs[..., :num_bases, :]).sum(dim=-2)
