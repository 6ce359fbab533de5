"""Decoder masks from many views -> one 3D selection (SANeRF-HQ / SAGOnline-style aggregation).

1. Prompts -> 3D points: every click (positive or negative) is lifted to the world point under it
   (the rendered depth at the click; a click on empty space is refused). A box is decoded in its
   own view and contributes the 3D point deepest inside its mask.
2. Masks in other views (round 1): each view is prompted with the projections of the points that
   are visible there (depth test, `views.visible`): positives as positive points, negatives as
   negative points; views where no positive point is visible are left out. Every view uses the
   same of SAM's three masks (`mask_index`, or the highest-scoring one in the source view), so
   the granularity stays the same across views.
3. Round 2 (`rounds=2`): views left out in round 1 are prompted with a point of the round-1
   selection visible there (the selected Gaussian centre nearest the middle of the visible
   ones), which reaches the object's far side that no click sees.
4. Lifting: the masks are resized to the lifting resolution (area averaging: soft edges) and
   lifted onto the Gaussians through the blend weights of the views that were prompted:
   score_i = sum_v sum_p w_vip m_vp / sum_v sum_p w_vip. Gaussians no prompted view sees take the
   mean score of their nearest seen neighbours (as `splatseg.train.lifting`). score > threshold
   is the selection.
`MaskSource` abstracts step 2's decoder, so tests can feed exact 2D masks instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from tqdm import tqdm

from splatseg.imitation.decoder import PromptError
from splatseg.imitation.views import MIN_ALPHA, DecoderRun, Geometry, View, visible
from splatseg.render import BlendWeights, blend_weights, lift

UNSEEN_WEIGHT = 1e-3
"""Total blend weight (over the prompted views) below which a Gaussian counts as unseen."""

LIFT_MAX_SIDE = 128
"""Default long side of the views masks are lifted at."""


@dataclass(frozen=True)
class Point2D:
    """A click: pixel (x, y) in the view named `stem` (splatseg's pixel convention)."""

    stem: str
    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class Box2D:
    """A box prompt: corners (x0, y0) - (x1, y1) in pixels of the view named `stem`."""

    stem: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def array(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], np.float64)


class MaskSource(Protocol):
    """Decoder stand-in: (view, points [P, 2], labels [P], box [4] | None, mask_index | None)
    -> (mask bool [H, W], chosen mask index, its score)."""

    def __call__(self, view: View, points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None,
                 mask_index: int | None) -> tuple[np.ndarray, int, float]: ...


def decoder_mask_source(run: DecoderRun) -> MaskSource:
    """The real `MaskSource`: the run's rendered embedding and SAM's decoder (multimask)."""

    def source(view, points, labels, box, mask_index):
        out = run.decode(view, points, labels, box)
        k = out.choose(mask_index)
        return out.masks[k], k, float(out.scores[k])

    return source


@dataclass
class PointPrompt:
    """A prompt point in 3D (world [3]) with the view and pixel it was clicked in."""

    world: np.ndarray
    positive: bool
    stem: str | None = None
    xy: tuple[float, float] | None = None


def click_point(run: DecoderRun, click: Point2D) -> PointPrompt:
    """The world point under a click (rendered depth); PromptError on empty space or outside."""
    view = run.view(click.stem)
    if not (np.isfinite(click.x) and np.isfinite(click.y) and 0 <= click.x < view.width and 0 <= click.y < view.height):
        raise PromptError(f"click ({click.x}, {click.y}) is outside image {click.stem!r} of size {view.width}x{view.height}")
    geo = run.geometry(view)
    row, col = int(click.y), int(click.x)
    if geo.alpha[row, col] < MIN_ALPHA:
        raise PromptError(f"click ({click.x}, {click.y}) in {click.stem!r} hits empty space (opacity {max(0.0, float(geo.alpha[row, col])):.2f})")
    return PointPrompt(view.backproject(click.x, click.y, float(geo.depth[row, col])), click.positive, click.stem, (click.x, click.y))


def interior_point(mask: np.ndarray) -> tuple[float, float] | None:
    """Pixel centre (x, y) deepest inside a mask [H, W] (None when empty)."""
    if not mask.any():
        return None
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(np.argmax(depth), depth.shape)
    return col + 0.5, row + 0.5


def prompts_in_view(view: View, geo: Geometry, points: Sequence[PointPrompt]) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [P, 2], labels [P]) of the prompt points visible in a view; a point clicked in this
    very view keeps its exact pixel."""
    xy, labels = [], []
    if points:
        vis, uv = visible(view, geo, np.stack([p.world for p in points]))
        for p, v, q in zip(points, vis, uv):
            if p.stem is not None and p.stem == view.name and p.xy is not None:
                xy.append(p.xy)
            elif v:
                xy.append((float(q[0]), float(q[1])))
            else:
                continue
            labels.append(1 if p.positive else 0)
    return np.asarray(xy, np.float64).reshape(-1, 2), np.asarray(labels, np.int64)


class LiftViews:
    """Blend weights of the training views at the lifting resolution, built on first use."""

    def __init__(self, run: DecoderRun, max_side: int = LIFT_MAX_SIDE):
        self.run, self.max_side = run, int(max_side)
        self._bw: dict[int, BlendWeights] = {}

    def view(self, i: int) -> View:
        return View.of(self.run.cameras, i).scaled(self.max_side)

    def weights(self, i: int) -> BlendWeights:
        if i not in self._bw:
            v, p = self.view(i), self.run.params
            dev = p["means"].device
            self._bw[i] = blend_weights(p["means"], p["quats"], p["scales"], p["opacities"],
                                        torch.as_tensor(v.viewmat, dtype=torch.float32, device=dev),
                                        torch.as_tensor(v.K, dtype=torch.float32, device=dev), v.width, v.height)
        return self._bw[i]


def resize_soft(mask: np.ndarray, width: int, height: int) -> torch.Tensor:
    """bool/float [H, W] -> float32 [h, w] by area averaging (soft at edges)."""
    t = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None]
    if t.shape[-2:] != (height, width):
        t = torch.nn.functional.adaptive_avg_pool2d(t, (height, width))
    return t[0, 0]


def lift_masks(lift_views: LiftViews, masks: dict[int, np.ndarray], num_gaussians: int) -> tuple[np.ndarray, np.ndarray]:
    """(score [N] in [0, 1], weight [N]) from full-resolution masks of training views {index: [H, W]}."""
    dev = lift_views.run.params["means"].device
    num = torch.zeros(num_gaussians, 1, device=dev)
    den = torch.zeros(num_gaussians, device=dev)
    for i, m in masks.items():
        bw = lift_views.weights(i)
        s, w = lift(bw, resize_soft(m, bw.width, bw.height).reshape(-1, 1).to(dev), num_gaussians)
        num += s
        den += w
    weight = den.cpu().numpy()
    return (num[:, 0] / den.clamp_min(1e-12)).cpu().numpy(), weight


def fill_unseen(scores: np.ndarray, weight: np.ndarray, means: np.ndarray, neighbours: int = 8) -> np.ndarray:
    """Scores of Gaussians with weight < UNSEEN_WEIGHT replaced by the mean of their nearest seen ones."""
    out = scores.copy()
    unseen = weight < UNSEEN_WEIGHT
    if not unseen.any():
        return out
    seen = np.flatnonzero(~unseen)
    if neighbours > 0 and len(seen) >= neighbours:
        _, nn = cKDTree(means[seen]).query(means[unseen], k=neighbours)
        out[unseen] = scores[seen[nn.reshape(-1, neighbours)]].mean(axis=1)
    else:
        out[unseen] = 0.0
    return out


@dataclass
class Aggregation:
    """A 3D selection from decoder masks: mask [N] bool, scores [N], the masks used {view: [H, W]},
    the source view's mask, the mask index used, and bookkeeping."""

    mask: np.ndarray
    scores: np.ndarray
    view_masks: dict[int, np.ndarray]
    source_stem: str
    source_mask: np.ndarray
    mask_index: int
    source_score: float
    points: list[PointPrompt] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)  # views prompted in each round
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return int(self.mask.sum())


def spread(indices: list[int], count: int) -> list[int]:
    """`count` evenly spaced members of `indices` (all when count <= 0 or >= len)."""
    if count <= 0 or count >= len(indices):
        return list(indices)
    pick = np.unique(np.round(np.linspace(0, len(indices) - 1, count)).astype(int))
    return [indices[p] for p in pick]


def aggregate(run: DecoderRun, clicks: Sequence[Point2D] = (), box: Box2D | None = None, *, source: MaskSource | None = None,
              mask_index: int | None = None, threshold: float = 0.5, rounds: int = 2, max_views: int = 0,
              lift_views: LiftViews | None = None, neighbours: int = 8, progress: bool = False,
              points: Sequence[PointPrompt] | None = None, source_view: View | None = None) -> Aggregation:
    """The 3D selection for 2D prompts (module doc). `points` (3D prompts, e.g. the viewer's) may
    replace `clicks`; `source_view` then names the camera whose mask is reported."""
    t0 = time.time()
    source = source or decoder_mask_source(run)
    lift_views = lift_views or LiftViews(run)
    if not 0.0 <= threshold <= 1.0:
        raise PromptError(f"threshold must lie in [0, 1], got {threshold}")
    pts = list(points) if points is not None else [click_point(run, c) for c in clicks]
    positives = [p for p in pts if p.positive]
    if not positives and box is None:
        raise PromptError("give at least one positive click or a box")
    # the source view: the box's, else the first positive click's
    if source_view is None:
        stem = box.stem if box is not None else positives[0].stem
        source_view = run.view(stem)
    src_geo = run.geometry(source_view)
    xy, labels = prompts_in_view(source_view, src_geo, pts)
    src_mask, k, src_score = source(source_view, xy if len(xy) else None, labels if len(xy) else None,
                                    None if box is None else box.array, mask_index)
    if box is not None and not positives:
        inside = interior_point(src_mask)
        if inside is None:
            raise PromptError(f"the decoder's mask for the box in {box.stem!r} is empty")
        row, col = int(inside[1]), int(inside[0])
        if src_geo.alpha[row, col] < MIN_ALPHA:
            raise PromptError(f"the box's mask in {box.stem!r} lies on empty space")
        pts.append(PointPrompt(source_view.backproject(*inside, float(src_geo.depth[row, col])), True, source_view.name, inside))
    fixed_index = k  # every other view uses the same of SAM's masks

    candidates = spread(run.train_views, max_views)
    masks: dict[int, np.ndarray] = {}
    done: list[int] = []
    for i in tqdm(candidates, desc="decoder views", disable=not progress, leave=False):
        view = View.of(run.cameras, i)
        if box is not None and view.name == source_view.name:
            masks[i] = src_mask
            done.append(i)
            continue
        xy, labels = prompts_in_view(view, run.geometry(view), pts)
        if not (labels == 1).any():
            continue
        masks[i], _, _ = source(view, xy, labels, None, fixed_index)
        done.append(i)
    round_views = [list(done)]
    if not masks:
        raise PromptError("the clicked point is visible in no training view: nothing to lift")
    means = run.splats.means
    scores, weight = lift_masks(lift_views, masks, run.num_gaussians)
    scores = fill_unseen(scores, weight, means, neighbours)
    for _ in range(max(0, rounds - 1)):
        chosen = np.flatnonzero(scores > threshold)
        if chosen.size == 0:
            break
        extra = []
        for i in candidates:
            if i in masks:
                continue
            view = View.of(run.cameras, i)
            geo = run.geometry(view)
            vis, uv = visible(view, geo, means[chosen])
            if vis.sum() < 3:
                continue
            cand = uv[vis]
            middle = np.median(cand, axis=0)
            anchor = cand[np.argmin(np.linalg.norm(cand - middle, axis=1))]
            xy, labels = prompts_in_view(view, geo, [p for p in pts if not p.positive])
            xy = np.concatenate([anchor[None], xy]) if len(xy) else anchor[None]
            labels = np.concatenate([[1], labels]).astype(np.int64)
            masks[i], _, _ = source(view, xy, labels, None, fixed_index)
            extra.append(i)
        round_views.append(extra)
        if not extra:
            break
        scores, weight = lift_masks(lift_views, masks, run.num_gaussians)
        scores = fill_unseen(scores, weight, means, neighbours)
    sel = scores > threshold
    return Aggregation(sel, scores.astype(np.float32), masks, source_view.name, src_mask, int(fixed_index), src_score,
                       pts, round_views, time.time() - t0)
