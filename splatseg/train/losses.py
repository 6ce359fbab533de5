"""Mask losses and matching costs (pure functions, MaskField / Mask2Former style).

Shapes: logits [A, P] (A masks over P pixels), targets [A, P] or [M, P] in {0, 1}.
Pairwise costs return [K, M] for K predicted masks against M target masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _focal_terms(logits: Tensor, alpha: float, gamma: float) -> tuple[Tensor, Tensor]:
    """Per-entry focal loss against target 1 and against target 0 (from one logsigmoid)."""
    log_p = F.logsigmoid(logits)
    log_q = log_p - logits  # log(1 - p)
    p = log_p.exp()
    q = 1 - p
    if gamma == 2.0:
        pos_mod, neg_mod = q * q, p * p
    else:
        pos_mod, neg_mod = q**gamma, p**gamma
    return -alpha * pos_mod * log_p, -(1 - alpha) * neg_mod * log_q


def focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Mean sigmoid focal loss (Lin et al.) over all entries of [A, P]."""
    pos, neg = _focal_terms(logits, alpha, gamma)
    return (targets * pos + (1 - targets) * neg).mean()


def focal_loss_to_zero(logits: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """focal_loss(logits, zeros) without building the zero targets."""
    log_p = F.logsigmoid(logits)
    p = log_p.exp()
    mod = p * p if gamma == 2.0 else p**gamma
    return (-(1 - alpha) * mod * (log_p - logits)).mean()


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the A masks of 1 - soft Dice."""
    prob = logits.sigmoid()
    num = 2 * (prob * targets).sum(-1)
    den = prob.sum(-1) + targets.sum(-1)
    return (1 - (num + 1) / (den + 1)).mean()


def pairwise_focal_cost(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """[K, M] mean focal loss of each predicted mask against each target mask."""
    pos, neg = _focal_terms(logits, alpha, gamma)
    return (pos @ targets.T + neg.sum(-1, keepdim=True) - neg @ targets.T) / logits.shape[-1]


def pairwise_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """[K, M] 1 - soft Dice of each predicted mask against each target mask."""
    prob = logits.sigmoid()
    num = 2 * prob @ targets.T
    den = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def pairwise_cosine_cost(pred: Tensor, target: Tensor) -> Tensor:
    """[K, M] 1 - cosine similarity between predicted [K, E] and target [M, E] vectors."""
    return 1 - F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T
