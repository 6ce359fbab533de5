"""`splatseg demo`: the built-in end-to-end run on a generated tabletop scene (no downloads).

generate scene -> weights-free segments -> train (every 8th view held out) -> one click per
object in a training view -> export one PLY per object -> per-object IoU against ground truth:
2D on held-out views (rendered selection vs label maps) and 3D (selected vs true Gaussians).
Also writes overview.png: per object, a held-out view with the selection overlaid beside the truth.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from splatseg.data.synthetic import SyntheticConfig, generate
from splatseg.evaluate import ClickEvaluation, ObjectResult, evaluate_one_click_per_object, render_selection
from splatseg.export import export_ply
from splatseg.io.images import load_image
from splatseg.query import DEFAULT_THRESHOLD
from splatseg.run import write_json
from splatseg.train import TrainConfig, train

DEMO_MARKER = ".splatseg-demo"


@dataclass
class DemoConfig:
    """Generate a tabletop scene, train, segment every object with one click, report IoU."""

    out: Path = Path("demo_out")
    """Output directory (scene/, run/, objects/*.ply, results.json, overview.png). A previous
    demo output there is replaced."""
    scene: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The generated scene."""
    iterations: int = 800
    """Training steps."""
    holdout_every: int = 8
    """Every n-th view is held out of training and used for the 2D IoU."""
    threshold: float = DEFAULT_THRESHOLD
    """Lifted score above which a Gaussian is selected."""
    progress: bool = True
    """Show progress bars."""


def _overlay(rgb: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    out = rgb.astype(np.float32) * 0.45
    out[mask] = rgb[mask] * 0.4 + np.asarray(colour, np.float32) * 0.6
    edge = mask & ~ndimage.binary_erosion(mask)
    out[edge] = colour
    return np.clip(out, 0, 255).astype(np.uint8)


def run_demo(cfg: DemoConfig) -> dict:
    t0 = time.time()
    out = Path(cfg.out)
    if out.exists():
        if not (out / DEMO_MARKER).exists():
            raise FileExistsError(f"{out} exists and is not a splatseg demo output; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("splatseg demo output; safe to delete\n")

    print(f"[1/4] generating the tabletop scene (seed {cfg.scene.seed}) -> {out / 'scene'}")
    scene_dir = generate(out / "scene", cfg.scene, progress=cfg.progress)
    print("[2/4] segments (weights-free felzenszwalb on colour + rendered geometry) and training")
    run_dir = train(TrainConfig(data=scene_dir, out=out / "run", iterations=cfg.iterations,
                                holdout_every=cfg.holdout_every, progress=cfg.progress))
    run_info = json.loads((run_dir / "run.json").read_text())

    print("[3/4] one click per object, export")
    evaluation = evaluate_one_click_per_object(scene_dir, run_dir, cfg.threshold)
    for oid, mask in evaluation.selections.items():
        if mask.any():
            export_ply(scene_dir / "splats.ply", mask, out / "objects" / f"{evaluation.object_names[oid]}.ply")
    results = evaluation.results

    print("[4/4] overview picture")
    _write_overview(out / "overview.png", evaluation)
    summary = {
        "objects": [r.__dict__ for r in results],
        "mean_iou_2d_heldout": float(np.nanmean([r.iou_2d_heldout for r in results])),
        "mean_iou_3d": float(np.mean([r.iou_3d for r in results])),
        "segments_seconds": run_info["segments_seconds"],
        "train_seconds": run_info["train_seconds"],
        "train_and_lift_seconds": run_info["seconds"] - run_info["segments_seconds"],
        "total_seconds": round(time.time() - t0, 1),
        "gaussians": evaluation.num_gaussians,
        "heldout_views": len(evaluation.heldout),
    }
    write_json(out / "results.json", summary)
    _print_table(results, summary)
    return summary


def _write_overview(path: Path, ev: ClickEvaluation) -> None:
    """Rows: objects; columns: selection on a held-out view | ground truth on the same view."""
    cams, gt_maps, heldout = ev.cameras, ev.gt_maps, ev.heldout
    colours = [(255, 60, 60), (60, 200, 255), (255, 200, 40), (120, 255, 120), (255, 90, 255), (255, 150, 60)]
    tiles = []
    for j, (oid, mask) in enumerate(ev.selections.items()):
        view = max(heldout, key=lambda i: int((gt_maps[i] == oid).sum()))
        rgb = load_image(cams.image_paths[view])
        pred = render_selection(ev.params, mask, cams, view)
        c = colours[j % len(colours)]
        tiles.append(np.concatenate([_overlay(rgb, pred, c), np.full((rgb.shape[0], 4, 3), 255, np.uint8),
                                     _overlay(rgb, gt_maps[view] == oid, (255, 255, 255))], axis=1))
    if not tiles:
        return
    sep = np.full((4, tiles[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for t in tiles for x in (t, sep)][:-1], axis=0)
    image = Image.fromarray(grid)
    if image.width < 500:  # small demo renders: enlarge so the picture reads on a README page
        image = image.resize((image.width * 2, image.height * 2), Image.NEAREST)
    tmp = path.with_suffix(".tmp.png")
    image.save(tmp)
    tmp.replace(path)


def _print_table(results: list[ObjectResult], summary: dict) -> None:
    print(f"\n{'object':<10} {'selected':>9} {'true':>7} {'IoU 3D':>8} {'IoU 2D held-out':>16}")
    for r in results:
        print(f"{r.name:<10} {r.selected:>9} {r.true_gaussians:>7} {r.iou_3d:>8.3f} {r.iou_2d_heldout:>16.3f}")
    print(f"{'mean':<10} {'':>9} {'':>7} {summary['mean_iou_3d']:>8.3f} {summary['mean_iou_2d_heldout']:>16.3f}")
    print(f"\nsegments {summary['segments_seconds']:.0f} s, training {summary['train_seconds']:.0f} s "
          f"(+ lifting {summary['train_and_lift_seconds'] - summary['train_seconds']:.0f} s), total {summary['total_seconds']:.0f} s, "
          f"{summary['gaussians']} Gaussians, {summary['heldout_views']} held-out views")
    print(json.dumps({"mean_iou_2d_heldout": round(summary["mean_iou_2d_heldout"], 4), "mean_iou_3d": round(summary["mean_iou_3d"], 4)}))
