"""One-click quality over the generated scene family (`splatseg.data.family`), mean and worst case.

For every seed: generate the scene, make its 2D segments (the SAM failure simulator at a noise level,
or the weights-free default source), train the default pipeline, click every object by several rules
(deepest interior pixel, random interior pixels, other views) and score each click:
- held-out 2D IoU (the selection rendered in the held-out views against the true label maps),
- 3D IoU, precision and recall against the true Gaussians, counted three ways: by count, by opacity,
  and by opacity x footprint area (opacity x the product of the two largest scales),
- amodal 2D IoU of the export (the selected Gaussians rendered alone against the true object alone),
- train seconds (segments excluded).
Scenes, segments and runs are cached under --work and reused.

    python scripts/eval_quality.py --seeds 0-9 --noise medium
    python scripts/eval_quality.py --seeds 0-2 --density dense
    python scripts/eval_quality.py --seeds 100-107 --noise high --json high.json
    python scripts/eval_quality.py --seeds 200-205 --mask-source felzenszwalb --ply-only

--ply-only also trains a run on each scene's `splats.ply` alone (`train --splats FILE`, no photos:
its views are made up, `splatseg.data.virtual_views`) and scores it beside the photo-based run, with
the same clicks turned into 3D points (the surface the splats render under the click, in the scene's
own camera) and on the photo-based run's held-out views. A PLY-only run always makes its segments
with the weights-free source (the simulator needs true label maps of real views), so compare it
with `--mask-source felzenszwalb`.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tyro


@dataclass
class Args:
    seeds: str = "0-9"
    """Scene seeds: "0-9", "0,3,5" or "100-107"."""
    noise: Literal["none", "low", "medium", "high"] = "medium"
    """Noise level of the SAM failure simulator (`splatseg.segments.noisy.NOISE_LEVELS`)."""
    mask_source: Literal["sim", "felzenszwalb"] = "sim"
    """2D segments: the simulator at --noise, or the weights-free default source."""
    density: Literal["default", "dense"] = "default"
    """Gaussians per object: default 2.5k-6k, dense 25k-100k."""
    work: Path = Path("outputs/eval_quality")
    """Cache of scenes, segments and runs."""
    tag: str = "default"
    """Name of this configuration's runs under WORK/runs/ (change it when the training changes)."""
    retrain: bool = False
    """Train again even when WORK holds a run for this tag."""
    train_args: str = ""
    """Extra `splatseg train` flags for every run, one string split like a shell line, e.g.
    --train-args="--iterations 400" (a list option would take such flags for its own)."""
    query_rule: Literal["3d", "2d"] = "3d"
    """How a click picks its query: "3d" the rule `segment` uses (3D scores under the click, walk up
    by containment; splatseg.query), "2d" the earlier rule (largest active query)."""
    rules: list[str] = field(default_factory=lambda: ["deepest", "random", "views"])
    """Click rules to score (splatseg.evaluate.CLICK_RULES)."""
    json: Path | None = None
    """Also write every click's scores and the summary here."""
    threads: int = 2
    """torch CPU threads."""
    progress: bool = True
    """Show progress bars."""
    ply_only: bool = False
    """Also train and score a run made from each scene's splats.ply alone, the clicks given as 3D points."""
    ply_tag: str = ""
    """Name of the PLY-only runs under WORK/runs/ (default: --tag), so PLY-only settings can be compared
    against one set of photo-based runs."""
    ply_train_args: str = ""
    """Extra `splatseg train` flags for the PLY-only runs only (after --train-args), one string split
    like a shell line, e.g. --ply-train-args="--virtual.side-limit 320"."""


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def scene_dir(args: Args, seed: int) -> Path:
    from splatseg.data.family import FamilyConfig, generate_family_scene

    path = args.work / "scenes" / f"{args.density}_{seed:03d}"
    if not (path / "splats.ply").exists():
        generate_family_scene(path, FamilyConfig(seed=seed, density=args.density), progress=args.progress)
    return path


def segments_for(args: Args, scene: Path, seed: int) -> Path | None:
    """The simulator's segments of every view (written once), or None for the default source."""
    if args.mask_source != "sim":
        return args.work / "segments" / "felzenszwalb" / scene.name
    from splatseg.data import load_scene
    from splatseg.data.synthetic import TABLE_ID, load_ground_truth
    from splatseg.segments.cache import write_segments
    from splatseg.segments.noisy import NOISE_LEVELS, simulate_segments

    out = args.work / "segments" / args.noise / scene.name
    gt = load_ground_truth(scene)
    names = load_scene(scene).cameras.names
    if all((out / f"{n}.npz").exists() for n in names):
        return out
    support = [TABLE_ID]
    room = [i for i in gt.background_ids if gt.object_names[i] in ("floor", "wall")]
    for v, stem in enumerate(names):
        obj, part = gt.view_labels(stem)
        seg = simulate_segments(obj, part, seed=seed * 1000 + v, config=NOISE_LEVELS[args.noise], support_ids=support, room_ids=room)
        write_segments(out / f"{stem}.npz", seg)
    return out


def run_dir(args: Args, scene: Path, segments: Path) -> tuple[Path, float]:
    from splatseg.cli import main as cli_main

    source = args.noise if args.mask_source == "sim" else "felzenszwalb"
    out = args.work / "runs" / f"{args.tag}_{source}" / scene.name
    if args.retrain or not (out / "run.json").exists():
        argv = ["train", "--data", str(scene), "--out", str(out), "--segments", str(segments), "--holdout-every", "8",
                *([] if args.progress else ["--no-progress"]), *shlex.split(args.train_args)]
        if cli_main(argv) != 0:
            raise SystemExit(f"eval_quality: training failed for {scene}")
    info = json.loads((out / "run.json").read_text())
    return out, float(info["seconds"] - info["segments_seconds"])


def plyonly_run(args: Args, scene: Path) -> tuple[Path, float]:
    """The run trained on SCENE/splats.ply alone (no photos), and its train wall seconds (making
    and segmenting its views included)."""
    from splatseg.cli import main as cli_main

    out = args.work / "runs" / f"{args.ply_tag or args.tag}_plyonly" / scene.name
    if args.retrain or not (out / "run.json").exists():
        argv = ["train", "--splats", str(scene / "splats.ply"), "--out", str(out), *([] if args.progress else ["--no-progress"]),
                *shlex.split(args.train_args), *shlex.split(args.ply_train_args)]
        if cli_main(argv) != 0:
            raise SystemExit(f"eval_quality: PLY-only training failed for {scene}")
    return out, float(json.loads((out / "run.json").read_text())["seconds"])


def point_select(scene: Path, fld):
    """select(fld, click) for the PLY-only run `fld`: the click's surface point (rendered depth under
    the pixel in the scene's camera, `evaluate.surface_point`) as a --point prompt."""
    from splatseg.data import load_scene
    from splatseg.evaluate import surface_point
    from splatseg.io.ply import read_ply
    from splatseg.prompts import Prompts, select, surface_of_run

    cams = load_scene(scene).cameras
    params = read_ply(scene / "splats.ply").torch_params()
    surface = surface_of_run(fld)

    def pick(f, click):
        p = surface_point(params, cams, cams.names.index(click.stem), click.x, click.y)
        return select(f, Prompts(point=[tuple(float(c) for c in p)]), surface=surface)

    return pick


def print_summary(title: str, rows: list[dict], rules: list[str], times: dict) -> dict:
    summary = summarise(rows)
    print(f"\n{title} ({len(rows)} clicks)")
    print(f"{'':<12} {'2D':>6} {'amodal':>6} | {'IoU cnt':>7} {'IoU opa':>7} {'IoU area':>8} | {'P cnt':>6} {'P area':>6} | {'R cnt':>6} {'R area':>6}")
    for name in ("mean", "worst_seed", "worst_click"):
        s = summary[name]
        print(f"{name:<12} {s['iou_2d']:>6.3f} {s['amodal_2d']:>6.3f} | {s['iou_3d_count']:>7.3f} {s['iou_3d_opacity']:>7.3f} {s['iou_3d_area']:>8.3f} | "
              f"{s['precision_3d_count']:>6.3f} {s['precision_3d_area']:>6.3f} | {s['recall_3d_count']:>6.3f} {s['recall_3d_area']:>6.3f}")
    for rule in rules:
        mine = [r for r in rows if r["rule"] == rule]
        if mine:
            print(f"rule {rule:<7} 2D {np.nanmean([r['iou_2d'] for r in mine]):.3f}  3D count {np.mean([r['iou_3d_count'] for r in mine]):.3f}  "
                  f"area {np.mean([r['iou_3d_area'] for r in mine]):.3f}  ({len(mine)} clicks)")
    print(f"train seconds: mean {np.mean(list(times.values())):.1f}, max {np.max(list(times.values())):.1f}")
    return summary


def print_seed(label: str, seed: int, mine: list[dict], seconds: float) -> None:
    m = {k: np.nanmean([r[k] for r in mine]) for k in mine[0] if isinstance(mine[0][k], float)}
    print(f"{label:>6} {seed:>5} {len({r['object'] for r in mine}):>4} {m['iou_2d']:>6.3f} {np.nanmin([r['iou_2d'] for r in mine]):>6.3f} "
          f"{m['iou_3d_count']:>6.3f} {m['iou_3d_opacity']:>6.3f} {m['iou_3d_area']:>7.3f} {m['precision_3d_area']:>6.3f} "
          f"{m['recall_3d_area']:>6.3f} {m['amodal_2d']:>6.3f} {seconds:>7.1f}", flush=True)


def summarise(rows: list[dict]) -> dict:
    """Per-seed means, then mean and worst over seeds (and worst single click)."""
    keys = ["iou_2d", "amodal_2d"] + [f"{m}_3d_{w}" for m in ("iou", "precision", "recall") for w in ("count", "opacity", "area")]
    by_seed: dict[int, dict] = {}
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        by_seed[seed] = {k: float(np.nanmean([r[k] for r in mine])) for k in keys}
    return {
        "mean": {k: float(np.mean([s[k] for s in by_seed.values()])) for k in keys},
        "worst_seed": {k: float(np.min([s[k] for s in by_seed.values()])) for k in keys},
        "worst_click": {k: float(np.nanmin([r[k] for r in rows])) for k in keys},
        "by_seed": by_seed,
    }


def flatten(seed: int, score) -> dict:
    row = {"seed": seed, "object": score.object, "rule": score.rule, "click": score.click, "selected": score.selected,
           "iou_2d": score.iou_2d, "amodal_2d": score.amodal_2d}
    for m in ("iou", "precision", "recall"):
        for w, v in getattr(score, f"{m}_3d").items():
            row[f"{m}_3d_{w}"] = v
    return row


HEADER = f"{'run':>6} {'seed':>5} {'obj':>4} {'2D':>6} {'2D min':>6} {'3D cnt':>6} {'3D opa':>6} {'3D area':>7} {'P area':>6} {'R area':>6} {'amodal':>6} {'train s':>7}"


def main(args: Args) -> int:
    import torch

    torch.set_num_threads(max(1, args.threads))
    from splatseg.evaluate import score_clicks
    from splatseg.prompts import run_picking, select_clicks
    from splatseg.query import select_by_clicks
    from splatseg.run import load_field

    seeds = parse_seeds(args.seeds)
    rows, times, ply_rows, ply_times = [], {}, [], {}
    print(HEADER)
    for seed in seeds:
        scene = scene_dir(args, seed)
        segments = segments_for(args, scene, seed)
        run, seconds = run_dir(args, scene, segments)
        fld = load_field(run)
        times[seed] = float(json.loads((run / "run.json").read_text())["seconds"]) if args.ply_only else seconds
        if args.query_rule == "2d":
            select = lambda f, c: select_by_clicks(f, [c])  # noqa: E731
        else:
            picking = run_picking(fld) if fld.view_viewmats is not None else None
            select = lambda f, c: select_clicks(f, [c], picking=picking)  # noqa: E731
        scores = score_clicks(scene, fld, select, rules=args.rules, seed=seed, progress=args.progress)
        mine = [flatten(seed, s) for s in scores]
        rows += mine
        print_seed("photos", seed, mine, times[seed])
        if args.ply_only:
            ply, ply_times[seed] = plyonly_run(args, scene)
            split = (fld.info["train_views"], fld.info["heldout_views"])
            ply_fld = load_field(ply)
            scores = score_clicks(scene, ply_fld, point_select(scene, ply_fld), rules=args.rules, seed=seed, progress=args.progress, split=split)
            theirs = [flatten(seed, s) for s in scores]
            ply_rows += theirs
            print_seed("PLY", seed, theirs, ply_times[seed])
    source = args.noise if args.mask_source == "sim" else "felzenszwalb"
    summary = print_summary(f"photo-based runs over seeds {args.seeds} (segments {source}, density {args.density})", rows, args.rules, times)
    ply_summary = None
    if args.ply_only:
        ply_summary = print_summary(f"PLY-only runs over seeds {args.seeds} (3D point prompts, density {args.density})", ply_rows, args.rules, ply_times)
        ratios = [ply_times[s] / times[s] for s in seeds]
        print(f"\ntrain wall time PLY-only / photo-based (both include making segments): mean {np.mean(ratios):.2f}x, worst {np.max(ratios):.2f}x")
    if args.json is not None:
        from splatseg.io.atomic import atomic_write

        args.json.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.json) as f:
            f.write(json.dumps({"args": {k: str(v) for k, v in asdict(args).items()}, "summary": summary, "clicks": rows,
                                "train_seconds": times, "plyonly": None if ply_summary is None else
                                {"summary": ply_summary, "clicks": ply_rows, "train_seconds": ply_times}}, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
