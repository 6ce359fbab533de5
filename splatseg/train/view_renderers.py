"""Feature maps of one training view with the geometry frozen, in two interchangeable ways.

- `CachedBlendRenderer` (CPU default): the view's (pixel, Gaussian, weight) triples are computed
  once; a feature map is one sparse product and lifting is its transpose.
- `RasterRenderer` (CUDA default): every call rasterises the features with `splatseg.render.render`
  (gsplat on CUDA tensors); lifting uses the renderer's gradient with respect to the colours,
  which is exactly sum over pixels of w_ip * value_p.
Both return feature maps [H*W, D] (row-major pixels) and lift [H*W, K] pixel values onto the
Gaussians as (sums [N, K], weight sums [N]).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from splatseg.render import BlendWeights, blend_weights, composite, lift, render


class ViewRenderer(Protocol):
    width: int
    height: int
    viewmat: Tensor  # [4, 4] world -> camera (OpenCV axes)
    K: Tensor  # [3, 3] intrinsics at width x height

    def features(self, per_gaussian: Tensor) -> Tensor: ...

    def lift(self, values: Tensor) -> tuple[Tensor, Tensor]: ...


class CachedBlendRenderer:
    """Frozen-geometry fast path: cached blend weights of one view."""

    def __init__(self, params: dict, viewmat: Tensor, K: Tensor, width: int, height: int):
        self.bw: BlendWeights = blend_weights(params["means"], params["quats"], params["scales"], params["opacities"],
                                              viewmat, K, width, height)
        self.num_gaussians = params["means"].shape[0]
        self.width, self.height = width, height
        self.viewmat, self.K = viewmat, K

    def features(self, per_gaussian: Tensor) -> Tensor:
        return composite(self.bw, per_gaussian).reshape(-1, per_gaussian.shape[1])

    def lift(self, values: Tensor) -> tuple[Tensor, Tensor]:
        return lift(self.bw, values, self.num_gaussians)


class RasterRenderer:
    """Rasterises on every call (gsplat on CUDA); keeps only the camera."""

    def __init__(self, params: dict, viewmat: Tensor, K: Tensor, width: int, height: int):
        self.params = params
        self.viewmat, self.K = viewmat, K
        self.width, self.height = width, height

    def features(self, per_gaussian: Tensor) -> Tensor:
        p = self.params
        out = render(p["means"], p["quats"], p["scales"], p["opacities"], per_gaussian, self.viewmat[None], self.K[None],
                     self.width, self.height)
        return out.colors[0].reshape(-1, per_gaussian.shape[1])

    def lift(self, values: Tensor) -> tuple[Tensor, Tensor]:
        n = self.params["means"].shape[0]
        with torch.enable_grad():
            probe = torch.zeros(n, values.shape[1], device=values.device, requires_grad=True)
            (self.features(probe) * values).sum().backward()
            ones = torch.ones(n, 1, device=values.device, requires_grad=True)
            self.features(ones).sum().backward()
        return probe.grad.detach(), ones.grad.detach()[:, 0]


def make_view_renderer(kind: str, params: dict, viewmat: Tensor, K: Tensor, width: int, height: int) -> ViewRenderer:
    """kind: "cached" | "raster" | "auto" (cached on CPU, raster on CUDA)."""
    if kind == "auto":
        kind = "raster" if params["means"].is_cuda else "cached"
    if kind == "cached":
        return CachedBlendRenderer(params, viewmat, K, width, height)
    if kind == "raster":
        return RasterRenderer(params, viewmat, K, width, height)
    raise ValueError(f"unknown feature renderer {kind!r} (expected auto, cached or raster)")
