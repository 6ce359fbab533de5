"""One browser tab's selection: its prompts, granularity and threshold -> a `Selection` over N Gaussians.

Prompts are either clicks or one text phrase, never both:
- a click is a world ray; `picking.ray_render` turns it into the rendered feature [D] under the
  cursor and `picking.scores_along_ray` into the 3D scores [K] of the surface it hits (the query
  rule of `splatseg.query`), and the selection is `query.select_by_feature(field, positives,
  negatives, granularity, threshold, scores)` over every click so far (features and scores are
  kept, so changing the granularity or the threshold re-answers the same clicks);
- a text phrase is answered by `query.select_by_text` with its CLIP embedding [E] against the
  canonical negatives [Q, E]; a later click starts a new click selection (the phrase is dropped).
A click that hits nothing (accumulated alpha below `MIN_HIT_ALPHA`) is refused with a QueryError
and leaves the selection as it was. Negative clicks alone select nothing until a positive one.

Every method takes the session's lock, so viser's callback threads can call them concurrently.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from splatseg.query import DEFAULT_THRESHOLD, Granularity, QueryError, Selection, select_by_feature, select_by_text
from splatseg.run import Field
from splatseg.viewer.picking import PickingTensors, RayHit, ray_render, scores_along_ray

MIN_HIT_ALPHA = 0.2
"""A click whose pixel accumulates less opacity than this hit empty space."""


@dataclass
class ClickResult:
    """Outcome of one click: what the pixel saw, the new selection and the server-side time spent
    (seconds) rendering the ray and answering the query."""

    hit: RayHit
    selection: Selection | None
    ray_seconds: float
    query_seconds: float


class SelectionSession:
    """Prompts and the current selection of one client (see module doc)."""

    def __init__(self, field: Field, picking: PickingTensors, granularity: Granularity = "whole", threshold: float = DEFAULT_THRESHOLD):
        self.field = field
        self.picking = picking
        self.lock = threading.RLock()
        self.granularity: Granularity = granularity
        self.threshold = float(threshold)
        self.positives: list[np.ndarray] = []
        self.negatives: list[np.ndarray] = []
        self.positive_scores: list[np.ndarray | None] = []  # 3D scores [K] under each click (None: unknown)
        self.negative_scores: list[np.ndarray | None] = []
        self.text: str | None = None
        self._text_embeddings: tuple[np.ndarray, np.ndarray] | None = None
        self._external: tuple[Selection, str] | None = None  # a selection made elsewhere (SAM decoder)
        self.selection: Selection | None = None

    # ------------------------------------------------------------------ prompts

    def click(self, origin, direction, focal_px: float, positive: bool = True) -> ClickResult:
        """Adds a click given as a world ray (origin [3], direction [3]) seen by a pixel of focal
        length `focal_px`; QueryError when the ray hits nothing."""
        t0 = time.perf_counter()
        hit = ray_render(self.picking, origin, direction, focal_px)
        t1 = time.perf_counter()
        if hit.alpha < MIN_HIT_ALPHA:
            raise QueryError(f"nothing under the cursor (opacity {hit.alpha:.2f} along the ray): click on the scene")
        scores = scores_along_ray(self.picking, self.field.lifted, origin, direction, focal_px) if self.field.containment is not None else None
        with self.lock:
            self.add_feature(hit.feature, positive, scores)
            sel = self.selection
        return ClickResult(hit, sel, t1 - t0, time.perf_counter() - t1)

    def add_feature(self, feature: np.ndarray, positive: bool = True, scores: np.ndarray | None = None) -> Selection | None:
        """Adds a click by its rendered feature [D] and, when known, the 3D scores [K] of the
        surface clicked (`picking.scores_along_ray`)."""
        with self.lock:
            if self.text is not None or self._external is not None:
                self.text, self._text_embeddings, self._external = None, None, None
                self._clear_clicks()
            (self.positives if positive else self.negatives).append(np.asarray(feature, np.float32))
            (self.positive_scores if positive else self.negative_scores).append(scores)
            return self._recompute()

    def _clear_clicks(self) -> None:
        self.positives, self.negatives, self.positive_scores, self.negative_scores = [], [], [], []

    def set_text(self, phrase: str, text_embedding: np.ndarray, negative_embeddings: np.ndarray) -> Selection:
        """Replaces every prompt by a text phrase with its CLIP embedding [E] and the canonical
        negatives' [Q, E]."""
        with self.lock:
            self._clear_clicks()
            self._external = None
            self.text = phrase
            self._text_embeddings = (np.asarray(text_embedding, np.float32), np.asarray(negative_embeddings, np.float32))
            return self._recompute()

    def set_selection(self, selection: Selection, label: str) -> Selection:
        """Replaces every prompt by a selection made elsewhere (the viewer's SAM-decoder mode), with
        per-Gaussian scores [N]: the threshold still applies to them; the next click, text or clear
        drops it. `label` names its prompts in `describe`."""
        with self.lock:
            self._clear_clicks()
            self.text, self._text_embeddings = None, None
            self._external = (selection, label)
            return self._recompute()

    def clear(self) -> None:
        with self.lock:
            self._clear_clicks()
            self.text, self._text_embeddings, self._external = None, None, None
            self.selection = None

    # ------------------------------------------------------------------ settings

    def set_granularity(self, granularity: Granularity) -> Selection | None:
        if granularity not in ("whole", "part"):
            raise QueryError(f"granularity must be 'whole' or 'part', got {granularity!r}")
        with self.lock:
            self.granularity = granularity
            return self._recompute()

    def set_threshold(self, threshold: float) -> Selection | None:
        if not (0.0 <= threshold <= 1.0):
            raise QueryError(f"threshold must be in [0, 1], got {threshold}")
        with self.lock:
            self.threshold = float(threshold)
            return self._recompute()

    # ------------------------------------------------------------------ state

    @property
    def mask(self) -> np.ndarray | None:
        """Selected Gaussians [N] bool, or None when nothing is selected."""
        with self.lock:
            return None if self.selection is None else self.selection.mask

    @property
    def count(self) -> int:
        with self.lock:
            return 0 if self.selection is None else self.selection.count

    def describe(self) -> str:
        """One line for the page: what is selected and from which prompts."""
        with self.lock:
            n = self.field.num_gaussians
            if self.text is not None:
                prompts = f'text "{self.text}"'
            elif self._external is not None:
                prompts = self._external[1]
            elif self.positives or self.negatives:
                prompts = f"{len(self.positives)} positive, {len(self.negatives)} negative click(s), {self.granularity}"
            else:
                return f"Nothing selected ({n:,} Gaussians). Click an object."
            if self.selection is None:
                return f"Nothing selected yet ({prompts}): add a positive click."
            c = self.selection.count
            return f"**Selected {c:,} of {n:,} Gaussians** ({100.0 * c / max(n, 1):.1f}%) from {prompts}."

    def _recompute(self) -> Selection | None:
        if self._external is not None:
            base = self._external[0]
            self.selection = Selection(mask=base.scores > self.threshold, scores=base.scores)
        elif self._text_embeddings is not None:
            self.selection = select_by_text(self.field, *self._text_embeddings, threshold=self.threshold)
        elif self.positives:
            self.selection = select_by_feature(self.field, self.positives, self.negatives, self.granularity, self.threshold,
                                               self.positive_scores, self.negative_scores)
        else:
            self.selection = None
        return self.selection
