"""The optimised model: raw Gaussian parameters, their Adam optimisers, and one rendered view.

Parameters (gsplat names, raw values, a dict of `torch.nn.Parameter`): means [N,3] world units,
quats [N,4] w x y z, scales [N,3] log std devs, opacities [N] logits, sh0 [N,1,3], shN [N,B-1,3]
with B = (max SH degree + 1)^2. The background colour is a separate [3] logit parameter (its
activated value is an RGB in (0, 1)). Learning rates follow the reference 3DGS: the means' rate is
multiplied by the scene extent and decays exponentially to its final value over the run.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from splatseg.recon.config import ReconConfig
from splatseg.recon.densify import Optimizers, Params
from splatseg.render import RenderOutput, render
from splatseg.types import Splats, num_sh_bases

ADAM_EPS = 1e-15
"""Adam epsilon of the reference 3DGS (tiny gradients of far-away Gaussians still move them)."""


def params_from_splats(splats: Splats, device: torch.device | str) -> Params:
    """Raw `Splats` -> a dict of trainable parameters on `device`."""

    def p(a: np.ndarray) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device))

    return {
        "means": p(splats.means),
        "quats": p(splats.quats),
        "scales": p(splats.log_scales),
        "opacities": p(splats.opacity_logits),
        "sh0": p(splats.sh0),
        "shN": p(splats.shN),
    }


def splats_from_params(params: Params, sh_degree: int) -> Splats:
    """Current parameters -> `Splats` (raw values), keeping SH bases up to `sh_degree`."""

    def a(name: str) -> np.ndarray:
        return params[name].detach().cpu().numpy().astype(np.float32)

    return Splats(
        means=a("means"),
        quats=a("quats"),
        log_scales=a("scales"),
        opacity_logits=a("opacities"),
        sh0=a("sh0"),
        shN=np.ascontiguousarray(a("shN")[:, : num_sh_bases(sh_degree) - 1]),
        normals=np.zeros_like(a("means")),
    )


def base_learning_rates(cfg: ReconConfig, extent: float) -> dict[str, float]:
    return {
        "means": cfg.means_lr * extent,
        "quats": cfg.quats_lr,
        "scales": cfg.scales_lr,
        "opacities": cfg.opacities_lr,
        "sh0": cfg.sh0_lr,
        "shN": cfg.shN_lr,
    }


def make_optimizers(params: Params, cfg: ReconConfig, extent: float) -> Optimizers:
    """One Adam per parameter (the layout densification and gsplat's strategies expect)."""
    lrs = base_learning_rates(cfg, extent)
    return {name: torch.optim.Adam([{"params": [p], "lr": lrs[name], "name": name}], eps=ADAM_EPS) for name, p in params.items()}


def means_lr(cfg: ReconConfig, extent: float, step: int) -> float:
    """Exponential decay from means_lr to means_lr_final (both x extent) over cfg.steps."""
    t = min(max(step / max(cfg.steps, 1), 0.0), 1.0)
    return extent * cfg.means_lr * (cfg.means_lr_final / cfg.means_lr) ** t


def set_step_learning_rates(optimizers: Optimizers, cfg: ReconConfig, extent: float, step: int) -> None:
    for group in optimizers["means"].param_groups:
        group["lr"] = means_lr(cfg, extent, step)


def active_sh_degree(cfg: ReconConfig, step: int) -> int:
    """SH degree in use at `step`: one more every `sh_degree_interval` steps, up to the maximum."""
    return min(cfg.sh_degree, step // max(cfg.sh_degree_interval, 1))


def render_views(
    params: Params,
    background: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int,
) -> RenderOutput:
    """Render C views [C,4,4] / [C,3,3] of the current parameters over `background` [3] in (0,1).
    Colours [C,H,W,3] are the SH colour (first (sh_degree+1)^2 bases) composited over it."""
    bases = num_sh_bases(sh_degree)
    colors = torch.cat([params["sh0"], params["shN"][:, : bases - 1]], dim=1)  # [N,bases,3]
    return render(
        params["means"],
        params["quats"],
        torch.exp(params["scales"]),
        torch.sigmoid(params["opacities"]),
        colors,
        viewmats,
        Ks,
        width,
        height,
        sh_degree=sh_degree,
        backgrounds=background.expand(viewmats.shape[0], 3),
    )
