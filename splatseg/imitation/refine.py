"""A short per-object refinement of a lifted selection with SANeRF-HQ's ray-pair RGB loss.

Per-Gaussian object logits s [N] start at logit(lifted score) and are optimised, with the geometry
frozen, through the blend weights of the prompted views (at the lifting resolution):
- data: binary cross-entropy between the rendered object probability p = (W sigmoid(s)) / alpha and
  the view's decoder mask (area-averaged to that resolution), on covered pixels;
- ray pairs: pixel pairs (a, b) at most `radius` pixels apart, weighted by their colour similarity
  w_ab = exp(-|c_a - c_b|^2 / (2 sigma^2)) (c: the splats' rendered colour), pay
  w_ab |p_a - p_b|, so nearby rays of similar colour share a label while a colour edge costs
  nothing to cut: a mask edge that does not follow a colour edge moves onto it;
- prior: (sigmoid(s) - lifted score)^2, keeping Gaussians no pair constrains where lifting put them.
loss = data + pair_weight * ray pairs + prior_weight * prior; Adam, `steps` views drawn at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from splatseg.imitation.aggregate import LiftViews, resize_soft
from splatseg.imitation.views import MIN_ALPHA
from splatseg.render import composite


@dataclass(frozen=True)
class RefineConfig:
    """Ray-pair refinement settings (module doc)."""

    steps: int = 200
    lr: float = 0.1
    pair_weight: float = 4.0
    prior_weight: float = 0.05
    radius: int = 2
    colour_sigma: float = 0.08
    pairs_per_step: int = 16384
    seed: int = 0


def _pair_offsets(radius: int) -> torch.Tensor:
    r = range(-radius, radius + 1)
    return torch.tensor([(dx, dy) for dx in r for dy in r if (dx, dy) != (0, 0) and dx * dx + dy * dy <= radius * radius])


def refine_scores(scores: np.ndarray, lift_views: LiftViews, masks: dict[int, np.ndarray], rgb: np.ndarray,
                  cfg: RefineConfig = RefineConfig()) -> np.ndarray:
    """Refined scores [N] in [0, 1] from lifted scores [N], the masks {training view: [H, W]} they
    were lifted from, and per-Gaussian colours rgb [N, 3] in [0, 1]."""
    if not masks or cfg.steps <= 0:
        return np.asarray(scores, np.float32)
    dev = lift_views.run.params["means"].device
    n = len(scores)
    prior = torch.from_numpy(np.clip(np.asarray(scores, np.float32), 0.0, 1.0)).to(dev)
    logits = torch.logit(prior.clamp(0.02, 0.98)).clone().requires_grad_(True)
    colour = torch.from_numpy(np.ascontiguousarray(rgb, np.float32)).to(dev)
    views = []
    with torch.no_grad():
        for i, m in masks.items():
            bw = lift_views.weights(i)
            alpha = torch.bincount(bw.pixel.long(), weights=bw.weight, minlength=bw.width * bw.height).float().to(dev)
            c = composite(bw, colour).reshape(-1, 3) / alpha.clamp_min(1e-6)[:, None]
            target = resize_soft(m, bw.width, bw.height).reshape(-1).to(dev)
            views.append((bw, alpha, c, target))
    offsets = _pair_offsets(cfg.radius).to(dev)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    optim = torch.optim.Adam([logits], lr=cfg.lr)
    for _ in range(cfg.steps):
        bw, alpha, c, target = views[int(torch.randint(len(views), (1,), generator=gen))]
        W, H = bw.width, bw.height
        p = composite(bw, torch.sigmoid(logits)[:, None]).reshape(-1) / alpha.clamp_min(1e-6)
        covered = alpha >= MIN_ALPHA
        data = torch.nn.functional.binary_cross_entropy(p[covered].clamp(1e-4, 1 - 1e-4), target[covered].clamp(0, 1))
        a = torch.randint(W * H, (cfg.pairs_per_step,), generator=gen).to(dev)
        o = offsets[torch.randint(len(offsets), (cfg.pairs_per_step,), generator=gen).to(dev)]
        x, y = a % W + o[:, 0], a // W + o[:, 1]
        ok = (x >= 0) & (x < W) & (y >= 0) & (y < H)
        a, b = a[ok], (y * W + x)[ok]
        ok = covered[a] & covered[b]
        a, b = a[ok], b[ok]
        w = torch.exp(-((c[a] - c[b]) ** 2).sum(1) / (2 * cfg.colour_sigma**2))
        pairs = (w * (p[a] - p[b]).abs()).mean() if len(a) else p.new_zeros(())
        reg = ((torch.sigmoid(logits) - prior) ** 2).mean()
        loss = data + cfg.pair_weight * pairs + cfg.prior_weight * reg
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return torch.sigmoid(logits).detach().cpu().numpy().astype(np.float32)[:n]
