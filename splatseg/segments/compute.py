"""Compute the segments cache of a scene: one `<out_dir>/<stem>.npz` per image (docs/FORMATS.md).

The caller (the training stage) supplies the images, and for the weights-free source the geometry
rendered from the splats; this module renders nothing. Images: (stem, rgb uint8 [H, W, 3] RGB,
Geometry | None). A cached file is reused when its `model` string equals the source's (and, with an
encoder, when it already has embeddings from the same `embedding_model`; segments that only lack
embeddings are embedded without being recomputed).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, Protocol, Union

import numpy as np

from splatseg.segments.cache import SegmentsError, read_meta, read_segments, segments_path, write_segments
from splatseg.segments.felzenszwalb import FelzenszwalbConfig, FelzenszwalbSource
from splatseg.segments.geometry import Geometry
from splatseg.segments.sam import SamConfig, SamSource
from splatseg.types import Segments

SourceConfig = Union[FelzenszwalbConfig, SamConfig]
"""The mask source as a tyro union of dataclasses: `felzenszwalb-config` (weights-free default) or `sam-config`."""


class SegmentSource(Protocol):
    """A mask source: `source(rgb, geometry) -> Segments`, and the `model` string it writes."""

    def model_name(self, with_geometry: bool) -> str: ...

    def __call__(self, rgb: np.ndarray, geometry: Geometry | None = None) -> Segments: ...


class SegmentEncoder(Protocol):
    """What `compute_segments` needs of a CLIP encoder (see `splatseg.semantics.clip`)."""

    @property
    def name(self) -> str: ...

    def encode_segments(self, rgb: np.ndarray, segmaps: np.ndarray, num_segments: int | None = None) -> np.ndarray: ...


def make_source(config: SourceConfig | Literal["felzenszwalb", "sam"] | None = None, *, sam_model: str | None = None,
                sam_checkpoint: str | os.PathLike | None = None, sam_input: str | None = None, **kwargs) -> SegmentSource:
    """A mask source from a config dataclass, or from a name plus that config's fields as kwargs
    (e.g. `make_source("sam", model_type="vit_b", checkpoint=path)`). None = the weights-free default.
    `sam_model` / `sam_checkpoint` / `sam_input` (CLI flags) set SamConfig.model_type / checkpoint /
    sam_input and are ignored by the felzenszwalb source, so a CLI can always pass them."""
    if config is None or config == "felzenszwalb":
        return FelzenszwalbSource(FelzenszwalbConfig(**kwargs))
    if config == "sam":
        if sam_model is not None:
            kwargs["model_type"] = sam_model
        if sam_checkpoint is not None:
            kwargs["checkpoint"] = Path(sam_checkpoint)
        if sam_input is not None:
            kwargs["sam_input"] = sam_input
        return SamSource(SamConfig(**kwargs))
    if kwargs:
        raise TypeError("pass either a config dataclass or a source name with keyword arguments, not both")
    if isinstance(config, FelzenszwalbConfig):
        return FelzenszwalbSource(config)
    if isinstance(config, SamConfig):
        return SamSource(config)
    raise SegmentsError(f"unknown mask source {config!r}; choose 'felzenszwalb' or 'sam'")


def segment_image(rgb: np.ndarray, geometry: Geometry | None, source: SegmentSource, encoder: SegmentEncoder | None = None,
                  segments: Segments | None = None) -> Segments:
    """One image's segments (`segments` when given, else `source(rgb, geometry)`), with float16
    CLIP embeddings added when there is an encoder: what `compute_segments` writes for it (the
    Ray tasks of `splatseg.train.segments_ray` run exactly this)."""
    if segments is None:
        segments = source(rgb, geometry)
    if encoder is not None:
        if segments.segmaps.shape[1:] != rgb.shape[:2]:
            from splatseg.segments.cache import resize_nearest

            segmaps = resize_nearest(segments.segmaps, (rgb.shape[1], rgb.shape[0]))
        else:
            segmaps = segments.segmaps
        emb = encoder.encode_segments(rgb, segmaps, num_segments=segments.num_segments)
        segments.embeddings = emb.astype(np.float16)
    return segments


def compute_segments(
    images: Iterable[tuple[str, np.ndarray, Geometry | None]],
    out_dir: str | os.PathLike,
    source: SegmentSource | SourceConfig | str | None = None,
    encoder: SegmentEncoder | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Run `source` on each image and write `<out_dir>/<stem>.npz`; returns the paths in input order.

    Args:
        images: (stem, rgb uint8 [H, W, 3], Geometry or None) per image; consumed lazily.
        out_dir: the cache folder (usually `segments_dir(scene)`).
        source: a mask source, or a config / name for `make_source` (None = weights-free default).
        encoder: optional CLIP encoder; adds `embeddings` [M, E] and `embedding_model`.
        overwrite: recompute even when a matching cache file exists.
        progress: show a tqdm bar over images.
    """
    if source is None or isinstance(source, (str, FelzenszwalbConfig, SamConfig)):
        source = make_source(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = len(images) if hasattr(images, "__len__") else None
    from tqdm.auto import tqdm

    paths: list[Path] = []
    with tqdm(images, total=total, desc="segments", unit="img", disable=not progress) as bar:
        for stem, rgb, geometry in bar:
            path = segments_path(out_dir, stem)
            model = source.model_name(geometry is not None)
            segments = None
            if path.exists() and not overwrite:
                try:
                    meta = read_meta(path)
                except SegmentsError:
                    meta = None
                if meta is not None and meta["model"] == model:
                    if encoder is None or (meta["has_embeddings"] and meta["embedding_model"] == encoder.name):
                        paths.append(path)
                        continue
                    try:
                        segments = read_segments(path)  # reuse the masks, add embeddings
                    except SegmentsError:
                        segments = None
            segments = segment_image(rgb, geometry, source, encoder, segments)
            write_segments(path, segments, embedding_model=encoder.name if encoder is not None else None)
            paths.append(path)
    return paths
