"""Text prompts over a trained run: which answer a run can give, and CLIPSeg's.

Two paths, chosen by what the run has (`text_backend`):
- "clipseg" (run.json `clipseg` and RUN/clipseg.npz, from `train --clipseg`): CLIPSeg relevancy
  of the phrase on every training view, lifted onto the Gaussians through the blend weights;
- "clip" (a run trained with real CLIP weights, `--clip-pretrained`): the query whose CLIP vector
  best matches the phrase (LERF relevancy against canonical negatives, `query.select_by_text`);
- neither: `require_text_backend` refuses in one line naming both flags.
CLIPSeg is preferred when both exist: it looks at the pixels for this phrase, where the CLIP path
can only pick among the queries' segments.

RUN/clipseg.npz (written by `splatseg.train.clipseg_stage`; run_id as every run file):
    views [V] str                  training view names, in training order
    layer_0 .. layer_{L-1}         float16 [V, 1 + P, hidden]: CLIPSeg's decoder inputs (the ViT's
                                   hidden states at config.extract_layers) of each view at S x S
    lift_sizes [V, 2] int32        (w, h) of each view for lifting (longest side --clipseg-lift-side)
    lift_offsets [V + 1] int64     view v's pairs are lift_*[offsets[v]:offsets[v + 1]]
    lift_pixel [P] int32           flat pixel row * w + col, pairs sorted by pixel
    lift_gaussian [P] int32        Gaussian index
    lift_weight [P] float16        blend weight alpha_i T_i of that Gaussian at that pixel (>= 0.01)
    num_gaussians, image_size (S)  scalars
run.json `clipseg`: {"model": the weights' resolved folder or hub name, "file", "views", "layers",
"image_size", "lift_side", "lift_pairs"}. The weights themselves are not copied: a text query
loads them again from "model" (one-line error when they are gone).

Answering a phrase with CLIPSeg (`ClipSegIndex.scores`):
1. CLIPSeg's text tower once, its decoder on the cached activations of all V views: relevancy
   maps R_v [S, S] = sigmoid(logits) in [0, 1].
2. Each map resized (bilinear) to its view's lift size and lifted through the stored pairs
   (one sparse [N, all views' pixels] product): num_i = sum_v sum_p w_vip R_v(p), den_i = sum_v sum_p w_vip; the score is
   `train.lifting.evidence_scores` of that evidence (num / den, no X-ray votes): the blend-weighted
   mean relevancy of each Gaussian over the views that see it (0 for Gaussians none sees).
3. Scores are divided by their maximum (CLIPSeg's probabilities are not calibrated across
   phrases: the best-matching Gaussians score 1) and the selection is score > threshold.
   (Relevancy peaks are not turned into click prompts: the lifted relevancy is the answer.)
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splatseg.query import CANONICAL_NEGATIVES, QueryError, Selection, select_by_text
from splatseg.run import Field, RunError
from splatseg.semantics.clipseg import ClipSeg

CLIPSEG_FILE = "clipseg.npz"


def run_text_encoder(fld: Field):
    """The CLIP text encoder the run was trained with; QueryError when it has none."""
    from splatseg.semantics.clip import load_text_encoder

    model, pretrained = fld.info.get("clip_model_name"), fld.info.get("clip_pretrained")
    if not fld.clip_has_weights or not model or not pretrained:
        raise QueryError("text prompts need a run trained with CLIP weights (`splatseg train --clip-pretrained TAG`); this one has none")
    return load_text_encoder(model, pretrained)


def text_backend(fld: Field) -> str | None:
    """"clipseg", "clip" or None (module docstring)."""
    if isinstance(fld.info.get("clipseg"), dict):
        return "clipseg"
    if fld.clip_has_weights and fld.info.get("clip_model_name") and fld.info.get("clip_pretrained"):
        return "clip"
    return None


def require_text_backend(fld: Field) -> str:
    """The backend, or QueryError (one line) when the run has neither."""
    backend = text_backend(fld)
    if backend is None:
        raise QueryError("text prompts need CLIPSeg or CLIP weights, and this run was trained without them: retrain with "
                         "`splatseg train --clipseg PATH` (e.g. a local CIDAS/clipseg-rd64-refined folder) or --clip-pretrained TAG")
    return backend


@functools.lru_cache(maxsize=2)
def load_clipseg(name: str) -> ClipSeg:
    """The CLIPSeg a run names, loaded once per process (segment, export-all and every viewer tab)."""
    return ClipSeg.load(name)


@dataclass
class ClipSegIndex:
    """RUN/clipseg.npz in memory: activations (torch float16, per layer [V, 1 + P, hidden]), the
    views' lift sizes, and their blend weights as one sparse matrix; `scores(phrase)` answers a
    phrase (module docstring)."""

    model_name: str
    views: list[str]
    activations: list
    sizes: list[tuple[int, int]]  # (w, h) per view
    weights: object  # scipy.sparse CSR [N, sum_v w_v h_v]: blend weight of Gaussian i at pixel p of view v
    den: np.ndarray  # [N] sum of each Gaussian's blend weights over every view's pixels
    num_gaussians: int
    _reduced: tuple | None = None  # (model id, ClipSeg.reduce(activations)): made by the first query

    @classmethod
    def load(cls, fld: Field) -> "ClipSegIndex":
        """From the run's clipseg.npz; RunError (one line) when it is missing or not this run's."""
        from splatseg.io.npz import NpzError, open_npz

        record = fld.info.get("clipseg")
        if not isinstance(record, dict) or not isinstance(record.get("model"), str):
            raise RunError(f"{fld.run_dir} was not trained with --clipseg")
        path = Path(fld.run_dir) / CLIPSEG_FILE
        if not path.is_file():
            raise RunError(f"{path} is missing (run.json names CLIPSeg {record['model']}); retrain with --clipseg")
        try:
            with open_npz(path, "run file") as z:
                a = {k: z[k] for k in z.files}
        except NpzError as e:
            raise RunError(str(e)) from None
        if str(a.get("run_id")) != fld.run_id:
            raise RunError(f"{path} belongs to another training (run id differs from run.json); retrain with --clipseg")
        n = int(a["num_gaussians"])
        if n != fld.num_gaussians:
            raise RunError(f"{path} was made for {n} Gaussians, the run has {fld.num_gaussians}; retrain with --clipseg")
        return cls.from_arrays(a, record["model"], str(path))

    @classmethod
    def from_arrays(cls, a: dict, model_name: str, where: str = "the CLIPSeg cache") -> "ClipSegIndex":
        """From the arrays of a clipseg.npz (`clipseg_stage.clipseg_arrays`); RunError when they disagree."""
        import torch
        from scipy import sparse

        layers = sorted((k for k in a if k.startswith("layer_")), key=lambda k: int(k.split("_")[1]))
        views = [str(v) for v in a["views"]]
        if not layers or any(a[k].shape[0] != len(views) for k in layers) or a["lift_offsets"].shape != (len(views) + 1,):
            raise RunError(f"{where} is inconsistent (views, layers and lift offsets disagree); retrain with --clipseg")
        sizes = [(int(w), int(h)) for w, h in a["lift_sizes"].tolist()]
        n = int(a["num_gaussians"])
        # every view's pixels side by side as the columns of one matrix: one sparse product lifts all
        # V maps at once (the per-view `render.lift` loop cost V sparse products and their set-up)
        first_pixel = np.concatenate([[0], np.cumsum([w * h for w, h in sizes])]).astype(np.int64)
        counts = np.diff(a["lift_offsets"])
        cols = a["lift_pixel"].astype(np.int64) + np.repeat(first_pixel[:-1], counts)
        weight = a["lift_weight"].astype(np.float32)
        matrix = sparse.csr_matrix((weight, (a["lift_gaussian"].astype(np.int64), cols)), shape=(n, int(first_pixel[-1])))
        den = np.bincount(a["lift_gaussian"], weights=weight, minlength=n).astype(np.float32)
        acts = [torch.from_numpy(np.ascontiguousarray(a[k])) for k in layers]
        return cls(model_name, views, acts, sizes, matrix, den, n)

    def lift_maps(self, maps) -> tuple[np.ndarray, np.ndarray]:
        """(num [N], den [N]): relevancy maps [V, h, w] (any size; resized bilinearly to each view's
        lift size) lifted through the stored blend weights: num_i = sum_v sum_p w_vip R_v(p)."""
        import torch

        maps = torch.as_tensor(np.asarray(maps, np.float32))
        if maps.ndim != 3 or maps.shape[0] != len(self.sizes):
            raise ValueError(f"expected {len(self.sizes)} relevancy maps [V, h, w], got {list(maps.shape)}")
        flat = []
        for v, (w, h) in enumerate(self.sizes):
            m = torch.nn.functional.interpolate(maps[v][None, None], size=(h, w), mode="bilinear", align_corners=False)
            flat.append(m.reshape(-1))
        values = torch.cat(flat).numpy().astype(np.float32)
        return np.asarray(self.weights @ values, np.float32), self.den

    def scores_from_maps(self, maps) -> np.ndarray:
        """[N] float32 in [0, 1]: lifted relevancy divided by its maximum (module docstring, 2-3)."""
        from splatseg.train.lifting import LiftEvidence, evidence_scores

        num, den = self.lift_maps(maps)
        zeros = np.zeros_like(den)
        scores, _ = evidence_scores(LiftEvidence(num[:, None], den, zeros[:, None], zeros), xray_weight=0.0)
        scores = scores[:, 0]
        top = float(scores.max()) if scores.size else 0.0
        return (scores / top).astype(np.float32) if top > 0 else scores

    def relevancy_maps(self, clipseg: ClipSeg, phrase: str) -> np.ndarray:
        """float32 [V, S, S]: CLIPSeg's relevancy of `phrase` on every cached view (text tower + decoder)."""
        if self._reduced is None or self._reduced[0] != id(clipseg.model):
            self._reduced = (id(clipseg.model), clipseg.reduce(self.activations))
        return clipseg.relevancy(self.activations, phrase, reduced=self._reduced[1])

    def scores(self, clipseg: ClipSeg, phrase: str) -> np.ndarray:
        return self.scores_from_maps(self.relevancy_maps(clipseg, phrase))


@dataclass
class TextAnswer:
    selection: Selection
    backend: str  # "clipseg" | "clip"
    seconds: float


class TextPrompter:
    """Answers phrases on one run with the backend it has; the CLIPSeg index and model are loaded
    on first use and kept (the viewer holds one for all tabs)."""

    def __init__(self, fld: Field):
        self.field = fld
        self.backend = text_backend(fld)
        self._index: ClipSegIndex | None = None

    def describe(self) -> str:
        if self.backend == "clipseg":
            return f"CLIPSeg ({Path(self.field.info['clipseg']['model']).name}, lifted through the blend weights)"
        if self.backend == "clip":
            return f"CLIP per query ({self.field.info.get('clip_model_name')}/{self.field.info.get('clip_pretrained')})"
        return "none (the run has no CLIPSeg or CLIP weights)"

    def clipseg_scores(self, phrase: str) -> np.ndarray:
        """[N] CLIPSeg scores in [0, 1] of a phrase (module docstring); RunError / SemanticsError
        (one line) when the cache or the weights it names cannot be read."""
        if self._index is None:
            self._index = ClipSegIndex.load(self.field)
        return self._index.scores(load_clipseg(self._index.model_name), phrase)

    def clip_embeddings(self, phrase: str) -> tuple[np.ndarray, np.ndarray]:
        """(the phrase's CLIP embedding [E], the canonical negatives' [Q, E]) from the run's encoder."""
        emb = run_text_encoder(self.field).encode_text([phrase, *CANONICAL_NEGATIVES])
        return np.asarray(emb[0]), np.asarray(emb[1:])

    def select(self, phrase: str, threshold: float) -> TextAnswer:
        """The selection answering `phrase` with the run's backend; QueryError without one."""
        t0 = time.time()
        phrase = str(phrase).strip()
        if not phrase:
            raise QueryError("the text prompt is empty: type a phrase")
        backend = require_text_backend(self.field)
        if backend == "clipseg":
            scores = self.clipseg_scores(phrase)
            sel = Selection(mask=scores > threshold, scores=scores)
        else:
            sel = select_by_text(self.field, *self.clip_embeddings(phrase), threshold)
        return TextAnswer(sel, backend, time.time() - t0)
