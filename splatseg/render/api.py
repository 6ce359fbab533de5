"""Entry points of the rendering backend: `render`, and the frozen-geometry cache `blend_weights` /
`composite` / `lift`.

Shapes: N Gaussians, C cameras, D channels, H x W pixels, P contributing (pixel, Gaussian) pairs.
Frames: world means; `viewmats` world -> OpenCV camera; `Ks` in pixels; pixel (col, row) has its
centre at (col + 0.5, row + 0.5); flat pixel index = row * width + col.
`render` dispatches to gsplat's CUDA `rasterization` for CUDA tensors (backend "auto"/"gsplat") and to
the exact pure-PyTorch rasteriser (`torch_raster`) otherwise; both follow gsplat 1.5.3's "classic"
conventions and are differentiable in means, quats, scales, opacities and colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from splatseg.render.projection import project
from splatseg.render.sh import MAX_SH_DEGREE
from splatseg.render.sparse import SpMM, crow_from_rows, csr, transpose_pattern
from splatseg.render.torch_raster import PAIRS_PER_CHUNK, render_torch, select_pairs

BACKENDS = ("auto", "torch", "gsplat")


@dataclass
class RenderOutput:
    colors: Tensor  # [C, H, W, D] composited channels (plus background * (1 - alpha) if given)
    alphas: Tensor  # [C, H, W, 1] accumulated opacity
    depths: Tensor  # [C, H, W, 1] expected camera-frame z: sum(w z) / max(alpha, eps); 0 where alpha=0
    meta: dict  # "means2d" [C, N, 2] projected centres in pixels (in the autograd graph: call
    #             .retain_grad() before backward for densification), "radii" [C, N] int32 (the larger
    #             of gsplat's per-axis box radii; 0 = culled), "depths" [C, N], "conics" [C, N, 3],
    #             "width", "height", "n_cameras".


def _check_render_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if means.dim() != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be [N, 3], got {tuple(means.shape)}")
    n = means.shape[0]
    for name, t, shape in (("quats", quats, (n, 4)), ("scales", scales, (n, 3)), ("opacities", opacities, (n,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)} to match means [N={n}, 3], got {list(t.shape)}")
    if sh_degree is None:
        if colors.dim() != 2 or colors.shape[0] != n:
            raise ValueError(f"colors must be [N={n}, D] (or [N, B, 3] with sh_degree), got {list(colors.shape)}")
    else:
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {sh_degree}")
        bases = (sh_degree + 1) ** 2
        if colors.dim() != 3 or colors.shape[0] != n or colors.shape[2] != 3 or colors.shape[1] < bases:
            raise ValueError(f"colors must be SH coefficients [N={n}, B>={bases}, 3] for sh_degree {sh_degree}, got {list(colors.shape)}")
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must be [C, 4, 4], got {list(viewmats.shape)}")
    c = viewmats.shape[0]
    if tuple(Ks.shape) != (c, 3, 3):
        raise ValueError(f"Ks must be [C={c}, 3, 3] to match viewmats, got {list(Ks.shape)}")
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive integers, got {width} x {height}")
    d = 3 if sh_degree is not None else colors.shape[1]
    if backgrounds is not None and tuple(backgrounds.shape) != (c, d):
        raise ValueError(f"backgrounds must be [C={c}, D={d}], got {list(backgrounds.shape)}")
    tensors = [means, quats, scales, opacities, colors, viewmats, Ks] + ([backgrounds] if backgrounds is not None else [])
    if len({t.device for t in tensors}) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted({str(t.device) for t in tensors})}")


def render(
    means: Tensor,  # [N, 3] world
    quats: Tensor,  # [N, 4] w x y z (normalised inside)
    scales: Tensor,  # [N, 3] activated standard deviations
    opacities: Tensor,  # [N] activated, in (0, 1)
    colors: Tensor,  # [N, D] plain channels, or [N, B, 3] SH coefficients when sh_degree is given
    viewmats: Tensor,  # [C, 4, 4] world -> camera (OpenCV)
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,  # use the first (sh_degree+1)^2 SH bases; rgb = SH + 0.5, clamped >= 0
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    backgrounds: Tensor | None = None,  # [C, D]
    eps2d: float = 0.3,
    backend: str = "auto",  # "auto" | "torch" | "gsplat"
    pairs_per_chunk: int = PAIRS_PER_CHUNK,  # torch backend: max (pixel, Gaussian) pairs held at once
) -> RenderOutput:
    """Render C views of N Gaussians (gsplat "RGB+ED"). Colours come from SH evaluated with view
    direction mean - camera centre when sh_degree is given."""
    _check_render_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, backend)
    on_cuda = means.device.type == "cuda"
    if backend == "gsplat" and not on_cuda:
        raise ValueError(f"backend='gsplat' needs CUDA tensors, got device {means.device} (use 'auto' or 'torch')")
    kwargs = dict(sh_degree=sh_degree, near_plane=near_plane, far_plane=far_plane, backgrounds=backgrounds, eps2d=eps2d)
    if on_cuda and backend in ("auto", "gsplat"):
        from splatseg.render.gsplat_backend import render_gsplat

        colors_out, alphas, depths, meta = render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
    else:
        colors_out, alphas, depths, meta = render_torch(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, pairs_per_chunk=pairs_per_chunk, **kwargs
        )
    return RenderOutput(colors=colors_out, alphas=alphas, depths=depths, meta=meta)


@dataclass
class BlendWeights:
    """Compositing weights of one view with frozen geometry. P = number of contributing pairs.

    Pairs are sorted by pixel, then front to back. Indices are int32 (half the memory of int64; use
    `.long()` for ops that need int64, e.g. `scatter_add_`); int64 only past 2^31 pairs.
    """

    pixel: Tensor  # [P] int32 flat pixel index row * width + col
    gaussian: Tensor  # [P] int32 Gaussian index
    weight: Tensor  # [P] float32 alpha_i * T_i (the blend weight of Gaussian i at that pixel)
    width: int
    height: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def matrices(self, num_gaussians: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """CSR (W [H*W, N], W^T [N, H*W]) in `dtype`, built once and cached."""
        key = (num_gaussians, dtype)
        if key not in self._cache:
            num_pixels = self.width * self.height
            if self.gaussian.numel() and int(self.gaussian.max()) >= num_gaussians:
                raise ValueError(f"blend weights index Gaussian {int(self.gaussian.max())}, but only {num_gaussians} were given")
            crow = crow_from_rows(self.pixel.long(), num_pixels, self.pixel.dtype)
            weight = self.weight.to(dtype)
            crow_t, rows_t, order = transpose_pattern(crow, self.gaussian, num_gaussians)
            self._cache[key] = (
                csr(crow, self.gaussian, weight, (num_pixels, num_gaussians)),
                csr(crow_t, rows_t, weight.index_select(0, order), (num_gaussians, num_pixels)),
            )
        return self._cache[key]


def blend_weights(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmat: Tensor,  # [4, 4] world -> camera
    K: Tensor,  # [3, 3]
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
    far_plane: float = 1e10,
    pairs_per_chunk: int = PAIRS_PER_CHUNK,
) -> BlendWeights:
    """The torch compositor's (pixel, Gaussian, weight) triples for one view (no autograd)."""
    if tuple(viewmat.shape) != (4, 4) or tuple(K.shape) != (3, 3):
        raise ValueError(f"blend_weights takes one view: viewmat [4, 4] and K [3, 3], got {list(viewmat.shape)} and {list(K.shape)}")
    colors = torch.zeros(means.shape[0], 1, dtype=means.dtype, device=means.device)
    _check_render_inputs(means, quats, scales, opacities, colors, viewmat[None], K[None], width, height, None, None, "torch")
    with torch.no_grad():
        proj = project(
            means, quats, scales, opacities, viewmat[None], K[None], width, height,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
        )  # fmt: skip
        pairs = select_pairs(
            proj.means2d[0], proj.conics[0], opacities, proj.depths[0], proj.radii[0], width, height, pairs_per_chunk
        )
    return BlendWeights(pairs.pixel, pairs.gaussian, pairs.alpha * pairs.trans, int(width), int(height))


def composite(bw: BlendWeights, features: Tensor) -> Tensor:
    """[N, D] -> [H, W, D] feature map; differentiable in `features`."""
    if features.dim() != 2:
        raise ValueError(f"features must be [N, D], got {list(features.shape)}")
    W, WT = bw.matrices(features.shape[0], features.dtype)
    return SpMM.apply(features.contiguous(), W, WT).reshape(bw.height, bw.width, features.shape[1])


def lift(bw: BlendWeights, values: Tensor, num_gaussians: int) -> tuple[Tensor, Tensor]:
    """Pixel values [H, W, D] (or [H*W, D]) -> (weighted sums [N, D], weight sums [N])."""
    num_pixels = bw.width * bw.height
    if values.dim() == 3 and tuple(values.shape[:2]) == (bw.height, bw.width):
        values = values.reshape(num_pixels, values.shape[2])
    if values.dim() != 2 or values.shape[0] != num_pixels:
        raise ValueError(f"values must be [H={bw.height}, W={bw.width}, D] or [H*W={num_pixels}, D], got {list(values.shape)}")
    W, WT = bw.matrices(num_gaussians, values.dtype)
    sums = SpMM.apply(values.contiguous(), WT, W)
    weight_sums = torch.bincount(bw.gaussian.long(), weights=bw.weight, minlength=num_gaussians).to(values.dtype)
    return sums, weight_sums
