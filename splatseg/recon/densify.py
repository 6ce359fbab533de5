"""Adaptive density control: clone / split / prune / opacity reset of the optimised Gaussians.

Parameters live in a dict of `torch.nn.Parameter` with gsplat's names and raw values:
means [N,3] (world), quats [N,4] (w x y z), scales [N,3] (log of world-unit std devs),
opacities [N] (logits), sh0 [N,1,3], shN [N,B-1,3]; one Adam optimiser per name. Every operation
replaces the rows of all parameters and of the optimisers' moment buffers together (new rows
start with zero moments), in place in the two dicts.

Statistics: after each backward, the norm of the gradient of the projected centres `means2d`
([C,N,2], pixels) is converted to normalised [-1, 1] screen units (x W/2, x H/2, x C, as gsplat
does) and accumulated per Gaussian over the views in which its radius is > 0.

`Densifier` is our schedule (any device); `GsplatDefault` adapts gsplat's `DefaultStrategy` to
the same interface (CUDA runs). Both are driven by the trainer through `pre_backward(meta)` and
`post_backward(params, optimizers, step, meta, width, height)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Params = dict[str, torch.nn.Parameter]
Optimizers = dict[str, torch.optim.Optimizer]

SPLIT_SCALE_DIVISOR = 1.6
"""Each half of a split Gaussian gets the parent's scales divided by this (reference 3DGS)."""


# --- row operations on parameters + optimiser state -----------------------------------------
@torch.no_grad()
def _update_rows(
    params: Params,
    optimizers: Optimizers,
    param_fn: Callable[[str, Tensor], Tensor],
    state_fn: Callable[[Tensor], Tensor],
    names: list[str] | None = None,
) -> None:
    for name in names if names is not None else list(params):
        old = params[name]
        new = torch.nn.Parameter(param_fn(name, old.detach()).contiguous(), requires_grad=old.requires_grad)
        params[name] = new
        opt = optimizers.get(name)
        if opt is None:
            continue
        st = opt.state.pop(old, None)
        if st is not None:
            opt.state[new] = {k: (v if k == "step" or v.dim() == 0 else state_fn(v)) for k, v in st.items()}
        for group in opt.param_groups:
            group["params"] = [new]


def num_gaussians(params: Params) -> int:
    return int(params["means"].shape[0])


def clone(params: Params, optimizers: Optimizers, mask: Tensor) -> None:
    """Append a copy of every Gaussian selected by the boolean `mask` [N] (same position)."""
    sel = torch.where(mask)[0]
    _update_rows(
        params,
        optimizers,
        lambda _, p: torch.cat([p, p[sel]]),
        lambda v: torch.cat([v, v.new_zeros((len(sel), *v.shape[1:]))]),
    )


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Unit-normalised w x y z quaternions [N,4] -> rotation matrices [N,3,3]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)


def split(params: Params, optimizers: Optimizers, mask: Tensor, generator: torch.Generator | None = None) -> None:
    """Replace every Gaussian selected by `mask` [N] with two samples drawn from it, each with
    scales / 1.6; the others keep their order and the new pairs go to the end."""
    sel = torch.where(mask)[0]
    rest = torch.where(~mask)[0]
    scales = torch.exp(params["scales"].detach()[sel])  # [S,3]
    R = quat_to_rotmat(params["quats"].detach()[sel])  # [S,3,3]
    noise = torch.randn((2, len(sel), 3), generator=generator, device="cpu").to(scales)
    offsets = torch.einsum("sij,sj,bsj->bsi", R, scales, noise)  # [2,S,3]

    def param_fn(name: str, p: Tensor) -> Tensor:
        if name == "means":
            new = (p[sel][None] + offsets).reshape(-1, 3)
        elif name == "scales":
            new = torch.log(scales / SPLIT_SCALE_DIVISOR).repeat(2, 1)
        else:
            new = p[sel].repeat(2, *([1] * (p.dim() - 1)))
        return torch.cat([p[rest], new])

    _update_rows(params, optimizers, param_fn, lambda v: torch.cat([v[rest], v.new_zeros((2 * len(sel), *v.shape[1:]))]))


def remove(params: Params, optimizers: Optimizers, mask: Tensor) -> None:
    """Delete every Gaussian selected by `mask` [N]."""
    keep = torch.where(~mask)[0]
    _update_rows(params, optimizers, lambda _, p: p[keep], lambda v: v[keep])


def reset_opacity(params: Params, optimizers: Optimizers, value: float) -> None:
    """Clamp every opacity to at most `value` (activated) and zero its optimiser moments."""
    cap = math.log(value / (1.0 - value))
    _update_rows(params, optimizers, lambda _, p: p.clamp(max=cap), torch.zeros_like, names=["opacities"])


# --- gradient statistics ---------------------------------------------------------------------
def visible_screen_grads(meta: dict, width: int, height: int) -> tuple[Tensor, Tensor]:
    """(Gaussian ids [V], gradient norms [V]) in normalised screen units for the Gaussians
    visible (radius > 0) in each rendered view; `meta["means2d"].grad` must be populated."""
    means2d = meta["means2d"]
    if means2d.grad is None:
        raise RuntimeError("means2d has no gradient: call pre_backward(meta) before loss.backward()")
    grads = means2d.grad.detach().clone()  # [C,N,2]
    C = grads.shape[0]
    grads[..., 0] *= width / 2.0 * C
    grads[..., 1] *= height / 2.0 * C
    radii = meta["radii"]
    visible = (radii > 0).all(dim=-1) if radii.dim() == 3 else radii > 0  # [C,N]
    ids = torch.where(visible)[1]
    return ids, grads[visible].norm(dim=-1)


@dataclass
class Densifier:
    """Our clone/split/prune schedule (reference 3DGS), with an optional cap on the count.

    At steps `refine_start < step < refine_stop` that are multiples of `refine_every`:
    1. prune: opacity < prune_opacity, or (after the first opacity reset) largest scale >
       prune_scale3d * extent;
    2. grow the Gaussians whose mean screen gradient exceeds grow_grad2d: clone those whose
       largest scale is <= grow_scale3d * extent, split the others; with `max_gaussians` > 0 only
       the highest-gradient candidates that fit under the cap grow (each adds one Gaussian);
    3. zero the statistics.
    Every `reset_every` steps (0 < step < refine_stop) opacities are clamped to 2 x prune_opacity.
    """

    extent: float
    refine_start: int = 500
    refine_stop: int = 15_000
    refine_every: int = 100
    reset_every: int = 3000
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.01
    prune_opacity: float = 0.005
    prune_scale3d: float = 0.1
    max_gaussians: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        self.grad2d: Tensor | None = None  # [N] accumulated gradient norms
        self.count: Tensor | None = None  # [N] number of views in which each Gaussian was visible
        self.generator = torch.Generator().manual_seed(self.seed)

    # interface shared with GsplatDefault
    def pre_backward(self, meta: dict) -> None:
        meta["means2d"].retain_grad()

    def post_backward(self, params: Params, optimizers: Optimizers, step: int, meta: dict, width: int, height: int) -> dict | None:
        if step >= self.refine_stop:
            return None
        self.accumulate(meta, width, height, num_gaussians(params))
        counts = None
        if step > self.refine_start and step % self.refine_every == 0:
            counts = self.refine(params, optimizers, step)
        if self.reset_every > 0 and step > 0 and step % self.reset_every == 0:
            reset_opacity(params, optimizers, 2.0 * self.prune_opacity)
        return counts

    def accumulate(self, meta: dict, width: int, height: int, n: int) -> None:
        ids, norms = visible_screen_grads(meta, width, height)
        if self.grad2d is None or self.grad2d.shape[0] != n:
            self.grad2d = torch.zeros(n, device=norms.device)
            self.count = torch.zeros(n, device=norms.device)
        self.grad2d.index_add_(0, ids, norms)
        self.count.index_add_(0, ids, torch.ones_like(norms))

    @torch.no_grad()
    def refine(self, params: Params, optimizers: Optimizers, step: int) -> dict:
        """Prune then grow (see the class docstring); returns {"pruned", "cloned", "split", "total"}."""
        n = num_gaussians(params)
        if self.grad2d is None or self.grad2d.shape[0] != n:
            self.grad2d = torch.zeros(n, device=params["means"].device)
            self.count = torch.zeros(n, device=params["means"].device)
        # 1. prune
        max_scale = torch.exp(params["scales"]).max(dim=-1).values
        prune = torch.sigmoid(params["opacities"]) < self.prune_opacity
        if self.reset_every > 0 and step > self.reset_every:
            prune |= max_scale > self.prune_scale3d * self.extent
        n_pruned = int(prune.sum())
        if n_pruned:
            remove(params, optimizers, prune)
            keep = ~prune
            self.grad2d, self.count, max_scale = self.grad2d[keep], self.count[keep], max_scale[keep]
        # 2. grow
        grads = self.grad2d / self.count.clamp_min(1)
        candidates = grads > self.grow_grad2d
        if self.max_gaussians > 0:
            budget = max(0, self.max_gaussians - num_gaussians(params))
            if int(candidates.sum()) > budget:
                order = torch.argsort(torch.where(candidates, grads, torch.full_like(grads, -1.0)), descending=True)
                candidates = torch.zeros_like(candidates)
                candidates[order[:budget]] = True
        small = max_scale <= self.grow_scale3d * self.extent
        is_clone = candidates & small
        is_split = candidates & ~small
        n_clone, n_split = int(is_clone.sum()), int(is_split.sum())
        if n_clone:
            clone(params, optimizers, is_clone)
            is_split = torch.cat([is_split, is_split.new_zeros(n_clone)])
        if n_split:
            split(params, optimizers, is_split, self.generator)
        # 3. fresh statistics
        n = num_gaussians(params)
        self.grad2d = torch.zeros(n, device=params["means"].device)
        self.count = torch.zeros(n, device=params["means"].device)
        return {"pruned": n_pruned, "cloned": n_clone, "split": n_split, "total": n}

    def state_dict(self) -> dict:
        return {"grad2d": self.grad2d, "count": self.count, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.grad2d, self.count = state["grad2d"], state["count"]
        self.generator.set_state(state["generator"])


class GsplatDefault:
    """gsplat's `DefaultStrategy` behind the `Densifier` interface (for CUDA runs).

    Our render's meta carries means2d [C,N,2] and radii [C,N] (or gsplat's [C,N,2]); the
    strategy also wants width, height, n_cameras and gaussian_ids, which are filled in here.
    gsplat 1.5.3's opacity-reset condition (`step % reset_every == 0 & step > 0`) never fires, so
    the reset is applied here as well (clamping twice to the same value is harmless). No cap.
    """

    def __init__(self, extent: float, *, refine_start: int, refine_stop: int, refine_every: int, reset_every: int,
                 grow_grad2d: float, grow_scale3d: float, prune_opacity: float, prune_scale3d: float) -> None:
        from gsplat.strategy import DefaultStrategy  # only CUDA runs need gsplat here

        self.reset_every = reset_every
        self.refine_stop = refine_stop
        self.prune_opacity = prune_opacity
        self.strategy = DefaultStrategy(
            prune_opa=prune_opacity,
            grow_grad2d=grow_grad2d,
            grow_scale3d=grow_scale3d,
            prune_scale3d=prune_scale3d,
            refine_start_iter=refine_start,
            refine_stop_iter=refine_stop,
            reset_every=reset_every if reset_every > 0 else 10**12,
            refine_every=refine_every,
        )
        self.state = self.strategy.initialize_state(scene_scale=extent)

    def pre_backward(self, meta: dict) -> None:
        meta["means2d"].retain_grad()

    def post_backward(self, params: Params, optimizers: Optimizers, step: int, meta: dict, width: int, height: int) -> dict | None:
        radii = meta["radii"]
        info = {
            "width": width,
            "height": height,
            "n_cameras": meta["means2d"].shape[0],
            "radii": radii if radii.dim() == 3 else torch.stack([radii, radii], dim=-1),
            "gaussian_ids": None,
            "means2d": meta["means2d"],
        }
        n_before = num_gaussians(params)
        self.strategy.step_post_backward(params, optimizers, self.state, step, info, packed=False)
        if self.reset_every > 0 and 0 < step < self.refine_stop and step % self.reset_every == 0:
            reset_opacity(params, optimizers, 2.0 * self.prune_opacity)
        n = num_gaussians(params)
        return {"total": n} if n != n_before else None

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)
