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


def lift_queries(model, views, n: int, means: np.ndarray, neighbours: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Returns (lifted [K, N] uint8 = round(255 * score), visibility [N] float32).

    model: the trained FeatureField; views: TrainView list; means: [N, 3] world positions.
    """
    k = model.queries.shape[0]
    device = model.features.device
    num = torch.zeros(n, k, device=device)
    den = torch.zeros(n, device=device)
    for view in tqdm(views, desc="lift", disable=not progress, leave=False):
        probs = torch.sigmoid(model.logits(view.renderer.features(model.features))).T  # [HW, K]
        s, w = view.renderer.lift(probs)
        num += s
        den += w
    scores = (num / den.clamp_min(1e-12)[:, None]).cpu().numpy()
    visibility = den.cpu().numpy().astype(np.float32)
    unseen = visibility < UNSEEN_VISIBILITY
    if neighbours > 0 and unseen.any() and (~unseen).sum() >= neighbours:
        seen_idx = np.flatnonzero(~unseen)
        tree = cKDTree(means[seen_idx])
        _, nn = tree.query(means[unseen], k=neighbours)
        scores[unseen] = scores[seen_idx[nn.reshape(-1, neighbours)]].mean(axis=1)
    elif unseen.any():
        scores[unseen] = 0.0
    lifted = np.clip(np.round(scores.T * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(lifted), visibility
