"""Lifting the queries' 2D masks onto the Gaussians through the blend weights.

score[k, i] = sum over training views v and pixels p of w_vip * sigmoid(F_vp . q_k + b_k),
divided by sum over v, p of w_vip (the Gaussian's total visibility). This is FlashSplat's
2D-to-3D lifting with soft masks; DESIGN.md records why it beats per-Gaussian decoding.
Gaussians no training view sees (visibility ~ 0) take the mean score of their nearest seen
neighbours in 3D, so hidden undersides follow the object around them.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm


UNSEEN_VISIBILITY = 1e-3
"""Total blend weight below which a Gaussian counts as unseen by the training views."""


def lift_scores(model, views, n: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, K] float32 in [0, 1], visibility [N] float32): every query's masks from all
    training views lifted onto the Gaussians (score = blend-weighted mean of the mask over the
    pixels a Gaussian contributes to; 0 for a Gaussian no view sees), and each Gaussian's summed
    blend weight (in pixels at training resolution).

    model: the trained FeatureField; views: TrainView list."""
    k = model.queries.shape[0]
    device = model.features.device
    num = torch.zeros(n, k, device=device)
    den = torch.zeros(n, device=device)
    for view in tqdm(views, desc="lift", disable=not progress, leave=False):
        probs = torch.sigmoid(model.logits(view.renderer.features(model.features))).T  # [HW, K]
        s, w = view.renderer.lift(probs)
        num += s
        den += w
    scores = (num / den.clamp_min(1e-12)[:, None]).cpu().numpy().astype(np.float32)
    return scores, den.cpu().numpy().astype(np.float32)


def fill_unseen(scores: np.ndarray, visibility: np.ndarray, means: np.ndarray, neighbours: int) -> np.ndarray:
    """scores [N, K] with every unseen Gaussian (visibility < UNSEEN_VISIBILITY) given the mean score
    of its `neighbours` nearest seen ones (0 when there are too few seen ones, or neighbours is 0)."""
    scores = scores.copy()
    unseen = visibility < UNSEEN_VISIBILITY
    if neighbours > 0 and unseen.any() and (~unseen).sum() >= neighbours:
        seen_idx = np.flatnonzero(~unseen)
        tree = cKDTree(means[seen_idx])
        _, nn = tree.query(means[unseen], k=neighbours)
        scores[unseen] = scores[seen_idx[nn.reshape(-1, neighbours)]].mean(axis=1)
    elif unseen.any():
        scores[unseen] = 0.0
    return scores


def quantise(scores: np.ndarray) -> np.ndarray:
    """[N, K] scores in [0, 1] -> lifted [K, N] uint8 = round(255 * score), C-contiguous."""
    return np.ascontiguousarray(np.clip(np.round(scores.T * 255.0), 0, 255).astype(np.uint8))


def lift_queries(model, views, n: int, means: np.ndarray, neighbours: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Returns (lifted [K, N] uint8 = round(255 * score), visibility [N] float32): `lift_scores`
    with unseen Gaussians filled from their nearest seen neighbours (`fill_unseen`).

    model: the trained FeatureField; views: TrainView list; means: [N, 3] world positions.
    """
    scores, visibility = lift_scores(model, views, n, progress)
    return quantise(fill_unseen(scores, visibility, means, neighbours)), visibility
