"""The run directory: everything `segment`, `export-all` and `view` need after `train`.

Layout of RUN/ (all writes atomic: temp file + rename):
    run.json     metadata: scene and splats paths, the splats file's SHA-256, N, D, K, view names,
                 segment and CLIP producers, training config and figures; the split
                 (`heldout_views`, `split_source`), `splats_transform` (the --splats-transform record
                 with its world_from_splats 4x4, or null: re-apply it with
                 `splatseg.data.placement.splats_in_world`), `alignment` (the check's figures),
                 `undistortion` (the undistorted-image cache, or null)
    config.yml   the resolved configuration (a valid --config file)
    undistorted/ pinhole copies of distorted photos (splatseg.data.undistort), when there were any
    field.npz    features [N, D] float32 per Gaussian; queries [K, D], query_bias [K];
                 query_clip [K, E] (absent without CLIP embeddings);
                 lifted [K, N] uint8: per query, its masks from all training views lifted onto the
                 Gaussians through the blend weights (score = value / 255, in [0, 1]);
                 query_size [K] float32 (sum of lifted scores: the query's 3D extent);
                 visibility [N] float32 (sum of blend weights over training views)
    views.npz    names [V] str, maps [V, h, w, D] float16 rendered feature maps of every scene view
                 (training and held-out) at the training resolution; image_sizes [V, 2] (W, H)
    ckpt.pt      training state for resuming (parameters, optimiser, step)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splatseg.io.atomic import atomic_write

RUN_VERSION = 1


class RunError(ValueError):
    """A run directory that is missing, incomplete or inconsistent with its scene."""


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, writer) -> None:
    """Calls writer(binary file object) on a temporary file beside `path` (parents created),
    then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        writer(f)


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_npz(path: Path, **arrays) -> None:
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))


@dataclass
class Field:
    """A trained feature field, as loaded from a run directory (shapes in the module docstring)."""

    run_dir: Path
    info: dict
    features: np.ndarray
    queries: np.ndarray
    query_bias: np.ndarray
    query_clip: np.ndarray | None
    lifted: np.ndarray
    query_size: np.ndarray
    visibility: np.ndarray
    view_names: list[str]
    view_maps: np.ndarray
    image_sizes: np.ndarray

    @property
    def num_gaussians(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_queries(self) -> int:
        return int(self.queries.shape[0])

    @property
    def splats_path(self) -> Path:
        return Path(self.info["splats"])

    @property
    def scene_root(self) -> Path:
        return Path(self.info["scene"])

    @property
    def clip_has_weights(self) -> bool:
        return bool(self.info.get("clip_has_weights")) and self.query_clip is not None


def load_field(run_dir: Path) -> Field:
    """Reads RUN/{run.json, field.npz, views.npz}; one-line RunError when missing or malformed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist (train one with `splatseg train`)")
    for name in ("run.json", "field.npz", "views.npz"):
        if not (run_dir / name).is_file():
            raise RunError(f"run directory {run_dir} has no {name}: training did not finish")
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{run_dir / 'run.json'} is not valid JSON: {e}") from None
    if info.get("version") != RUN_VERSION:
        raise RunError(f"{run_dir} was written by an incompatible splatseg (run version {info.get('version')})")
    try:
        with np.load(run_dir / "field.npz") as z:
            arrays = {k: z[k] for k in z.files}
        with np.load(run_dir / "views.npz") as z:
            views = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / pickle / truncation errors
        raise RunError(f"cannot read the arrays in {run_dir}: {e}") from None
    field = Field(
        run_dir=run_dir,
        info=info,
        features=arrays["features"],
        queries=arrays["queries"],
        query_bias=arrays["query_bias"],
        query_clip=arrays.get("query_clip"),
        lifted=arrays["lifted"],
        query_size=arrays["query_size"],
        visibility=arrays["visibility"],
        view_names=[str(n) for n in views["names"]],
        view_maps=views["maps"],
        image_sizes=views["image_sizes"],
    )
    n, k = field.num_gaussians, field.num_queries
    if field.lifted.shape != (k, n) or field.visibility.shape != (n,) or info.get("num_gaussians") != n:
        raise RunError(f"{run_dir} is inconsistent: arrays disagree on the number of Gaussians or queries")
    return field
