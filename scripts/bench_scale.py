"""Benchmark: the whole pipeline at real scene sizes, one size at a time.

For each N in --sizes a tabletop scene (`splatseg.data.synthetic`, five objects and a table) is
generated with N Gaussians (70 % on the objects) and --views views of --resolution px on the long
side (4:3), then, each as its own process so that its peak RSS is its own (os.wait4):

  train     `splatseg train --data SCENE --out RUN` (segments, blend weights of the training
            views, training, lifting and the feature maps; the stage times come from run.json)
  click     `load_field` and the picking tensors once (as the viewer does), then --clicks random
            clicks through `prompts.select_clicks` (the rule `segment` and the viewer use); median
            and p95 ms per click (the set-up is printed apart)
  export    `splatseg export-all --run RUN --out OBJECTS`
  viewer    the viewer's start: `ViewerApp` built on a free loopback port (field, picking tensors,
            the splat handle), then stopped; no browser

Printed: one markdown row per size (wall seconds per stage, peak RSS per process in GB, the run
directory's size and its bytes per Gaussian), and the one-click 3D IoU of the run against the
generated ground truth (mean over the objects) so a faster setting cannot pass unnoticed.

    python scripts/bench_scale.py --sizes 100000 --views 50 --resolution 512 --steps 300
    python scripts/bench_scale.py --sizes 1000000 --views 200 --resolution 512        # target < 45 min, < 16 GB
    python scripts/bench_scale.py --sizes 3000000 --views 300 --resolution 512        # target: completes
    python scripts/bench_scale.py --device cuda ...                                   # a GPU row

Targets (issue 16, 2 cores / 24 GB): 1M Gaussians with 200 views at 512 px trains in under 45
minutes with peak RSS under 16 GB; 3M with 300 views completes; a click under 5 ms at 3M; bytes per
Gaussian within 1.5x of today's. Times are wall clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's splatseg, as its child processes get through PYTHONPATH
NUM_OBJECTS = 5  # the synthetic tabletop's objects


def run_measured(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS GB) of one child process; its output goes to `log`. Raises on failure."""
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode} after {wall:.0f} s:\n{tail}")
    return wall, usage.ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux


def dir_bytes(path: Path, names: tuple[str, ...] | None = None) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and (names is None or p.name in names))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLICK_CODE = """
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from splatseg.prompts import run_picking, select_clicks
from splatseg.query import Click
from splatseg.run import load_field
t = time.perf_counter(); fld = load_field(sys.argv[1]); load_s = time.perf_counter() - t
t = time.perf_counter(); picking = run_picking(fld); picking_s = time.perf_counter() - t  # once, as the viewer does
rng = np.random.default_rng(0); times = []
for _ in range(int(sys.argv[2])):
    v = int(rng.integers(len(fld.view_names))); w, h = fld.image_sizes[v]
    click = Click(fld.view_names[v], float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.8) * h))
    t = time.perf_counter(); select_clicks(fld, [click], picking=picking); times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"load_s": load_s, "picking_s": picking_s, "click_ms": float(np.median(times)),
                  "click_p95_ms": float(np.percentile(times, 95))}))
"""

VIEWER_CODE = """
import sys, time
from pathlib import Path
from splatseg.viewer.app import ViewerApp
from splatseg.viewer.config import ViewerConfig
t = time.perf_counter()
app = ViewerApp(ViewerConfig(run=Path(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2])))
print(f"viewer started in {time.perf_counter() - t:.2f} s on port {app.port}")
app.stop()
"""


def bench_size(n: int, args, work: Path, env: dict) -> dict:
    from splatseg.data.synthetic import SyntheticConfig, generate

    width = args.resolution
    height = int(round(args.resolution * 3 / 4))
    per_object = int(0.7 * n / NUM_OBJECTS)
    cfg = SyntheticConfig(seed=args.seed, num_cameras=args.views, width=width, height=height,
                          gaussians_per_object=per_object, table_gaussians=n - NUM_OBJECTS * per_object)
    scene = work / f"scene_{n}"
    t = time.perf_counter()
    generate(scene, cfg, progress=args.progress)
    generate_s = time.perf_counter() - t
    run, objects = work / f"run_{n}", work / f"objects_{n}"
    py, splatseg = sys.executable, [sys.executable, "-m", "splatseg.cli"]
    train_cmd = [*splatseg, "train", "--data", str(scene), "--out", str(run), "--device", args.device,
                 "--test-every", "8", "--train-max-side", str(args.train_max_side)]
    if args.steps is not None:
        train_cmd += ["--steps", str(args.steps)]
    if not args.progress:
        train_cmd.append("--no-progress")
    train_s, train_gb = run_measured(train_cmd, env, work / f"train_{n}.log")
    info = json.loads((run / "run.json").read_text())
    click_log = work / f"click_{n}.log"
    click_s, click_gb = run_measured([py, "-c", CLICK_CODE, str(run), str(args.clicks), str(args.threads)], env, click_log)
    click = json.loads(click_log.read_text().strip().splitlines()[-1])
    export_s, export_gb = run_measured([*splatseg, "export-all", "--run", str(run), "--out", str(objects)], env, work / f"export_{n}.log")
    viewer_s, viewer_gb = run_measured([py, "-c", VIEWER_CODE, str(run), str(free_port())], env, work / f"viewer_{n}.log")

    from splatseg.demo import DEFAULT_THRESHOLD
    from splatseg.evaluate import evaluate_one_click_per_object

    ious = [r.iou_3d for r in evaluate_one_click_per_object(scene, run, DEFAULT_THRESHOLD).results]
    run_bytes = dir_bytes(run, ("field.npz", "views.npz", "run.json"))
    setup_s = info["seconds"] - info["segments_seconds"] - info["train_seconds"] - info["lift_seconds"]
    return {
        "N": n, "views": args.views, "size": f"{width}x{height}", "train_res": info["train_resolution"], "steps": info["config"]["iterations"],
        "generate_s": generate_s, "segments_s": info["segments_seconds"], "blend_weights_s": setup_s,
        "training_s": info["train_seconds"], "lifting_maps_s": info["lift_seconds"], "train_total_s": train_s, "train_rss_gb": train_gb,
        "click_ms": click["click_ms"], "click_p95_ms": click["click_p95_ms"], "field_load_s": click["load_s"], "picking_s": click["picking_s"], "click_rss_gb": click_gb,
        "export_s": export_s, "export_rss_gb": export_gb, "viewer_s": viewer_s, "viewer_rss_gb": viewer_gb,
        "run_mb": run_bytes / 1e6, "bytes_per_gaussian": run_bytes / n,
        "field_bytes_per_gaussian": dir_bytes(run, ("field.npz",)) / n, "iou_3d": statistics.mean(ious) if ious else float("nan"),
    }


COLUMNS = [("N", "{:,}"), ("views", "{}"), ("size", "{}"), ("steps", "{}"), ("segments_s", "{:.0f}"), ("blend_weights_s", "{:.0f}"),
           ("training_s", "{:.0f}"), ("lifting_maps_s", "{:.0f}"), ("train_total_s", "{:.0f}"), ("train_rss_gb", "{:.2f}"),
           ("click_ms", "{:.2f}"), ("export_s", "{:.1f}"), ("export_rss_gb", "{:.2f}"), ("viewer_s", "{:.1f}"),
           ("viewer_rss_gb", "{:.2f}"), ("run_mb", "{:.1f}"), ("bytes_per_gaussian", "{:.0f}"), ("iou_3d", "{:.3f}")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="Gaussian counts N, each run on its own (default 100k)")
    p.add_argument("--views", type=int, default=50, help="views per scene (issue 16: 50-300)")
    p.add_argument("--resolution", type=int, default=512, help="long side of the images in px (issue 16: 512-1024); 4:3")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--train-max-side", type=int, default=128, help="train --train-max-side")
    p.add_argument("--clicks", type=int, default=20, help="clicks timed")
    p.add_argument("--device", default="cpu", help="train --device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=2, help="OMP / torch threads of every stage")
    p.add_argument("--seed", type=int, default=0, help="scene seed")
    p.add_argument("--work", type=Path, default=None, help="keep scenes, runs and logs here (default: a temporary folder, removed)")
    p.add_argument("--progress", action="store_true", help="show the stages' progress bars")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| " + " | ".join(c for c, _ in COLUMNS) + " |", flush=True)
    print("|" + "---|" * len(COLUMNS), flush=True)
    try:
        for n in args.sizes:
            row = bench_size(n, args, work, env)
            rows.append(row)
            print("| " + " | ".join(fmt.format(row[c]) for c, fmt in COLUMNS) + " |", flush=True)
            print(f"  (scene generation {row['generate_s']:.0f} s, field load {row['field_load_s']:.1f} s, picking set-up {row['picking_s']:.1f} s, click p95 "
                  f"{row['click_p95_ms']:.2f} ms, field.npz {row['field_bytes_per_gaussian']:.0f} B/Gaussian, "
                  f"train resolution {row['train_res']}; peak RSS of this driver {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB)",
                  flush=True)
    finally:
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=1))
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
