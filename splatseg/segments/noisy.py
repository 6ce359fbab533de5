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

Scene-aware extras (all off by default): `support_ids` / `room_ids` name object ids that are not
objects but surfaces (a table top, a floor and wall); each is cut into a random number of Voronoi
pieces at every level independently (`support_pieces`, `room_pieces` ranges), as SAM cuts a large
textured surface. Per-segment failure modes, applied per level after the merges: every segment's
boundary eroded or dilated by 1..`erode_dilate_px` pixels (`erode_dilate_px`), an object's mask
bleeding 4-10 px over the surface it stands on (its shadow, `bleed_prob`), and an object coming out
as its parts at level 0 (`part_as_whole_prob`). `NOISE_LEVELS` holds the named presets
none / low / medium / high used by the evaluation.
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
    support_pieces: tuple[int, int] = (1, 1)
    """Range (inclusive) of Voronoi pieces each support id is cut into, drawn per level."""
    room_pieces: tuple[int, int] = (1, 1)
    """Range (inclusive) of Voronoi pieces each room id (floor, wall) is cut into, drawn per level."""
    erode_dilate_px: int = 0
    """Largest per-segment erosion or dilation of a boundary, in pixels (drawn per segment)."""
    bleed_prob: float = 0.0
    """Probability that an object's mask spills 4-10 px over the surfaces around it (shadows)."""
    part_as_whole_prob: float = 0.0
    """Probability that an object with parts comes out as its parts at level 0 (no whole mask)."""


NOISE_LEVELS: dict[str, NoiseConfig] = {
    "none": NoiseConfig(boundary_px=0, drop_prob=0, merge_prob=0, background_pieces=1, split_prob=0),
    "low": NoiseConfig(boundary_px=1.0, drop_prob=0.05, merge_prob=0.02, background_pieces=2, split_prob=0.2,
                       support_pieces=(1, 4), room_pieces=(1, 1), erode_dilate_px=1, bleed_prob=0.0, part_as_whole_prob=0.02),
    "medium": NoiseConfig(boundary_px=1.5, drop_prob=0.1, merge_prob=0.05, background_pieces=3, split_prob=0.3,
                          support_pieces=(2, 9), room_pieces=(1, 2), erode_dilate_px=3, bleed_prob=0.03, part_as_whole_prob=0.05),
    "high": NoiseConfig(boundary_px=2.5, drop_prob=0.2, merge_prob=0.1, background_pieces=5, split_prob=0.4,
                        support_pieces=(3, 12), room_pieces=(1, 3), erode_dilate_px=4, bleed_prob=0.08, part_as_whole_prob=0.1),
}
"""The evaluation's noise levels. "medium" follows the SAM-like maps of the quality issue: boundaries
eroded or dilated by 1-3 px, 10% of segments dropped, touching segments merged with 5% probability,
the support cut into 2-9 pieces per level and the room into 1-2, ids shuffled per view."""


def simulate_segments(object_ids: np.ndarray, part_ids: np.ndarray | None = None, seed: int = 0,
                      config: NoiseConfig | None = None, support_ids=(), room_ids=()) -> Segments:
    """Noisy multi-level segments of one view; see the module docstring.

    support_ids / room_ids: object ids that are surfaces rather than objects (cut into pieces)."""
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
    surfaces = {int(i): cfg.support_pieces for i in support_ids} | {int(i): cfg.room_pieces for i in room_ids}
    background = _background_pieces(obj < 0, cfg.background_pieces, rng)
    has_part = (part >= 0) & (obj >= 0)
    part_key = np.where(has_part, (obj + 1) * (part.max() + 2) + part, np.where(obj >= 0, -2 - obj, -1))
    whole = obj.copy()
    if cfg.part_as_whole_prob > 0:
        for o in np.unique(obj[has_part]):
            if o not in surfaces and len(np.unique(part[(obj == o) & has_part])) > 1 and rng.random() < cfg.part_as_whole_prob:
                m = obj == o
                whole[m] = np.where(has_part[m], -1_000_000 - part_key[m], whole[m])  # its parts, in an id range of their own
    bases = [whole, part_key]
    if cfg.num_levels == 3:
        bases.append(None)  # level 2 splits level 1's parts
    levels = []
    for li in range(cfg.num_levels):
        if li == 2:
            lab = _split(levels[1], cfg.split_prob, rng)
        else:
            lab = _combine(_cut_surfaces(bases[li], obj, surfaces, rng), background)
        levels.append(lab)
    object_pixels = (obj >= 0) & ~np.isin(obj, list(surfaces))

    out = np.full((len(levels), H, W), -1, np.int64)
    for li, lab in enumerate(levels):
        lab = _merge(lab, cfg.merge_prob, rng)
        lab = _jitter(lab, cfg.boundary_px, cfg.boundary_smoothness, rng)
        lab = _erode_dilate(lab, cfg.erode_dilate_px, rng)
        lab = _bleed(lab, object_pixels, cfg.bleed_prob, rng)
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


def _cut_surfaces(ids: np.ndarray, obj: np.ndarray, surfaces: dict[int, tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    """`ids` with each surface id's pixels cut into a random number of Voronoi pieces, each piece
    a new id (below every id in use, so no piece collides with an object or part)."""
    if not surfaces:
        return ids
    out = ids.copy()
    low = int(min(ids.min(), -3)) - 1
    for sid, (lo, hi) in sorted(surfaces.items()):
        m = obj == sid
        if not m.any():
            continue
        pieces = _background_pieces(m, int(rng.integers(lo, hi + 1)), rng)
        out[m] = low - pieces[m]
        low = int(out.min()) - 1
    return out


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


def _erode_dilate(labels: np.ndarray, px: int, rng: np.random.Generator) -> np.ndarray:
    """Each segment eroded (pixels become -1) or dilated (over its neighbours) by 1..px pixels;
    erosions first, then dilations in random order."""
    n = int(labels.max()) + 1
    if px <= 0 or n == 0:
        return labels
    amount = rng.integers(1, px + 1, n) * rng.choice([-1, 1], n)
    out = labels.copy()
    for s in np.flatnonzero(amount < 0):
        m = labels == s
        if m.any():
            out[m & ~ndi.binary_erosion(m, iterations=int(-amount[s]), border_value=1)] = -1  # the image border is no boundary
    for s in rng.permutation(np.flatnonzero(amount > 0)):
        m = labels == s
        if m.any():
            out[ndi.binary_dilation(m, iterations=int(amount[s]))] = s
    return out


def _bleed(labels: np.ndarray, object_pixels: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """With probability `prob` per segment lying on objects, its mask spills 4-10 px over the
    non-object pixels around it (a shadow or the support taken along)."""
    n = int(labels.max()) + 1
    if prob <= 0 or n == 0:
        return labels
    out = labels.copy()
    for s in range(n):
        m = labels == s
        if not m.any() or object_pixels[m].mean() < 0.5 or rng.random() >= prob:
            continue
        grow = ndi.binary_dilation(m, iterations=int(rng.integers(4, 11))) & ~object_pixels
        out[grow] = s
    return out


def _drop(labels: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    n = int(labels.max()) + 1
    if prob <= 0 or n == 0:
        return labels
    gone = rng.random(n) < prob
    return compact_labels(np.where((labels >= 0) & gone[np.maximum(labels, 0)], -1, labels))
