"""`splatseg segment` and `splatseg export-all`: prompts -> selection -> PLY files."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from splatseg.export import check_export_folder, export_objects, export_selection, feature_properties
from splatseg.io.formats import output_format
from splatseg.prompts import Prompts, select
from splatseg.query import CANONICAL_NEGATIVES, DEFAULT_THRESHOLD, QueryError, discover_objects, rank_queries_by_text
from splatseg.run import load_field, refuse_writing_over, run_inputs


@dataclass
class SegmentConfig:
    """Select an object by clicks, 3D points or a sentence and export it (or everything else) as a PLY."""

    run: Path
    """Run directory written by `splatseg train`."""
    out: Path
    """Splat file to write; its suffix picks the format: .ply (reference 3DGS layout; rows of a PLY
    source copied bit for bit), .compressed.ply (SuperSplat/PlayCanvas), .splat or .spz."""
    prompts: Annotated[Prompts, tyro.conf.OmitArgPrefixes] = field(default_factory=Prompts)
    """What to select (flags shared with every selecting command: splatseg.prompts)."""
    invert: bool = False
    """Export everything except the selection (object removal)."""
    with_features: bool = False
    """Append the learned features as feat_0.. float32 properties (.ply output only)."""


def run_segment(cfg: SegmentConfig) -> dict:
    """Selects, exports, and returns the JSON summary printed last by the command."""
    t0 = time.time()
    cfg.prompts.check()
    fld = load_field(cfg.run)
    refuse_writing_over(cfg.out, run_inputs(fld))
    output_format(cfg.out)  # an unknown suffix is refused before the selection is made
    sel = select(fld, cfg.prompts)
    mask = ~sel.mask if cfg.invert else sel.mask
    if not mask.any():
        raise QueryError("the selection is empty: nothing to export (try a lower --threshold or another click)")
    extra = feature_properties(fld.features) if cfg.with_features else None
    result = export_selection(fld.splats_path, mask, cfg.out, extra)
    summary = {"selected": result.count, "total": fld.num_gaussians, "queries": sel.queries, "out": str(cfg.out),
               "format": result.format, "large_splats_dropped": sel.large_dropped, "seconds": round(time.time() - t0, 3)}
    if sel.text_backend is not None:
        summary["text_backend"] = sel.text_backend
        print(f"text: answered by {'CLIPSeg relevancy lifted through the blend weights' if sel.text_backend == 'clipseg' else 'the queries CLIP vectors'}",
              flush=True)
    if result.notes:
        summary["notes"] = result.notes
    return summary


@dataclass
class ExportAllConfig:
    """Export one PLY per object the field discovered, plus index.json."""

    run: Path
    """Run directory written by `splatseg train`."""
    out: Path
    """Directory for one splat file per object (<name>.<format>) and index.json, written all at once:
    it must be new, empty, or a previous export-all output (holding index.json), which is then
    replaced whole."""
    format: Literal["ply", "compressed.ply", "splat", "spz"] = "ply"
    """Format of the object files: ply (reference layout, rows copied bit for bit from a PLY source),
    compressed.ply (SuperSplat/PlayCanvas), splat or spz."""
    threshold: float = DEFAULT_THRESHOLD
    """Lifted score in [0, 1] above which a Gaussian belongs to an object."""
    min_gaussians: int = 50
    """Objects with fewer Gaussians are skipped (at least 1)."""
    labels: list[str] = field(default_factory=list)
    """Candidate labels for naming objects by CLIP (needs CLIP weights); e.g. --labels mug ball table."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "object"


def run_export_all(cfg: ExportAllConfig) -> dict:
    t0 = time.time()
    if not 0.0 <= cfg.threshold <= 1.0:
        raise QueryError(f"--threshold must lie in [0, 1], got {cfg.threshold}")
    if cfg.min_gaussians < 1:
        raise QueryError(f"--min-gaussians must be at least 1, got {cfg.min_gaussians}")
    fld = load_field(cfg.run)
    refuse_writing_over(cfg.out, run_inputs(fld), folder=True)
    check_export_folder(cfg.out)  # before the work: a folder that cannot be replaced costs nothing
    objects = discover_objects(fld, cfg.threshold, cfg.min_gaussians)
    if not objects:
        raise QueryError("no object found in the field (try a lower --threshold or --min-gaussians)")
    labels: list[str | None] = [None] * len(objects)
    if cfg.labels and fld.clip_has_weights:
        from splatseg.text_query import run_text_encoder

        encoder = run_text_encoder(fld)
        label_emb = encoder.encode_text(list(cfg.labels))
        neg_emb = encoder.encode_text(list(CANONICAL_NEGATIVES))
        for j, (k, _) in enumerate(objects):
            scores = [rank_queries_by_text(fld, e, neg_emb)[k] for e in label_emb]
            labels[j] = cfg.labels[int(np.argmax(scores))]
    named = []
    for j, (k, mask) in enumerate(objects):
        stem = f"object_{j:03d}" + (f"_{_slug(labels[j])}" if labels[j] else "")
        named.append((stem, mask))
    index = export_objects(fld.splats_path, named, cfg.out, labels, suffix=f".{cfg.format}")
    return {"objects": len(named), "index": str(index), "total": fld.num_gaussians, "seconds": round(time.time() - t0, 3)}


def print_summary(summary: dict) -> None:
    print(json.dumps(summary))
