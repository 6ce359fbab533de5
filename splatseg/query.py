"""Click and text prompts -> per-Gaussian scores -> selection. Pure functions over a trained `Field`.

How a click becomes a selection:
1. The rendered feature F [D] under the click (from the view's stored feature map, or rendered
   along a ray for an arbitrary camera).
2. Mask logits of the K queries at that pixel: F . q_k + b_k. Queries with a positive logit are
   "active" there.
3. Which queries hold the click in 3D: the lifted scores rendered along the click's ray (the
   clicked surface's 3D score under each query, `scores_at` [K]). A query is a candidate when it
   is active and its 3D score there is at least `MEMBERSHIP` (a query active in 2D whose lifted
   selection misses the clicked surface, e.g. a background query leaking over an object, is not);
   the most confident candidate p is the click's own segment. "whole" walks up from p to the
   largest query whose selection contains p's (containment [K, K] stored by training, at least
   `CONTAINS`) and also holds the click; "part" takes the most confident candidate inside that
   whole, other than the whole itself (p when there is none). Runs without the stored cameras or
   containment, or prompts without 3D scores, fall back to the 2D rule: "whole" is the active
   query with the largest 3D extent, "part" the most confident of the smaller active ones.
4. The chosen query's lifted score column [N] (its masks from every training view pushed back onto
   the Gaussians through the blend weights) thresholded gives the selection. Several positive
   clicks take the maximum of their columns; a Gaussian is dropped when a negative click's column
   scores it at least as high.
5. Large splats need a confident score (`drop_unsure_large_splats`): a selected Gaussian whose
   footprint (product of its two largest scales, stored by training) exceeds `LARGE_SPLAT_FACTOR`
   times the selection's median footprint stays only with a score above
   `LARGE_SPLAT_SCORE`. A big table or wall splat touching an object is seen mostly around the
   object's outline, where masks are dilated and soft, so it reaches scores of 0.3-0.6 and, being
   big, paints a sheet of background around the export; the object's own splats are rarely that
   much larger than their neighbours. Chosen on the generated family's tuning seeds 100-103
   (area-weighted 3D IoU 0.822 -> 0.926, held-out 2D 0.937 -> 0.946; factors 6-16 and scores
   0.6-1.0 all within 0.02 of it), checked on held-out seeds 200-209 (README).
A click costs one [K, D] product and a few passes over N values.

A 3D point prompt (`Point`, world coordinates of the splats) means the object whose surface is at or
nearest to the point: `SurfaceIndex.snap` moves it to the nearest opaque Gaussian (refused when it
lies outside the scene's bounds, or farther than a tolerance relative to the scene's size from every
surface and not enclosed by surfaces, as it is inside a hollow object); the lifted scores of the
Gaussians around that surface point, weighted by opacity and distance, play the part of a click's
logits (`pick_query_at_gaussians`). Projecting the point into the views where it passes a depth
test and taking the clicked-pixel path picked the same query on every prompt of
scripts/eval_plyonly.py (70 of 70), so the neighbourhood answer, which needs no rendering, is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy.spatial import cKDTree

from splatseg.run import Field
from splatseg.semantics.clip import CANONICAL_NEGATIVES, relevancy

__all__ = ["CANONICAL_NEGATIVES", "Click", "Granularity", "Point", "QueryError", "Selection", "SurfaceIndex", "select_by_clicks",
           "select_by_feature", "select_by_points", "select_by_text"]

Granularity = Literal["whole", "part"]

DEFAULT_THRESHOLD = 0.3
"""Lifted score above which a Gaussian belongs to the selection."""

MEMBERSHIP = 0.5
"""3D score at the prompt (lifted scores rendered along the click's ray) from which a query holds it."""

CONTAINS = 0.7
"""Share of a query's selection another must hold to count as containing it ("whole" walks up)."""


LARGE_SPLAT_FACTOR = 8.0
"""A selected splat with a footprint above this many times the selection's median is a large one."""

LARGE_SPLAT_SCORE = 0.8
"""Lifted score a large splat needs to stay in a selection (step 5 of the module docstring)."""

MEDIAN_SAMPLE = 4096
"""The selection's median footprint is taken over about this many of its Gaussians (an even stride
through the file), so the rule costs elementwise passes over N and no sort of the whole selection."""


class QueryError(ValueError):
    """A prompt that cannot be answered (unknown image, click outside it, nothing found)."""


@dataclass(frozen=True)
class Click:
    """A point prompt in pixel coordinates of the image named by `stem` (x right, y down,
    origin at the top-left corner; the centre of pixel (i, j) is (i + 0.5, j + 0.5))."""

    stem: str
    x: float
    y: float
    positive: bool = True


@dataclass(init=False, eq=False)
class Selection:
    """mask [N] bool, scores [N] float32 in [0, 1], and the query indices that produced them.

    Made from the run's uint8 lifted scores (`score_bytes` [N]), the float scores are computed on
    first read: a click needs only the mask, and converting N bytes to floats is a large part of a
    click at millions of Gaussians (`scripts/bench_query.py`)."""

    mask: np.ndarray
    queries: list[int]
    negative_queries: list[int]
    text_backend: str | None  # for text prompts: "clipseg" or "clip" (splatseg.text_query)
    large_dropped: int  # Gaussians the large-splat rule (module docstring, step 5) took out

    def __init__(self, mask: np.ndarray, scores: np.ndarray | None = None, queries: Sequence[int] = (), negative_queries: Sequence[int] = (),
                 text_backend: str | None = None, large_dropped: int = 0, *, score_bytes: np.ndarray | None = None):
        if (scores is None) == (score_bytes is None):
            raise ValueError("a Selection needs either scores (float, [0, 1]) or score_bytes (uint8), not both")
        self.mask, self.queries, self.negative_queries = mask, list(queries), list(negative_queries)
        self.text_backend, self.large_dropped = text_backend, large_dropped
        self._scores, self._score_bytes = scores, score_bytes

    @property
    def scores(self) -> np.ndarray:
        """[N] float32 in [0, 1]."""
        if self._scores is None:
            self._scores = self._score_bytes.astype(np.float32) / 255.0
        return self._scores

    @property
    def count(self) -> int:
        return int(self.mask.sum())


def pixel_feature(fld: Field, click: Click) -> np.ndarray:
    """Feature [D] under a click, from the stored feature map of that view (nearest texel)."""
    try:
        v = fld.view_names.index(click.stem)
    except ValueError:
        raise QueryError(f"unknown image name {click.stem!r} (the run knows {len(fld.view_names)} images, e.g. {fld.view_names[:3]})") from None
    W, H = (int(s) for s in fld.image_sizes[v])
    if not (np.isfinite(click.x) and np.isfinite(click.y) and 0 <= click.x < W and 0 <= click.y < H):
        raise QueryError(f"click ({click.x}, {click.y}) is outside image {click.stem!r} of size {W}x{H}")
    h, w = fld.view_maps.shape[1:3]
    col = min(int(click.x * w / W), w - 1)
    row = min(int(click.y * h / H), h - 1)
    return fld.view_maps[v, row, col].astype(np.float32)


def query_logits(fld: Field, feature: np.ndarray) -> np.ndarray:
    """[K] mask logits of every query at a pixel whose rendered feature is `feature` [D]."""
    return fld.queries @ feature.astype(np.float32) + fld.query_bias


def pick_query(fld: Field, feature: np.ndarray, granularity: Granularity = "whole", scores_at: np.ndarray | None = None) -> int:
    """Index of the query answering a click with rendered feature `feature` [D] and, when known,
    the 3D scores `scores_at` [K] in [0, 1] of the clicked surface (module doc, step 3)."""
    return pick_with_membership(fld, query_logits(fld, feature), scores_at, granularity)


def pick_with_membership(fld: Field, logits: np.ndarray, scores_at: np.ndarray | None, granularity: Granularity = "whole") -> int:
    """The query answering a prompt with per-query 2D evidence `logits` [K] (> 0: active) and 3D
    scores `scores_at` [K] at the prompt (module doc, step 3); the 2D rule without them."""
    if scores_at is None or fld.containment is None:
        return pick_from_logits(fld, logits, granularity)
    held = scores_at >= MEMBERSHIP
    candidates = np.flatnonzero((logits > 0) & held)
    if candidates.size == 0:
        candidates = np.flatnonzero(held)
    if candidates.size == 0:  # no query holds the clicked surface: the one that comes closest
        return int(np.argmax(scores_at))
    p = int(candidates[np.argmax(logits[candidates])])
    up = np.flatnonzero((fld.containment[p] >= CONTAINS) & held)
    whole = int(up[np.argmax(fld.query_size[up])]) if up.size else p
    if granularity == "whole":
        return whole
    inside = candidates[(candidates != whole) & (fld.containment[candidates, whole] >= CONTAINS)]
    return int(inside[np.argmax(logits[inside])]) if inside.size else p


def click_ray(fld: Field, click: Click) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(origin [3], unit direction [3], focal length in pixels): the world ray through a click's
    pixel in its view's stored camera (world frame of the run); None for runs without cameras."""
    if fld.view_viewmats is None or fld.view_Ks is None:
        return None
    v = fld.view_names.index(click.stem)
    viewmat = fld.view_viewmats[v].astype(np.float64)
    K = fld.view_Ks[v].astype(np.float64)
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    d_cam = np.linalg.solve(K, np.array([click.x, click.y, 1.0]))
    d = R.T @ d_cam
    return -R.T @ t, d / np.linalg.norm(d), float(K[1, 1])


def pick_from_logits(fld: Field, logits: np.ndarray, granularity: Granularity = "whole") -> int:
    """Index of the query answering a prompt whose per-query evidence is `logits` [K] (> 0: the
    query is active there); see the module doc, steps 2-3."""
    active = np.flatnonzero(logits > 0)
    if active.size == 0:
        return int(np.argmax(logits))  # nothing confident: the least unconfident query
    by_size = active[np.argsort(-fld.query_size[active], kind="stable")]
    whole = int(by_size[0])
    if granularity == "whole" or by_size.size == 1:
        return whole
    smaller = by_size[1:]
    return int(smaller[np.argmax(logits[smaller])])


def query_scores(fld: Field, k: int) -> np.ndarray:
    """Lifted score [N] float32 in [0, 1] of query k."""
    return fld.lifted[k].astype(np.float32) * (1.0 / 255.0)


def score_cut(threshold: float) -> np.uint8:
    """The uint8 lifted score a Gaussian must exceed to pass `threshold` (in [0, 1])."""
    return np.uint8(min(255, max(0, int(threshold * 255))))


def drop_unsure_large_splats(fld: Field, mask: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`mask` [N] bool without the large splats (footprint > LARGE_SPLAT_FACTOR x the selection's
    median) whose lifted score `scores` [N] uint8 is at most LARGE_SPLAT_SCORE (a threshold above
    it has already removed them from `mask`); unchanged for runs without stored footprints and for
    selections of under 20 Gaussians.

    Cost: a few elementwise passes over N (no sort, no index list of the selection): the median is
    taken over the selected Gaussians met at an even stride through the N (about MEDIAN_SAMPLE)."""
    if fld.footprint is None:
        return mask
    selected = np.count_nonzero(mask)
    if selected < 20:
        return mask
    stride = max(1, selected // MEDIAN_SAMPLE)  # about MEDIAN_SAMPLE of the selected, wherever they lie in the file
    sample = fld.footprint[::stride][mask[::stride]]
    if sample.size < 20:
        sample = fld.footprint[mask]
    ref = float(np.median(sample))
    unsure = scores <= score_cut(LARGE_SPLAT_SCORE)  # in place from here: few [N] temporaries
    unsure &= mask
    unsure &= fld.footprint > np.float32(LARGE_SPLAT_FACTOR * ref)
    return mask ^ unsure  # unsure is inside mask


def combine(fld: Field, positive: Sequence[int], negative: Sequence[int] = (), threshold: float = DEFAULT_THRESHOLD) -> Selection:
    """Selection from query indices: max over positives, dropped where a negative is as high."""
    if not positive:
        raise QueryError("at least one positive prompt is needed")
    pos = fld.lifted[positive[0]] if len(positive) == 1 else fld.lifted[list(positive)].max(axis=0)  # uint8 [N] (one query: a view)
    mask = pos > score_cut(threshold)
    if negative:
        neg = fld.lifted[negative[0]] if len(negative) == 1 else fld.lifted[list(negative)].max(axis=0)
        mask &= pos > neg
    kept = drop_unsure_large_splats(fld, mask, pos)
    return Selection(mask=kept, score_bytes=pos, queries=list(positive), negative_queries=list(negative),
                     large_dropped=int(np.count_nonzero(mask) - np.count_nonzero(kept)))


def select_by_clicks(fld: Field, clicks: Sequence[Click], granularity: Granularity = "whole", threshold: float = DEFAULT_THRESHOLD,
                     scores_at=None) -> Selection:
    """Selection for point prompts in the scene's images (see `Click`). `scores_at(click) -> [K] | None`
    gives the 3D scores of the clicked surface (`prompts.click_scores`); without it the 2D rule."""
    if not any(c.positive for c in clicks):
        raise QueryError("at least one positive click is needed")
    at = (lambda c: None) if scores_at is None else scores_at
    pos = [pick_query(fld, pixel_feature(fld, c), granularity, at(c)) for c in clicks if c.positive]
    neg = [pick_query(fld, pixel_feature(fld, c), "part", at(c)) for c in clicks if not c.positive]
    neg = [k for k in neg if k not in pos]
    return combine(fld, pos, neg, threshold)


def select_by_feature(fld: Field, features: Sequence[np.ndarray], negatives: Sequence[np.ndarray] = (), granularity: Granularity = "whole",
                      threshold: float = DEFAULT_THRESHOLD, scores: Sequence[np.ndarray | None] | None = None,
                      negative_scores: Sequence[np.ndarray | None] | None = None) -> Selection:
    """Selection for rendered features [D] of positive and negative points (the viewer's clicks),
    with the 3D scores [K] of each clicked surface when known (aligned lists; None: the 2D rule)."""
    scores = list(scores) if scores is not None else [None] * len(features)
    negative_scores = list(negative_scores) if negative_scores is not None else [None] * len(negatives)
    pos = [pick_query(fld, f, granularity, a) for f, a in zip(features, scores)]
    neg = [k for k in (pick_query(fld, f, "part", a) for f, a in zip(negatives, negative_scores)) if k not in pos]
    return combine(fld, pos, neg, threshold)


def rank_queries_by_text(fld: Field, text_embedding: np.ndarray, negative_embeddings: np.ndarray) -> np.ndarray:
    """[K] LERF relevancy of each query's CLIP vector to a text embedding [E] against canonical
    negatives [Q, E] (`splatseg.semantics.clip.relevancy`); -inf for queries that select nothing."""
    if not fld.clip_has_weights:
        raise QueryError("text prompts need CLIP embeddings from real weights; this run was trained without them (see `splatseg train --help`, --clip-pretrained)")
    clip = fld.query_clip / np.maximum(np.linalg.norm(fld.query_clip, axis=1, keepdims=True), 1e-8)
    rel = relevancy(text_embedding, clip, negative_embeddings)
    rel[fld.query_size <= 0] = -np.inf
    return rel


def select_by_text(fld: Field, text_embedding: np.ndarray, negative_embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Selection:
    """Selection of the query whose CLIP vector best matches the text embedding."""
    rel = rank_queries_by_text(fld, text_embedding, negative_embeddings)
    return combine(fld, [int(np.argmax(rel))], (), threshold)


def discover_objects(fld: Field, threshold: float = DEFAULT_THRESHOLD, min_gaussians: int = 50, max_overlap: float = 0.5) -> list[tuple[int, np.ndarray]]:
    """Whole objects found by the field: queries taken largest first, each kept when at least
    `min_gaussians` of its selected Gaussians are not yet claimed and it overlaps the claimed
    ones by at most `max_overlap` of its own size. Returns [(query, mask [N] bool)], disjoint."""
    cut = score_cut(threshold)
    claimed = np.zeros(fld.num_gaussians, bool)
    objects = []
    for k in np.argsort(-fld.query_size, kind="stable"):
        mask = drop_unsure_large_splats(fld, fld.lifted[k] > cut, fld.lifted[k])
        size = int(mask.sum())
        if size < min_gaussians:
            continue
        fresh = mask & ~claimed
        if fresh.sum() < min_gaussians or (size - fresh.sum()) > max_overlap * size:
            continue
        objects.append((int(k), fresh))
        claimed |= fresh
    return objects


# ---------------------------------------------------------------------------- 3D point prompts

SNAP_TOLERANCE = 0.05
"""A point prompt may lie at most this fraction of the scene's size (the diagonal of its robust
bounds) from the nearest opaque Gaussian; farther away it is refused."""
ENCLOSED_TOLERANCE = 0.25
"""A point farther than `SNAP_TOLERANCE` is still answered when surfaces enclose it (it lies inside a
hollow object: rays from it meet a surface in at least `ENCLOSED_FRACTION` of the directions) and
the nearest surface is within this fraction of the scene's size."""
ENCLOSED_FRACTION = 0.9
"""Fraction of ray directions that must meet a surface for a point to count as enclosed."""
SURFACE_MIN_OPACITY = 0.3
"""Gaussians at least this opaque make up the surfaces that point prompts snap to."""
POINT_NEIGHBOURS = 16
"""Gaussians around the snapped surface point whose lifted scores answer a point prompt."""


@dataclass(frozen=True)
class Point:
    """A 3D prompt in the splats' world coordinates: the object whose surface is at or nearest
    to (x, y, z)."""

    x: float
    y: float
    z: float
    positive: bool = True

    @property
    def xyz(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z], np.float64)


@dataclass
class SurfaceIndex:
    """The surfaces that point prompts snap to: a KD-tree over the opaque Gaussians' centres, the
    scene's bounds (box of every finite centre, widened by `SNAP_TOLERANCE` x size) and its size
    (diagonal of the 1%-99% quantile box of the opaque centres, so a few far floaters do not
    loosen the tolerance)."""

    means: np.ndarray  # [N, 3] float64, every Gaussian
    opacities: np.ndarray  # [N] float64
    surface: np.ndarray  # [S] int64 indices of the surface Gaussians
    tree: cKDTree  # over means[surface]
    lo: np.ndarray  # [3]
    hi: np.ndarray  # [3]
    size: float
    spacing: float  # median distance from a surface Gaussian to its 4th nearest one

    @classmethod
    def build(cls, means: np.ndarray, opacities: np.ndarray) -> "SurfaceIndex":
        means = np.asarray(means, np.float64)
        opacities = np.asarray(opacities, np.float64)
        finite = np.isfinite(means).all(1) & np.isfinite(opacities)
        if not finite.any():
            raise QueryError("the splats have no Gaussian with finite coordinates")
        surface = np.flatnonzero(finite & (opacities >= SURFACE_MIN_OPACITY))
        if surface.size == 0:  # nothing that opaque: every visible Gaussian is a surface
            surface = np.flatnonzero(finite & (opacities > 1.0 / 255))
        if surface.size == 0:
            raise QueryError("the splats have no visible Gaussian for a point prompt to snap to")
        pts = means[surface]
        size = float(np.linalg.norm(np.quantile(pts, 0.99, axis=0) - np.quantile(pts, 0.01, axis=0)))
        tree = cKDTree(pts)
        sample = pts[np.random.default_rng(0).permutation(len(pts))[:20000]]
        spacing = float(np.median(tree.query(sample, k=min(5, len(pts)))[0][:, -1])) if len(pts) > 1 else size
        size = max(size, 1e-12)
        margin = SNAP_TOLERANCE * size  # a point just off the outermost surface still snaps to it
        return cls(means, opacities, surface, tree, means[finite].min(0) - margin, means[finite].max(0) + margin, size, max(spacing, 1e-12))

    def enclosure(self, xyz: np.ndarray, directions: int = 64) -> float:
        """Fraction of `directions` (Fibonacci sphere) along which a ray from `xyz` meets a surface
        Gaussian (a centre within 1.5 x `spacing` of the ray) before it leaves the bounds."""
        i = np.arange(directions) + 0.5
        z = 1 - 2 * i / directions
        phi = i * np.pi * (3.0 - np.sqrt(5.0))
        r = np.sqrt(1 - z * z)
        dirs = np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)
        reach = float(np.linalg.norm(self.hi - self.lo))
        steps = np.arange(0.0, reach, 0.75 * self.spacing)
        hit = np.zeros(directions, bool)
        for start in range(0, len(steps), 256):  # march all rays together, nearest samples first
            t = steps[start : start + 256]
            samples = xyz + dirs[:, None, :] * t[None, :, None]  # [R, T, 3]
            inside = ((samples >= self.lo) & (samples <= self.hi)).all(-1)
            dist, _ = self.tree.query(samples.reshape(-1, 3), k=1, distance_upper_bound=1.5 * self.spacing)
            hit |= (np.isfinite(dist).reshape(inside.shape) & inside).any(1)
            if not inside.any():
                break
        return float(hit.mean())

    def snap(self, point: Point, tolerance: float = SNAP_TOLERANCE) -> tuple[np.ndarray, float]:
        """(nearest surface point [3], its distance from `point`); QueryError outside the bounds, or
        beyond `tolerance` x size from every surface unless surfaces enclose the point (inside a
        hollow object, see `ENCLOSED_TOLERANCE`)."""
        xyz = point.xyz
        if not np.isfinite(xyz).all():
            raise QueryError(f"point {tuple(xyz.tolist())} has non-finite coordinates")
        if (xyz < self.lo).any() or (xyz > self.hi).any():
            raise QueryError(f"point ({_fmt(xyz)}) is outside the scene bounds [{_fmt(self.lo)}] .. [{_fmt(self.hi)}]")
        dist, j = self.tree.query(xyz, k=1)
        if dist > tolerance * self.size:
            inside = dist <= ENCLOSED_TOLERANCE * self.size and self.enclosure(xyz) >= ENCLOSED_FRACTION
            if not inside:
                raise QueryError(f"point ({_fmt(xyz)}) is {dist:.3g} from the nearest surface, farther than "
                                 f"{tolerance * self.size:.3g} ({tolerance:g} of the scene size {self.size:.3g}) and not inside an object")
        return self.means[self.surface[j]], float(dist)

    def neighbourhood(self, surface_point: np.ndarray, k: int = POINT_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
        """(Gaussian indices [k], weights [k]) around a surface point: opacity x a Gaussian falloff
        in distance, with the spread set by the 4th neighbour's distance."""
        k = min(k, len(self.surface))
        dist, j = self.tree.query(surface_point, k=k)
        dist, j = np.atleast_1d(dist), np.atleast_1d(j)
        idx = self.surface[j]
        spread = max(float(dist[min(3, len(dist) - 1)]), 1e-12)
        return idx, self.opacities[idx] * np.exp(-0.5 * (dist / spread) ** 2)


def _fmt(v: np.ndarray) -> str:
    return ", ".join(f"{float(c):.4g}" for c in v)


def point_logits(fld: Field, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[K] evidence of each query at Gaussians `idx` [k]: the weighted mean lifted score minus 0.5
    (so > 0 means the query's masks cover those Gaussians in most views that see them)."""
    w = np.asarray(weights, np.float64)
    scores = fld.lifted[:, idx].astype(np.float64) / 255.0  # [K, k]
    return (scores @ w / max(w.sum(), 1e-12) - 0.5).astype(np.float32)


def pick_query_at_gaussians(fld: Field, idx: np.ndarray, weights: np.ndarray, granularity: Granularity = "whole") -> int:
    """The query answering a point prompt whose surface neighbourhood is `idx` with `weights`
    (its weighted lifted scores are both the evidence and the 3D scores of step 3)."""
    logits = point_logits(fld, idx, weights)
    return pick_with_membership(fld, logits, logits + 0.5, granularity)


def select_by_points(fld: Field, surface: SurfaceIndex, points: Sequence[Point], granularity: Granularity = "whole",
                     threshold: float = DEFAULT_THRESHOLD, tolerance: float = SNAP_TOLERANCE) -> Selection:
    """Selection for 3D point prompts (see `Point`); `surface` must be built from the run's splats."""
    if len(surface.means) != fld.num_gaussians:
        raise QueryError(f"the splats have {len(surface.means)} Gaussians but the run was trained on {fld.num_gaussians}")
    if not any(p.positive for p in points):
        raise QueryError("at least one positive point is needed")

    pos = [query_for_point(fld, surface, p, granularity, tolerance) for p in points if p.positive]
    neg = [k for k in (query_for_point(fld, surface, p, "part", tolerance) for p in points if not p.positive) if k not in pos]
    return combine(fld, pos, neg, threshold)


def query_for_point(fld: Field, surface: SurfaceIndex, point: Point, granularity: Granularity = "whole", tolerance: float = SNAP_TOLERANCE) -> int:
    """The query answering one 3D point prompt: snapped to the nearest surface, then picked from the
    lifted scores around it."""
    snapped, _ = surface.snap(point, tolerance)
    return pick_query_at_gaussians(fld, *surface.neighbourhood(snapped), granularity)
