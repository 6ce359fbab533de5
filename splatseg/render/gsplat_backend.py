"""gsplat's CUDA `rasterization` behind splatseg's `render` signature (CUDA tensors only).

gsplat is imported inside the function: importing it, or calling it on CPU tensors, may try to
build its CUDA extension, which `import splatseg.render` must never trigger.
Output conventions match `torch_raster.render_torch`: colours [C,H,W,D], alphas [C,H,W,1], expected
depths [C,H,W,1] (render_mode "RGB+ED"), meta with unpacked "means2d" [C,N,2] and "radii" [C,N].
"""

from __future__ import annotations

from torch import Tensor


def render_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int | None,
    near_plane: float,
    far_plane: float,
    backgrounds: Tensor | None,
    eps2d: float,
) -> tuple[Tensor, Tensor, Tensor, dict]:
    """gsplat.rasterization(..., render_mode="RGB+ED", packed=False, rasterize_mode="classic")."""
    from gsplat import rasterization

    out, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
        backgrounds=backgrounds, render_mode="RGB+ED", packed=False, rasterize_mode="classic",
    )  # fmt: skip
    meta = dict(meta)
    meta["radii"] = meta["radii"].amax(dim=-1) if meta["radii"].dim() == 3 else meta["radii"]
    meta.setdefault("n_cameras", viewmats.shape[0])
    return out[..., :-1], alphas, out[..., -1:], meta
