"""Lifting the queries' 2D masks onto the Gaussians: blend-weighted evidence plus X-ray votes.

For a Gaussian i, query k and training view v with mask probabilities P_vk (sigmoid of the rendered
logits, at training resolution):

- **blend evidence** (FlashSplat's 2D-to-3D lifting with soft masks; DESIGN.md records why it beats
  per-Gaussian decoding): num_ik = sum_v sum_p w_vip P_vk(p), den_i = sum_v sum_p w_vip, where w_vip
  is the Gaussian's blend weight at pixel p. A Gaussian seen well has a large den_i.
- **X-ray votes**: xs_ik = sum_v P_vk(pixel under the Gaussian's projected centre), xc_i = the number
  of views whose image holds that centre, regardless of what occludes it. A Gaussian hidden in
  every view (a ball's underside, the inside of a handle) gets den_i ~ 0 and no blend evidence,
  but its centre projects inside the object's mask in most views, so its votes say where it
  belongs. A background Gaussian behind an object gets the object's votes in the views where it
  is hidden, and its own in the others, so votes are weak evidence: each view's vote weighs
  `xray_weight` x median(den) (with 0.01 and ~32 views, the votes of a typically seen Gaussian
  weigh about a third of its blend evidence), enough to decide Gaussians the blend evidence
  cannot and too little to overturn one that is seen well.

`evidence_scores` combines the two: score_ik = (num_ik + b xs_ik) / (den_i + b xc_i) with
b = xray_weight * median over seen Gaussians of den. Gaussians with no evidence at all take the mean
score of their nearest neighbours (`fill_unseen`); `refine.py` then propagates scores along
surfaces, and `quantise` stores them as uint8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm

UNSEEN_VISIBILITY = 1e-3
"""Total evidence below which a Gaussian counts as unseen by the training views."""


@dataclass
class LiftEvidence:
    """Per-Gaussian evidence summed over the training views (module docstring); float32 numpy.

    blend_sum [N, K], blend_weight [N] (pixels at training resolution), xray_sum [N, K],
    xray_count [N] (views)."""

    blend_sum: np.ndarray
    blend_weight: np.ndarray
    xray_sum: np.ndarray
    xray_count: np.ndarray


def centre_pixels(means: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel [N] int64 flat row-major index, inside [N] bool): where each Gaussian centre (world,
    [N, 3]) projects in a pinhole view (viewmat [4, 4] world -> camera, K [3, 3]), and whether it lies
    in front of the camera and inside the image."""
    cam = means @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    uv = (cam @ K.T)[:, :2] / z.clamp_min(1e-6)[:, None]
    inside = (z > 1e-2) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    col = uv[:, 0].clamp(0, width - 1).long()
    row = uv[:, 1].clamp(0, height - 1).long()
    return row * width + col, inside


def lift_evidence(model, views, means: torch.Tensor, progress: bool = False,
                  reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> LiftEvidence:
    """Blend evidence and X-ray votes of every query over the training views.

    model: the trained FeatureField; views: TrainView list (their renderers carry viewmat, K, size);
    means: [N, 3] world centres on the model's device; reduce: applied in place to each of the four
    sums before they are returned (under torchrun, the all-reduce that adds the other ranks' views)."""
    n, k = means.shape[0], model.queries.shape[0]
    device = model.features.device
    num = torch.zeros(n, k, device=device)
    den = torch.zeros(n, device=device)
    xs = torch.zeros(n, k, device=device)
    xc = torch.zeros(n, device=device)
    for view in tqdm(views, desc="lift", disable=not progress, leave=False):
        r = view.renderer
        probs = torch.sigmoid(model.logits(r.features(model.features))).T  # [HW, K]
        s, w = r.lift(probs)
        num += s
        den += w
        pix, inside = centre_pixels(means, r.viewmat, r.K, r.width, r.height)
        xs += probs[pix] * inside[:, None]
        xc += inside.float()
    if reduce is not None:
        for t in (num, den, xs, xc):
            reduce(t)
    f = lambda t: t.cpu().numpy().astype(np.float32, copy=False)  # noqa: E731 - no second [N, K] copy
    return LiftEvidence(f(num), f(den), f(xs), f(xc))


def evidence_scores(ev: LiftEvidence, xray_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, K] float32 in [0, 1], support [N] float32): the module docstring's combination
    of blend evidence and X-ray votes (xray_weight 0: blend evidence alone), and each Gaussian's
    total evidence den_i + b xc_i (0: nothing seen; scores 0 there)."""
    seen = ev.blend_weight[ev.blend_weight > UNSEEN_VISIBILITY]
    b = float(xray_weight) * (float(np.median(seen)) if seen.size else 0.0)
    scores = ev.xray_sum * np.float32(b)  # in place from here: one [N, K] array, not four (3M x 128: 1.5 GB each)
    scores += ev.blend_sum
    support = ev.blend_weight + b * ev.xray_count
    scores /= np.maximum(support, 1e-12)[:, None]
    scores[support <= 1e-12] = 0.0
    np.clip(scores, 0.0, 1.0, out=scores)
    return scores.astype(np.float32, copy=False), support.astype(np.float32)


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
