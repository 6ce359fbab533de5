"""Click and text prompts -> per-Gaussian scores -> selection. Pure functions over a trained `Field`.

How a click becomes a selection:
1. The rendered feature F [D] under the click (from the view's stored feature map, or rendered
   along a ray for an arbitrary camera).
2. Mask logits of the K queries at that pixel: F . q_k + b_k. Queries with a positive logit are
   "active" there.
3. Granularity: "whole" takes the active query with the largest 3D extent; "part" takes the most
   confident active query among the smaller ones (the whole itself when none is smaller).
4. The chosen query's lifted score column [N] (its masks from every training view pushed back onto
   the Gaussians through the blend weights) thresholded gives the selection. Several positive
   clicks take the maximum of their columns; a Gaussian is dropped when a negative click's column
   scores it at least as high.
A click costs one [K, D] product and one pass over N bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from splatseg.run import Field
from splatseg.semantics.clip import CANONICAL_NEGATIVES, relevancy

__all__ = ["CANONICAL_NEGATIVES", "Click", "Granularity", "QueryError", "Selection", "select_by_clicks", "select_by_feature", "select_by_text"]

Granularity = Literal["whole", "part"]

DEFAULT_THRESHOLD = 0.3
"""Lifted score above which a Gaussian belongs to the selection."""



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


@dataclass
class Selection:
    """mask [N] bool, scores [N] float32 in [0, 1], and the query indices that produced them."""

    mask: np.ndarray
    scores: np.ndarray
    queries: list[int] = field(default_factory=list)
    negative_queries: list[int] = field(default_factory=list)

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


def pick_query(fld: Field, feature: np.ndarray, granularity: Granularity = "whole") -> int:
    """Index of the query answering a click with rendered feature `feature` [D]."""
    logits = query_logits(fld, feature)
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


def combine(fld: Field, positive: Sequence[int], negative: Sequence[int] = (), threshold: float = DEFAULT_THRESHOLD) -> Selection:
    """Selection from query indices: max over positives, dropped where a negative is as high."""
    if not positive:
        raise QueryError("at least one positive prompt is needed")
    pos = fld.lifted[list(positive)].max(axis=0)  # uint8 [N]
    mask = pos > np.uint8(min(255, max(0, int(threshold * 255))))
    if negative:
        neg = fld.lifted[list(negative)].max(axis=0)
        mask &= pos > neg
    return Selection(mask=mask, scores=pos.astype(np.float32) / 255.0, queries=list(positive), negative_queries=list(negative))


def select_by_clicks(fld: Field, clicks: Sequence[Click], granularity: Granularity = "whole", threshold: float = DEFAULT_THRESHOLD) -> Selection:
    """Selection for point prompts in the scene's images (see `Click`)."""
    if not any(c.positive for c in clicks):
        raise QueryError("at least one positive click is needed")
    pos = [pick_query(fld, pixel_feature(fld, c), granularity) for c in clicks if c.positive]
    neg = [pick_query(fld, pixel_feature(fld, c), "part") for c in clicks if not c.positive]
    neg = [k for k in neg if k not in pos]
    return combine(fld, pos, neg, threshold)


def select_by_feature(fld: Field, features: Sequence[np.ndarray], negatives: Sequence[np.ndarray] = (), granularity: Granularity = "whole", threshold: float = DEFAULT_THRESHOLD) -> Selection:
    """Selection for rendered features [D] of positive and negative points (the viewer's clicks)."""
    pos = [pick_query(fld, f, granularity) for f in features]
    neg = [k for k in (pick_query(fld, f, "part") for f in negatives) if k not in pos]
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
    cut = np.uint8(min(255, max(0, int(threshold * 255))))
    claimed = np.zeros(fld.num_gaussians, bool)
    objects = []
    for k in np.argsort(-fld.query_size, kind="stable"):
        mask = fld.lifted[k] > cut
        size = int(mask.sum())
        if size < min_gaussians:
            continue
        fresh = mask & ~claimed
        if fresh.sum() < min_gaussians or (size - fresh.sum()) > max_overlap * size:
            continue
        objects.append((int(k), fresh))
        claimed |= fresh
    return objects
