"""Mesh quality of `splatseg mesh` on a family of generated scenes: one click per object, the
selection meshed, scored against the part of the object's true surface the training views see
(Chamfer distance, normal consistency, precision / recall / F-score at 2% of the object's
bounding-box diagonal; `splatseg.evaluate_mesh` says exactly how).

Scenes and runs are generated and trained into --work on first use (seed s: `scene_s/`, `run_s/`,
the demo's settings: 40 views of 192x144, 2,500 Gaussians per object, 800 steps, every 8th view
held out) and reused afterwards. Seeds listed in --tuned-seeds are reported apart from the others
(the defaults were chosen on those; the rest were kept out of tuning).

    python scripts/eval_mesh.py --work runs/mesh_eval --seeds 0 1 2 3 4 5
    python scripts/eval_mesh.py --work runs/mesh_eval --seeds 0 --selection truth   # fusion alone
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro

from splatseg.data.synthetic import SyntheticConfig, generate
from splatseg.evaluate_mesh import MeshObjectResult, evaluate_meshes
from splatseg.io.atomic import atomic_write
from splatseg.mesh import MeshOptions
from splatseg.query import DEFAULT_THRESHOLD
from splatseg.train import TrainConfig, train


@dataclass
class Args:
    work: Path
    """Folder for the generated scenes and trained runs (created; reused when present)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    """Scene seeds to evaluate."""
    tuned_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds the fusion defaults were tuned on (reported apart from the held-out ones)."""
    selection: Literal["click", "truth"] = "click"
    """'click': one click per object (the product path); 'truth': the true Gaussians (fusion alone)."""
    threshold: float = DEFAULT_THRESHOLD
    """Selection threshold on the lifted scores."""
    fusion: Annotated[MeshOptions, tyro.conf.OmitArgPrefixes] = field(default_factory=MeshOptions)
    """Fusion options (the `splatseg mesh` defaults unless given)."""
    threads: int = 2
    """torch CPU threads."""
    json: Path | None = None
    """Also write every row and the summaries here."""


def ensure_run(work: Path, seed: int) -> tuple[Path, Path]:
    """(scene dir, run dir) for a seed, generated and trained when missing."""
    scene, run = work / f"scene_{seed}", work / f"run_{seed}"
    if not scene.exists():
        print(f"generating scene seed {seed} ...", flush=True)
        generate(scene, SyntheticConfig(seed=seed), progress=False)
    if not (run / "run.json").exists():
        print(f"training run seed {seed} ...", flush=True)
        train(TrainConfig(data=scene, out=run, iterations=800, holdout_every=8, progress=False))
    return scene, run


COLUMNS = ("seed", "object", "selected", "true", "IoU3D", "verts", "faces", "voxel", "wall_s", "cpu_s", "seen", "chamfer", "NC", "P", "R", "F")


def print_row(seed: int, r: MeshObjectResult) -> None:
    print(f"{seed:>4} {r.name:<7} {r.selected:>8} {r.true_gaussians:>5} {r.iou_3d:>6.3f} {r.vertices:>7} {r.faces:>7} "
          f"{r.voxel_size:>7.4f} {r.seconds:>6.1f} {r.cpu_seconds:>6.1f} {r.seen_fraction:>5.2f} {r.chamfer:>8.4f} "
          f"{r.normal_consistency:>5.3f} {r.precision:>5.3f} {r.recall:>5.3f} {r.fscore:>5.3f}", flush=True)


def summarise(rows: list[tuple[int, MeshObjectResult]]) -> dict:
    def stat(key):
        v = np.array([getattr(r, key) for _, r in rows], float)
        return {"mean": float(v.mean()), "worst": float(v.max() if key in ("chamfer", "seconds", "cpu_seconds") else v.min())}

    return {"objects": len(rows), **{k: stat(k) for k in ("fscore", "precision", "recall", "chamfer", "normal_consistency", "seconds", "cpu_seconds")}}


def main(args: Args) -> int:
    torch.set_num_threads(max(1, args.threads))
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"selection {args.selection}, threshold {args.threshold}, torch threads {args.threads}, "
          f"load average at start {os.getloadavg()[0]:.1f}")
    print(f"fusion: {args.fusion}")
    print(" ".join(f"{c:>6}" for c in COLUMNS))
    rows: list[tuple[int, MeshObjectResult]] = []
    try:
        for seed in args.seeds:
            scene, run = ensure_run(args.work, seed)
            for r in evaluate_meshes(scene, run, args.fusion, args.threshold, args.selection):
                rows.append((seed, r))
                print_row(seed, r)
    except (ValueError, FileNotFoundError) as e:
        print(f"eval_mesh: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    groups = {
        "tuned seeds": [x for x in rows if x[0] in args.tuned_seeds],
        "held-out seeds": [x for x in rows if x[0] not in args.tuned_seeds],
        "all": rows,
    }
    summary = {name: summarise(g) for name, g in groups.items() if g}
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    for name, s in summary.items():
        print(f"{name:<15} {s['objects']:>2} objects  F mean {s['fscore']['mean']:.3f} worst {s['fscore']['worst']:.3f}  "
              f"P {s['precision']['mean']:.3f}  R {s['recall']['mean']:.3f}  chamfer mean {s['chamfer']['mean']:.4f} "
              f"worst {s['chamfer']['worst']:.4f}  NC mean {s['normal_consistency']['mean']:.3f} worst {s['normal_consistency']['worst']:.3f}  "
              f"wall s mean {s['seconds']['mean']:.1f} worst {s['seconds']['worst']:.1f}  cpu s mean {s['cpu_seconds']['mean']:.1f} worst {s['cpu_seconds']['worst']:.1f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": [{"seed": s, **r.as_dict()} for s, r in rows], "summary": summary}
        with atomic_write(args.json) as f:
            f.write((json.dumps(payload, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
