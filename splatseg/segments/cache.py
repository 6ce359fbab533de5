"""The segments cache: `<scene>/segments/<image stem>.npz` (docs/FORMATS.md, a public contract).

Keys of one file:
- `segmaps`: int32 [L, H, W]; level 0 coarsest (whole objects); a value indexes this image's segment
  table, -1 = no segment; indices unique across levels. H, W may differ from the image size.
- `embeddings` (optional): float16/float32 [M, E], L2-normalised CLIP embedding per segment,
  M = segmaps.max() + 1.
- `scores` (optional): float32 [M]; `model` (optional): str naming the producer.
- `embedding_model` (optional, splatseg extension): str naming the CLIP model and weights that made
  `embeddings` (e.g. "open_clip:ViT-B-16/laion2b_s34b_b88k").

`read_segments` also validates files made by other tools (SAM 2, Grounded-SAM, hand annotation):
each problem is one `SegmentsError` line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from splatseg.io.atomic import atomic_write
from splatseg.io.npz import NpzError, open_npz
from splatseg.types import Segments

SEGMENTS_DIRNAME = "segments"
_INT32_MAX = np.iinfo(np.int32).max


class SegmentsError(ValueError):
    """Bad segments input or an unavailable mask source; the message is one line."""


def segments_dir(scene_root: str | os.PathLike) -> Path:
    """`<scene>/segments`, where the cache of a scene lives."""
    return Path(scene_root) / SEGMENTS_DIRNAME


def segments_path(out_dir: str | os.PathLike, stem: str) -> Path:
    """`<out_dir>/<stem>.npz`."""
    return Path(out_dir) / f"{stem}.npz"


def write_segments(path: str | os.PathLike, segments: Segments, embedding_model: str | None = None) -> Path:
    """Write `segments` to `path` atomically (a temp file in the same folder, then os.replace).

    segmaps are stored as int32 [L, H, W], embeddings as given (float16 or float32 [M, E]),
    scores as float32 [M]. `embedding_model` names the encoder of the embeddings (optional key).
    """
    path = Path(path)
    segmaps = np.asarray(segments.segmaps)
    if segmaps.ndim == 2:
        segmaps = segmaps[None]
    _check_segmaps(path, segmaps)
    arrays: dict[str, np.ndarray] = {"segmaps": segmaps.astype(np.int32, copy=False)}
    M = int(segmaps.max()) + 1 if segmaps.size else 0
    if segments.embeddings is not None:
        emb = np.asarray(segments.embeddings)
        if emb.dtype not in (np.float16, np.float32):
            emb = emb.astype(np.float32)
        _check_embeddings(path, emb, M)
        arrays["embeddings"] = emb
        if embedding_model is not None:
            arrays["embedding_model"] = np.array(str(embedding_model))
    if segments.scores is not None:
        scores = np.asarray(segments.scores, dtype=np.float32).reshape(-1)
        _check_scores(path, scores, M)
        arrays["scores"] = scores
    if segments.model is not None:
        arrays["model"] = np.array(str(segments.model))

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.savez_compressed(f, **arrays)
    return path


def read_meta(path: str | os.PathLike) -> dict[str, str | bool]:
    """The cheap metadata of a cache file: `model` and `embedding_model` ("" when absent) and
    `has_embeddings`. Raises SegmentsError if the file cannot be opened as an npz."""
    path = Path(path)
    z = _open(path)
    with z:
        return {
            "model": _read_str(z, "model"),
            "embedding_model": _read_str(z, "embedding_model"),
            "has_embeddings": "embeddings" in z.files,
        }


def read_segments(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Segments:
    """Read and validate one cache/import file.

    Args:
        path: the `.npz` file.
        size: optional target (W, H); segmaps are resized to it with nearest neighbour (pixel
            centres map to pixel centres).
    Returns:
        `Segments` with int32 [L, H, W] segmaps, float32 embeddings / scores or None.
    Raises:
        SegmentsError (one line naming the file): missing `segmaps`, wrong ndim, non-integer dtype,
        values < -1, indices shared between levels, embeddings rows != max+1, non-finite values.
    """
    path = Path(path)
    z = _open(path)
    with z:
        if "segmaps" not in z.files:
            raise SegmentsError(f"{path}: missing 'segmaps' array (keys: {', '.join(z.files) or 'none'})")
        try:
            segmaps = z["segmaps"]
            emb = z["embeddings"] if "embeddings" in z.files else None
            scores = z["scores"] if "scores" in z.files else None
        except Exception as e:  # object arrays need pickle; corrupt members
            raise SegmentsError(f"{path}: unreadable array ({type(e).__name__}: {_one_line(e)})") from None
        model = _read_str(z, "model") or "unknown"
    if segmaps.ndim == 2:
        segmaps = segmaps[None]
    _check_segmaps(path, segmaps, None if emb is None or emb.ndim != 2 else int(emb.shape[0]))
    segmaps = segmaps.astype(np.int32, copy=False)
    M = int(segmaps.max()) + 1 if segmaps.size else 0
    if emb is not None:
        _check_embeddings(path, emb, M)
        emb = emb.astype(np.float32)
    if scores is not None:
        scores = scores.reshape(-1) if scores.ndim == 1 else scores
        _check_scores(path, scores, M)
        scores = scores.astype(np.float32)
    if size is not None:
        segmaps = resize_nearest(segmaps, size)
    return Segments(segmaps=np.ascontiguousarray(segmaps), embeddings=emb, scores=scores, model=model)


def resize_nearest(segmaps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of [L, H, W] label maps to size (W, H): output pixel centre
    (i + 0.5) maps to input coordinate (i + 0.5) * W_in / W_out."""
    W, H = int(size[0]), int(size[1])
    if W <= 0 or H <= 0:
        raise SegmentsError(f"resize target must be positive (W, H), got {size}")
    _, h, w = segmaps.shape
    if (h, w) == (H, W):
        return segmaps
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return np.ascontiguousarray(segmaps[:, rows[:, None], cols[None, :]])


# ----------------------------------------------------------------------------- validation helpers


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """int64 label map (any shape) with its non-negative labels renumbered 0..n-1 in increasing
    order of value; -1 stays -1."""
    out = np.full(labels.shape, -1, np.int64)
    m = labels >= 0
    if m.any():
        out[m] = np.unique(labels[m], return_inverse=True)[1]
    return out


def _open(path: Path):
    if not path.is_file():
        raise SegmentsError(f"{path}: no such segments file")
    try:
        return open_npz(path, "segments file")  # declared array sizes checked before anything is allocated
    except NpzError as e:
        raise SegmentsError(str(e)) from None


def _read_str(z, key: str) -> str:
    if key not in z.files:
        return ""
    try:
        v = z[key]
    except Exception:
        return ""
    v = v.item() if v.ndim == 0 else (v.reshape(-1)[0] if v.size else "")
    return v.decode() if isinstance(v, bytes) else str(v)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


MIN_SEGMENT_TABLE = 1 << 16
"""Without embeddings, segment indices must stay below max(L * H * W, this): an image's segment
table cannot plausibly hold more entries than the image has pixels over all levels."""


def _check_segmaps(path: Path, segmaps: np.ndarray, table_rows: int | None = None) -> None:
    """Shape, dtype and value checks of [L, H, W] segmaps; `table_rows` (the embeddings' row count)
    bounds the indices when given. Memory stays proportional to the map, whatever its values: a
    10 KB file holding one index of 2e9 once made this check allocate 15 GiB."""
    if segmaps.ndim != 3:
        raise SegmentsError(f"{path}: 'segmaps' must be [L, H, W] or [H, W], got shape {tuple(segmaps.shape)}")
    if not np.issubdtype(segmaps.dtype, np.integer):
        raise SegmentsError(f"{path}: 'segmaps' must have an integer dtype (int32), got {segmaps.dtype}")
    L, H, W = segmaps.shape
    if L == 0 or H == 0 or W == 0:
        raise SegmentsError(f"{path}: 'segmaps' is empty (shape {tuple(segmaps.shape)})")
    lo, hi = int(segmaps.min()), int(segmaps.max())
    if lo < -1:
        raise SegmentsError(f"{path}: 'segmaps' has value {lo} < -1 (-1 means no segment)")
    if hi > _INT32_MAX - 1:
        raise SegmentsError(f"{path}: 'segmaps' has value {hi}, beyond int32")
    if table_rows is not None and hi >= table_rows:
        raise SegmentsError(f"{path}: 'segmaps' has segment index {hi} but 'embeddings' has {table_rows} rows "
                            "(one per segment index)")
    if table_rows is None and hi >= max(L * H * W, MIN_SEGMENT_TABLE):
        raise SegmentsError(f"{path}: 'segmaps' has segment index {hi}, more than the {L * H * W} pixels of its "
                            f"{L} level(s) could hold; indices number this image's segments from 0")
    if L > 1 and hi >= 0:
        per_level = [np.unique(segmaps[level]) for level in range(L)]
        ids = np.concatenate([u[u >= 0] for u in per_level])
        levels = np.concatenate([np.full(int((u >= 0).sum()), level) for level, u in enumerate(per_level)])
        order = np.argsort(ids, kind="stable")
        dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
        if dup.size:
            a, b = order[dup[0]], order[dup[0] + 1]
            raise SegmentsError(
                f"{path}: segment index {int(ids[a])} appears at levels {int(levels[a])} and {int(levels[b])}; "
                "indices must be unique across levels"
            )


def _check_embeddings(path: Path, emb: np.ndarray, M: int) -> None:
    if emb.ndim != 2:
        raise SegmentsError(f"{path}: 'embeddings' must be [M, E], got shape {tuple(emb.shape)}")
    if not np.issubdtype(emb.dtype, np.floating):
        raise SegmentsError(f"{path}: 'embeddings' must be float16 or float32, got {emb.dtype}")
    if emb.shape[0] != M:
        raise SegmentsError(f"{path}: 'embeddings' has {emb.shape[0]} rows but segmaps.max()+1 = {M}")
    if not np.all(np.isfinite(emb)):
        raise SegmentsError(f"{path}: 'embeddings' contains NaN or infinite values")


def _check_scores(path: Path, scores: np.ndarray, M: int) -> None:
    if scores.ndim != 1 or scores.shape[0] != M:
        raise SegmentsError(f"{path}: 'scores' must be [M] with M = segmaps.max()+1 = {M}, got shape {tuple(scores.shape)}")
    if not np.issubdtype(scores.dtype, np.number) or not np.all(np.isfinite(scores)):
        raise SegmentsError(f"{path}: 'scores' must be finite numbers")
