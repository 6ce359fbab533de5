"""`splatseg info PATH`: what a splat file or a trainer's output folder holds, as one JSON line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from splatseg.data.sources import resolve_splats
from splatseg.io.formats import read_splats


@dataclass
class InfoConfig:
    """Describe a splat file (PLY, compressed PLY, .splat, .spz) or a trainer's output folder
    (INRIA, gsplat, nerfstudio); prints one JSON line last."""

    path: tyro.conf.Positional[Path]
    """Splat file or output folder."""


def splat_info(path: Path) -> dict:
    """{format, num_gaussians, sh_degree, bounds [[xmin, ymin, zmin], [xmax, ymax, zmax]] (None when
    empty), extra_properties, has_normals, file, bytes}; for folders also kind, scene,
    scene_exists, world_from_splats, transform_file, cameras_file and notes (`data.sources`)."""
    source = resolve_splats(path)
    splats = read_splats(source.splats_file)
    bounds = None
    if len(splats):
        bounds = [np.min(splats.means, axis=0).tolist(), np.max(splats.means, axis=0).tolist()]
    info = {
        "path": str(path),
        "format": source.format,
        "num_gaussians": len(splats),
        "sh_degree": splats.sh_degree,
        "bounds": bounds,
        "extra_properties": list(splats.extra),
        "has_normals": splats.normals is not None,
        "file": str(source.splats_file),
        "bytes": source.splats_file.stat().st_size,
    }
    if source.kind != "file":
        details = source.as_json()
        details.pop("splats_file")
        details.pop("format")
        info.update(details)
    return info
