"""Rendering backend: the only package that imports gsplat.

Public API (shapes use N Gaussians, C cameras, D channels, H x W pixels; OpenCV camera frame):

    render(means, quats, scales, opacities, colors, viewmats, Ks, width, height, ...) -> RenderOutput
        One entry point. gsplat's `rasterization` for CUDA tensors, the exact pure-PyTorch
        rasteriser (`splatseg.render.torch_raster`) otherwise. Differentiable in both.

    blend_weights(means, quats, scales, opacities, viewmat, K, width, height) -> BlendWeights
        Frozen-geometry cache for one view: the (pixel, Gaussian, weight) triples of the
        compositor, so a feature map is one index_add (`composite`) and masks lift back onto
        Gaussians with `lift`.
"""

from splatseg.render.api import BlendWeights, RenderOutput, blend_weights, composite, lift, render

__all__ = ["BlendWeights", "RenderOutput", "blend_weights", "composite", "lift", "render"]
