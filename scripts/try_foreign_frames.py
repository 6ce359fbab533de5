"""Try the README's "Bring your own scene" commands on a generated scene written in other tools'
layouts, as a new user would run them (the tools themselves are not needed):

- COLMAP + the INRIA trainer: `SCENE/sparse/0` + `images/`, and the trainer's output folder with
  `point_cloud/iteration_7000/point_cloud.ply` in COLMAP's frame (the trainer keeps it);
- nerfstudio: `ns-process-data`'s transforms.json (frames in its `applied_transform` frame), and the
  splatfacto run's `dataparser_transforms.json` + `ns-export gaussian-splat`'s splat.ply, which is in the
  dataparser's normalised frame (auto-orient "up", centre on the poses, scale to the unit cube).

Runs `splatseg train` (the nerfstudio case first without, then with --splats-transform) and one click
with `splatseg segment`, and prints each command's last line.

    python scripts/try_foreign_frames.py --out /tmp/foreign
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from scipy.spatial.transform import Rotation

from splatseg.data import load_scene
from splatseg.data.frames import Similarity, transform_splats
from splatseg.data.synthetic import SyntheticConfig, generate
from splatseg.data.transforms_json import OPENGL_FROM_OPENCV
from splatseg.io.ply import read_ply, write_ply


@dataclass
class Args:
    out: Path = Path("/tmp/splatseg-foreign")
    """Folder for the layouts and runs (replaced)."""
    seed: int = 0
    """Generated scene."""
    iterations: int = 300
    """Training steps of each run."""


def write_colmap(scene_dir: Path, root: Path) -> None:
    import pycolmap

    cams = load_scene(scene_dir).cameras
    (root / "images").mkdir(parents=True)
    rec = pycolmap.Reconstruction()
    K = cams.Ks[0]
    cam = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 1.0, int(cams.widths[0]), int(cams.heights[0]))
    cam.params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
    rec.add_camera_with_trivial_rig(cam)
    for iid, (name, path, viewmat) in enumerate(zip(cams.names, cams.image_paths, cams.viewmats), start=1):
        shutil.copy(path, root / "images" / Path(path).name)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=Path(path).name, camera_id=1, image_id=iid), pycolmap.Rigid3d(viewmat[:3]))
    (root / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(root / "sparse" / "0"))


def write_nerfstudio(scene_dir: Path, data: Path, run: Path, export: Path) -> None:
    """ns-process-data's transforms.json, splatfacto's dataparser_transforms.json, ns-export's splat.ply."""
    cams = load_scene(scene_dir).cameras
    applied = np.eye(4)
    applied[:3] = np.eye(4)[:3][[0, 2, 1]]
    applied[2, :3] *= -1  # nerfstudio's colmap_to_json: world rows (x, z, -y)
    c2w = applied @ cams.camtoworlds @ OPENGL_FROM_OPENCV  # frames as ns-process-data writes them
    (data / "images").mkdir(parents=True)
    frames = []
    for path, pose in zip(cams.image_paths, c2w):
        shutil.copy(path, data / "images" / Path(path).name)
        frames.append({"file_path": f"images/{Path(path).name}", "transform_matrix": pose.tolist()})
    K = cams.Ks[0]
    meta = {"camera_model": "OPENCV", "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
            "w": int(cams.widths[0]), "h": int(cams.heights[0]), "frames": frames, "applied_transform": applied[:3].tolist()}
    (data / "transforms.json").write_text(json.dumps(meta, indent=2))
    # nerfstudio's auto_orient_and_center_poses(method="up", center_method="poses") + auto_scale_poses
    centre = c2w[:, :3, 3].mean(0)
    up = c2w[:, :3, 1].mean(0)
    rotation = Rotation.align_vectors([[0.0, 0.0, 1.0]], [up / np.linalg.norm(up)])[0].as_matrix()
    orient = np.eye(4)
    orient[:3, :3] = rotation
    orient[:3, 3] = -rotation @ centre
    scale = 1.0 / np.abs((orient @ c2w)[:, :3, 3]).max()
    saved = (orient @ applied)[:3]  # nerfstudio saves transform @ applied_transform
    run.mkdir(parents=True)
    (run / "dataparser_transforms.json").write_text(json.dumps({"transform": saved.tolist(), "scale": scale}, indent=2))
    ns_from_colmap = np.eye(4)
    ns_from_colmap[:3] = scale * saved
    export.parent.mkdir(parents=True)
    write_ply(export, transform_splats(read_ply(scene_dir / "splats.ply"), Similarity.from_matrix(ns_from_colmap)))


def splatseg(*args) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "splatseg.cli", *map(str, args)], capture_output=True, text=True)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return proc.returncode, lines


def main(args: Args) -> int:
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    scene_dir = generate(out / "generated", SyntheticConfig(seed=args.seed, num_cameras=24), progress=False)
    write_colmap(scene_dir, out / "colmap_scene")
    inria = out / "inria_output" / "point_cloud" / "iteration_7000" / "point_cloud.ply"
    inria.parent.mkdir(parents=True)
    shutil.copy(scene_dir / "splats.ply", inria)
    ns_run = out / "outputs" / "scene" / "splatfacto" / "2025-01-01_000000"
    write_nerfstudio(scene_dir, out / "ns_data", ns_run, out / "exports" / "splat" / "splat.ply")

    steps = ["--steps", args.iterations, "--no-progress"]
    trials = [
        ("COLMAP + INRIA trainer", ["train", "--data", out / "colmap_scene", "--splats", inria, "--out", out / "run_inria", *steps]),
        ("nerfstudio, no transform", ["train", "--data", out / "ns_data", "--splats", out / "exports/splat/splat.ply",
                                      "--out", out / "run_ns", *steps]),
        ("nerfstudio", ["train", "--data", out / "ns_data", "--splats", out / "exports/splat/splat.ply",
                        "--splats-transform", ns_run / "dataparser_transforms.json", "--out", out / "run_ns", *steps]),
    ]
    for label, command in trials:
        code, lines = splatseg(*command)
        shown = [line for line in lines if line.startswith(("alignment", "splats moved", "splatseg: error", "run written"))]
        print(f"[{label}] exit {code}")
        for line in shown:
            print(f"    {line}")
    for run in ("run_inria", "run_ns"):
        info = json.loads((out / run / "run.json").read_text())
        names = info["train_views"]
        code, lines = splatseg("segment", "--run", out / run, "--click", names[0], 96, 80, "--out", out / f"{run}_obj.ply")
        print(f"[segment {run}] exit {code}: {lines[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
