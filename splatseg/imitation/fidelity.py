"""Imitation fidelity, SA-NeRF's protocol: SAM's decoder prompted with an n x n grid of single
positive points on the rendered embedding and on the encoder's embedding of the same view; IoU of
the resulting masks.

Per grid point the decoder gives three masks (multimask). Two figures:
- `token`: mask k from the rendered embedding against mask k from the encoder's (k = 0, 1, 2);
- `best`: the highest-scoring mask of each.
A pair is ignored when the encoder's mask covers under `min_area` or over `max_area` of the image
(a nearly empty or nearly full mask makes IoU meaningless). Grid points sit at cell centres:
((i + 0.5) W / n, (j + 0.5) H / n).

Large masks make IoU easy: a randomly initialised SAM's decoder covers about three quarters of the
image per mask, so decoder masks from an unrelated embedding already score ~0.85. Two stricter
figures go beside it: `minority` is the IoU of the smaller side of each encoder mask (the mask or
its complement, whichever covers less, compared with the same side of the other mask), and
`chance` rows (`view_fidelity` on another view's or a spatially constant embedding) give the floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from splatseg.imitation.decoder import PromptDecoder


def grid_points(width: int, height: int, n: int = 5) -> np.ndarray:
    """float64 [n*n, 2] point prompts (x, y) at the centres of an n x n grid over the image."""
    xs = (np.arange(n) + 0.5) * width / n
    ys = (np.arange(n) + 0.5) * height / n
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU over the last two axes of bool arrays [..., H, W] (1 where both are empty)."""
    inter = np.logical_and(a, b).sum((-2, -1))
    union = np.logical_or(a, b).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


@dataclass
class Fidelity:
    """IoUs of one view: token [P, 3], best [P] and minority [P, 3], NaN where the pair is ignored
    (module doc)."""

    token: np.ndarray
    best: np.ndarray
    minority: np.ndarray

    @property
    def minority_mean(self) -> float:
        return float(np.nanmean(self.minority)) if np.isfinite(self.minority).any() else float("nan")

    @property
    def token_mean(self) -> float:
        return float(np.nanmean(self.token)) if np.isfinite(self.token).any() else float("nan")

    @property
    def best_mean(self) -> float:
        return float(np.nanmean(self.best)) if np.isfinite(self.best).any() else float("nan")

    @property
    def counted(self) -> int:
        return int(np.isfinite(self.token).sum())


def view_fidelity(decoder: PromptDecoder, rendered: torch.Tensor, encoded: torch.Tensor, width: int, height: int,
                  n: int = 5, min_area: float = 0.01, max_area: float = 0.99) -> Fidelity:
    """Fidelity of a rendered embedding against the encoder's, both [1, C, g, g], for a W x H view."""
    pts = grid_points(width, height, n)
    ref_masks, ref_scores = decoder.predict_single_points(encoded, width, height, pts)
    got_masks, got_scores = decoder.predict_single_points(rendered, width, height, pts)
    area = ref_masks.mean((-2, -1))  # [P, 3]
    keep = (area >= min_area) & (area <= max_area)
    token = np.where(keep, mask_iou(ref_masks, got_masks), np.nan)
    flip = (area > 0.5)[..., None, None]
    minority = np.where(keep, mask_iou(ref_masks ^ flip, got_masks ^ flip), np.nan)
    rows = np.arange(len(pts))
    rb, gb = ref_scores.argmax(1), got_scores.argmax(1)
    best = mask_iou(ref_masks[rows, rb], got_masks[rows, gb])
    best = np.where(keep[rows, rb], best, np.nan)
    return Fidelity(token=token, best=best, minority=minority)
