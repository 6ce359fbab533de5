"""Recall of objects by their screen size against the training resolution (small objects in large scenes).

Generates family scenes (`splatseg.data.family`) whose objects are shrunk by --object-scale while
the support, room and cameras stay, makes the simulator's segments once per scene (`eval_quality.py`'s
SAM failure simulator at --noise), trains the default pipeline at every --sides value of
--train-max-side, clicks every object once (the deepest interior pixel of the training view where it
is largest) and scores the click as `eval_quality.py` does. Each object is binned by its size on
screen at the training resolution: the diameter of a disc with the object's pixel area in the
clicked view, scaled from the photo to the training image (pixels). Prints, per training side and
size bin, the number of objects, 3D recall and IoU (by count and by opacity x area), held-out 2D
IoU, and the mean training seconds (segments excluded).

    python scripts/eval_resolution.py --seeds 300-302 --object-scale 0.4 --sides 128 192 256
Scenes, segments and runs are cached under --work and reused.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

BINS = (0.0, 6.0, 12.0, 24.0, float("inf"))
"""Edges of the screen-size bins (object diameter in training-image pixels)."""


@dataclass
class Args:
    seeds: str = "300-302"
    """Scene seeds: "300-302" or "300,305"."""
    object_scale: float = 0.4
    """Object size factor of the family's scenes (1: the family as it is)."""
    sides: list[int] = field(default_factory=lambda: [128, 192, 256])
    """--train-max-side values to train at."""
    noise: Literal["none", "low", "medium", "high"] = "medium"
    """Noise level of the segment simulator."""
    work: Path = Path("outputs/eval_resolution")
    """Cache of scenes, segments and runs."""
    json: Path | None = None
    """Also write every click's row here."""
    threads: int = 2
    """torch CPU threads."""
    progress: bool = True
    """Show progress bars."""


def scene_for(args: Args, seed: int) -> Path:
    from splatseg.data.family import FamilyConfig, generate_family_scene

    path = args.work / "scenes" / f"scale{args.object_scale:g}_{seed:03d}"
    if not (path / "splats.ply").exists():
        generate_family_scene(path, FamilyConfig(seed=seed, object_scale=args.object_scale), progress=args.progress)
    return path


def trained(args: Args, scene: Path, segments: Path, side: int) -> tuple[Path, float]:
    from splatseg.cli import main as cli_main

    out = args.work / "runs" / f"side{side}_{args.noise}" / scene.name
    if not (out / "run.json").exists():
        argv = ["train", "--data", str(scene), "--out", str(out), "--segments", str(segments), "--holdout-every", "8",
                "--train-max-side", str(side), *([] if args.progress else ["--no-progress"])]
        if cli_main(argv) != 0:
            raise SystemExit(f"eval_resolution: training failed for {scene} at {side} px")
    info = json.loads((out / "run.json").read_text())
    return out, float(info["seconds"] - info["segments_seconds"])


def screen_diameter(scene: Path, stem: str, object_name: str, side: int) -> float:
    """Diameter (training-image pixels) of a disc with the object's pixel area in view `stem`."""
    from splatseg.data.synthetic import load_ground_truth

    gt = load_ground_truth(scene)
    labels = gt.view_labels(stem)[0]
    area = float((labels == gt.object_names.index(object_name)).sum())
    scale = min(1.0, side / max(labels.shape))
    return float(np.sqrt(4.0 * area / np.pi) * scale)


def table_row(side: int, label: str, rows: list[dict]) -> str:
    """One line of the summary: objects, recall and IoU (count, area), held-out 2D IoU, means over rows."""
    m = {k: np.nanmean([r[k] for r in rows]) for k in ("recall_3d_count", "recall_3d_area", "iou_3d_count", "iou_3d_area", "iou_2d")}
    return (f"{side:>5} {label:>12} {len(rows):>8} {m['recall_3d_count']:>10.3f} {m['recall_3d_area']:>11.3f} "
            f"{m['iou_3d_count']:>8.3f} {m['iou_3d_area']:>9.3f} {m['iou_2d']:>6.3f}")


def main(args: Args) -> int:
    import torch

    torch.set_num_threads(max(1, args.threads))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from eval_quality import Args as QualityArgs
    from eval_quality import flatten, parse_seeds, segments_for

    from splatseg.evaluate import score_clicks
    from splatseg.prompts import run_picking, select_clicks
    from splatseg.run import load_field

    qargs = QualityArgs(noise=args.noise, work=args.work, progress=args.progress)
    rows, seconds = [], {s: [] for s in args.sides}
    for seed in parse_seeds(args.seeds):
        scene = scene_for(args, seed)
        segments = segments_for(qargs, scene, seed)
        for side in args.sides:
            run, secs = trained(args, scene, segments, side)
            seconds[side].append(secs)
            fld = load_field(run)
            picking = run_picking(fld)
            for score in score_clicks(scene, fld, lambda f, c: select_clicks(f, [c], picking=picking), rules=["deepest"], seed=seed):
                row = flatten(seed, score)
                row.update(side=side, diameter_px=screen_diameter(scene, score.click[0], score.object, side))
                rows.append(row)
            print(f"seed {seed} side {side}: {len([r for r in rows if r['seed'] == seed and r['side'] == side])} objects, "
                  f"train {secs:.0f} s", flush=True)
    print(f"\nobject scale {args.object_scale:g}, seeds {args.seeds}, segments: simulator at {args.noise}; one click per object (deepest)")
    print(f"{'side':>5} {'diameter px':>12} {'objects':>8} {'recall cnt':>10} {'recall area':>11} {'IoU cnt':>8} {'IoU area':>9} {'2D':>6}")
    for side in args.sides:
        mine = [r for r in rows if r["side"] == side]
        for lo, hi in zip(BINS[:-1], BINS[1:]):
            b = [r for r in mine if lo <= r["diameter_px"] < hi]
            if b:
                print(table_row(side, f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">= {lo:g}", b))
        print(table_row(side, "all", mine) + f"   train s: mean {np.mean(seconds[side]):.0f}")
    if args.json is not None:
        from splatseg.io.atomic import atomic_write

        args.json.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.json) as f:
            f.write(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "clicks": rows, "train_seconds": seconds}, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
