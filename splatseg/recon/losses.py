"""Image losses and metrics (pure functions): L1, SSIM, PSNR.

Images are float tensors [H, W, 3] or [B, H, W, 3] with values in [0, 1] (channels last, as the
renderer returns them). SSIM uses the standard 11x11 Gaussian window (sigma 1.5), constants
C1 = 0.01^2, C2 = 0.03^2 for data range 1, and averages over the "valid" region (no padding),
so two constant images give exactly the luminance term (2ab + C1) / (a^2 + b^2 + C1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _as_bchw(img: Tensor) -> Tensor:
    if img.dim() == 3:
        img = img[None]
    if img.dim() != 4:
        raise ValueError(f"expected an image [H,W,C] or [B,H,W,C], got shape {tuple(img.shape)}")
    return img.permute(0, 3, 1, 2)


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    w2 = g[:, None] * g[None, :]  # [size, size]
    return w2.expand(channels, 1, size, size).contiguous()


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean structural similarity of two images [H,W,C] / [B,H,W,C] in [0, 1] (scalar tensor).

    Differentiable. Images smaller than the 11x11 window raise ValueError.
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    x, y = _as_bchw(a), _as_bchw(b)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(x.shape[-2:])}")
    C = x.shape[1]
    w = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, C, x)
    mu_x = F.conv2d(x, w, groups=C)
    mu_y = F.conv2d(y, w, groups=C)
    sxx = F.conv2d(x * x, w, groups=C) - mu_x**2
    syy = F.conv2d(y * y, w, groups=C) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=C) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mu_x**2 + mu_y**2 + SSIM_C1) * (sxx + syy + SSIM_C2)
    return (num / den).mean()


def l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference (scalar tensor)."""
    return (a - b).abs().mean()


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB for data range 1 (inf for identical images)."""
    mse = float(((a.detach().double() - b.detach().double()) ** 2).mean())
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def photometric_loss(rendered: Tensor, target: Tensor, ssim_lambda: float) -> Tensor:
    """(1 - lambda) * L1 + lambda * (1 - SSIM), the reference 3DGS loss."""
    loss = (1.0 - ssim_lambda) * l1(rendered, target)
    if ssim_lambda > 0:
        loss = loss + ssim_lambda * (1.0 - ssim(rendered, target))
    return loss
