"""The reference trainer's output layout beside `splats.ply`, so SIBR, SAGA and Gaussian Grouping
(and `splatseg train --splats OUT`) open a recon output folder as an INRIA one:

    OUT/point_cloud/iteration_<N>/point_cloud.ply   the splats after N steps (reference layout), one
                                                    per checkpoint; the last one equals splats.ply
    OUT/cameras.json   [{id, img_name, width, height, position, rotation, fy, fx}]: camera -> world
                       rotation (3x3, OpenCV axes) and centre, focal lengths in pixels, at the image
                       files' resolution (INRIA `camera_to_JSON`)
    OUT/cfg_args       `Namespace(...)` repr as the INRIA train.py writes it (source_path, model_path,
                       sh_degree, white_background, eval, images, resolution, ...)
All written atomically.
"""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

from splatseg.data import load_scene
from splatseg.io.atomic import atomic_write
from splatseg.io.ply import write_ply
from splatseg.types import Cameras, Splats


def iteration_ply(out: Path, step: int) -> Path:
    """OUT/point_cloud/iteration_<step>/point_cloud.ply."""
    return Path(out) / "point_cloud" / f"iteration_{step}" / "point_cloud.ply"


def write_iteration(out: Path, step: int, splats: Splats) -> Path:
    """Writes the splats after `step` steps as the INRIA iteration PLY; returns its path."""
    path = iteration_ply(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_ply(path, splats)
    return path


def cameras_json(cameras: Cameras) -> list[dict]:
    """INRIA cameras.json entries for `cameras` (see the module docstring)."""
    c2w = cameras.camtoworlds
    return [{"id": i, "img_name": name, "width": int(cameras.widths[i]), "height": int(cameras.heights[i]),
             "position": c2w[i, :3, 3].tolist(), "rotation": c2w[i, :3, :3].tolist(),
             "fy": float(cameras.Ks[i, 1, 1]), "fx": float(cameras.Ks[i, 0, 0])}
            for i, name in enumerate(cameras.names)]


def cfg_args(data: Path, out: Path, sh_degree: int, white_background: bool, holds_out: bool) -> str:
    """The INRIA train.py `cfg_args` text (str(Namespace(...)) of its ModelParams)."""
    return str(Namespace(data_device="cuda", depths="", eval=holds_out, images="images", model_path=str(Path(out).resolve()),
                         resolution=-1, sh_degree=sh_degree, source_path=str(Path(data).resolve()), train_test_exp=False,
                         white_background=white_background))


def write_layout(data: Path, out: Path, sh_degree: int, white_background: bool, holds_out: bool) -> None:
    """OUT/cameras.json (the scene's cameras at full resolution) and OUT/cfg_args."""
    cameras = load_scene(data).cameras
    with atomic_write(Path(out) / "cameras.json") as f:
        f.write(json.dumps(cameras_json(cameras)).encode())
    with atomic_write(Path(out) / "cfg_args") as f:
        f.write(cfg_args(data, out, sh_degree, white_background, holds_out).encode())
