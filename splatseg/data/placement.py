"""Splats placed in a scene's frame: read the file, move it by `--splats-transform`, check it
against the photos. Every stage that puts splats beside cameras goes through here.

The splat *file* is never rewritten: a run records the file, its transform and the check's figures
(run.json), and exports copy the file's own rows (selections are per row), so an export stays in
the user's file frame; `splats_in_world` re-applies a run's transform for rendering with cameras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from splatseg.data import Scene
from splatseg.data.alignment import check_alignment, require_alignment
from splatseg.data.frames import Similarity, read_splats_transform, transform_splats
from splatseg.io.formats import read_splats
from splatseg.types import Splats

__all__ = ["PlacedSplats", "place_splats", "run_splats", "splats_in_world"]


@dataclass
class PlacedSplats:
    """Splats in the cameras' world frame, and what run.json records about them.

    Attributes:
        splats: N Gaussians, world frame (the file's values moved by `transform`).
        path: the splat file (rows are exported from it, unchanged).
        transform: run.json record of --splats-transform ({"path", "kind", "world_from_splats" 4x4, ...}) or None.
        alignment: the check's figures (`AlignmentReport.as_json`) or None when skipped.
    """

    splats: Splats
    path: Path
    transform: dict | None
    alignment: dict | None


def place_splats(path: str | Path, scene: Scene, transform: str | Path | None = None, check: bool = True,
                 views: Sequence[int] | None = None, log: Callable[[str], None] = print,
                 folder_frame: np.ndarray | None = None, folder_kind: str = "trainer") -> PlacedSplats:
    """Read the splat file (any format `io.formats.read_splats` takes), move it by the `transform`
    file, or else by `folder_frame` (the 4x4 world_from_splats a trainer's output folder implies,
    `data.sources.SplatSource.world_from_splats`), and unless `check` is False compare renders of
    `views` (default: all) with their photos; AlignmentError (one line) when they clearly disagree.
    Cameras must be pinhole (undistorted) for the check."""
    path = Path(path)
    splats = read_splats(path)
    record = None
    if transform is not None:
        sim, record = read_splats_transform(transform, scene.root)
    elif folder_frame is not None and not np.allclose(folder_frame, np.eye(4), atol=1e-9):
        sim = Similarity.from_matrix(np.asarray(folder_frame, np.float64), f"the {folder_kind} output's frame")
        record = {"path": None, "kind": f"{folder_kind} output frame", **sim.as_json()}
        transform = f"the {folder_kind} output's own frame"
    if record is not None:
        splats = transform_splats(splats, sim)
        log(f"splats moved from {transform} ({record['kind']}: scale {sim.scale:.4g}, rotation {sim.rotation_degrees:.1f} deg)")
    alignment = None
    if check:
        report = check_alignment(splats, scene.cameras, indices=views)
        require_alignment(report, transform_given=transform is not None)
        log(f"alignment check: {report.summary()}: splats and cameras agree")
        alignment = report.as_json()
    return PlacedSplats(splats, path, record, alignment)


def splats_in_world(path: str | Path, transform: dict | None) -> Splats:
    """The splat file in its run's world frame: `transform` is the record run.json keeps
    ("splats_transform"), None for splats already in the cameras' frame."""
    splats = read_splats(path)
    if transform is None:
        return splats
    return transform_splats(splats, Similarity.from_matrix(np.asarray(transform["world_from_splats"]), "run.json splats_transform"))


def run_splats(fld, in_world: bool = True) -> Splats:
    """A trained run's splats file (`fld`: `splatseg.run.Field`), in the run's cameras' frame (its
    --splats-transform or folder frame re-applied) or, with `in_world` False, in the file's own
    coordinates; RunError when the file no longer holds the Gaussians the run was trained on."""
    from splatseg.run import RunError

    splats = splats_in_world(fld.splats_path, fld.info.get("splats_transform")) if in_world else read_splats(fld.splats_path)
    if len(splats) != fld.num_gaussians:
        raise RunError(f"{fld.splats_path} has {len(splats)} Gaussians but the run was trained on {fld.num_gaussians}")
    return splats
