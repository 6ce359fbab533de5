"""A simulator of SAM's failure modes, for tests and benchmarks: ground-truth ids -> noisy
multi-level `Segments` of one view.

Input: object_ids int [H, W] and part_ids int [H, W] (-1 = background / no part). Levels:
  0 whole objects (+ the background in `background_pieces` random pieces),
  1 parts (object pixels without a part keep their object: a whole object is also its own part),
  2 parts again, each split in two along a random line with probability `split_prob`.
Noise, applied per level in this order: merges of touching segments (`merge_prob` per touching
pair), boundary jitter (labels warped by a smooth random displacement of up to `boundary_px`
pixels), dropped segments (`drop_prob`, pixels become -1), then random numbering (indices unique
across levels, shuffled). With every knob at 0 (and background_pieces 0 or 1) the output equals the
ground truth up to renumbering. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from splatseg.segments.cache import compact_labels
from splatseg.types import Segments


@dataclass(frozen=True)
class NoiseConfig:
    """Knobs of the SAM failure simulator (0 = off)."""

    boundary_px: float = 2.0
    """Largest boundary displacement in pixels (a smooth random warp of each level's labels)."""
    boundary_smoothness: float = 6.0
    """Correlation length (pixels) of the boundary displacement field."""
    drop_prob: float = 0.1
    """Probability that a segment is missing at a level (its pixels become -1)."""
    merge_prob: float = 0.05
    """Probability that a pair of touching segments comes out as one segment."""
    background_pieces: int = 4
    """Pieces the background (-1 in object_ids) is cut into at every level; 0 = leave it -1."""
    split_prob: float = 0.3
    """Probability that a part is split in two at level 2 (over-segmentation)."""
    num_levels: int = 3
    """Levels to produce (1 to 3)."""


def simulate_segments(object_ids: np.ndarray, part_ids: np.ndarray | None = None, seed: int = 0,
                      config: NoiseConfig | None = None) -> Segments:
    """Noisy multi-level segments of one view; see the module docstring."""
    cfg = config or NoiseConfig()
    if not 1 <= cfg.num_levels <= 3:
        raise ValueError(f"num_levels must be 1, 2 or 3, got {cfg.num_levels}")
    obj = np.asarray(object_ids).astype(np.int64)
    if obj.ndim != 2:
        raise ValueError(f"object_ids must be [H, W], got shape {obj.shape}")
    part = np.full(obj.shape, -1, np.int64) if part_ids is None else np.asarray(part_ids).astype(np.int64)
    if part.shape != obj.shape:
        raise ValueError(f"part_ids {part.shape} must match object_ids {obj.shape}")
    rng = np.random.default_rng(seed)
    H, W = obj.shape

    # Ground-truth levels as compact labels (-1 = none).
    background = _background_pieces(obj < 0, cfg.background_pieces, rng)
    level0 = _combine(obj, background)
    has_part = (part >= 0) & (obj >= 0)
    level1 = _combine(np.where(has_part, (obj + 1) * (part.max() + 2) + part, np.where(obj >= 0, -2 - obj, -1)), background)
    levels = [level0, level1]
    if cfg.num_levels == 3:
        levels.append(_split(level1, cfg.split_prob, rng))
    levels = levels[: cfg.num_levels]

    out = np.full((len(levels), H, W), -1, np.int64)
    for li, lab in enumerate(levels):
        lab = _merge(lab, cfg.merge_prob, rng)
        lab = _jitter(lab, cfg.boundary_px, cfg.boundary_smoothness, rng)
        lab = _drop(lab, cfg.drop_prob, rng)
        out[li] = lab
    # Unique across levels, randomly numbered.
    offset = 0
    for li in range(out.shape[0]):
        m = out[li] >= 0
        if m.any():
            out[li][m] += offset
            offset = int(out[li].max()) + 1
    perm = rng.permutation(offset)
    segmaps = np.full(out.shape, -1, np.int32)
    segmaps[out >= 0] = perm[out[out >= 0]]
    scores = rng.uniform(0.8, 1.0, offset).astype(np.float32)
    return Segments(segmaps=segmaps, scores=scores, model="noisy-sim")


def _combine(ids: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Labels from `ids` (any ints; -1 = background) with the background pieces appended."""
    fg = ids != -1
    out = np.full(ids.shape, -1, np.int64)
    if fg.any():
        out[fg] = np.unique(ids[fg], return_inverse=True)[1]
    n = int(out.max()) + 1
    bg = background >= 0
    out[bg] = background[bg] + n
    return out


def _background_pieces(mask: np.ndarray, pieces: int, rng: np.random.Generator) -> np.ndarray:
    """Cut `mask` into up to `pieces` Voronoi cells around random pixels of it; -1 elsewhere."""
    out = np.full(mask.shape, -1, np.int64)
    if pieces <= 0 or not mask.any():
        return out
    ys, xs = np.nonzero(mask)
    pick = rng.choice(len(ys), size=min(pieces, len(ys)), replace=False)
    seeds = np.zeros(mask.shape, np.int64)
    seeds[ys[pick], xs[pick]] = np.arange(1, len(pick) + 1)
    _, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    out[mask] = seeds[iy, ix][mask] - 1
    return compact_labels(out)


def _split(labels: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Split each segment in two along a random line through its centroid with probability `prob`."""
    out = labels.copy()
    n = int(labels.max()) + 1
    if prob <= 0 or n == 0:
        return out
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    nxt = n
    for s in range(n):
        if rng.random() >= prob:
            continue
        m = labels == s
        if m.sum() < 2:
            continue
        cy, cx = yy[m].mean(), xx[m].mean()
        a = rng.uniform(0, np.pi)
        side = (np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)) > 0
        if (m & side).any() and (m & ~side).any():
            out[m & side] = nxt
            nxt += 1
    return compact_labels(out)


def _merge(labels: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Union touching segments (4-neighbours), each touching pair with probability `prob`."""
    n = int(labels.max()) + 1
    if prob <= 0 or n < 2:
        return labels
    pairs = set()
    for a, b in ((labels[:, 1:], labels[:, :-1]), (labels[1:], labels[:-1])):
        m = (a >= 0) & (b >= 0) & (a != b)
        for p, q in zip(a[m].tolist(), b[m].tolist()):
            pairs.add((min(p, q), max(p, q)))
    root = np.arange(n)

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for p, q in sorted(pairs):
        if rng.random() < prob:
            rp, rq = find(p), find(q)
            if rp != rq:
                root[max(rp, rq)] = min(rp, rq)
    roots = np.array([find(i) for i in range(n)])
    return compact_labels(np.where(labels >= 0, roots[np.maximum(labels, 0)], -1))


def _jitter(labels: np.ndarray, amplitude: float, smoothness: float, rng: np.random.Generator) -> np.ndarray:
    """Warp labels by a smooth random displacement field of max magnitude ~`amplitude` pixels."""
    if amplitude <= 0:
        return labels
    H, W = labels.shape
    disp = []
    for _ in range(2):
        f = ndi.gaussian_filter(rng.normal(size=(H, W)), max(smoothness, 0.5), mode="wrap")
        f /= max(np.abs(f).max(), 1e-12)
        disp.append(f * amplitude)
    yy, xx = np.mgrid[:H, :W]
    sy = np.clip(np.rint(yy + disp[0]), 0, H - 1).astype(np.int64)
    sx = np.clip(np.rint(xx + disp[1]), 0, W - 1).astype(np.int64)
    return labels[sy, sx]


def _drop(labels: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    n = int(labels.max()) + 1
    if prob <= 0 or n == 0:
        return labels
    gone = rng.random(n) < prob
    return compact_labels(np.where((labels >= 0) & gone[np.maximum(labels, 0)], -1, labels))
