"""The SAM-decoder selection against the MaskField selection on the same clicks, on a generated scene.

One click per object (the table excepted), chosen as `splatseg.evaluate.evaluate_one_click_per_object`
does (deepest pixel of the object in the training view that shows most of it). For each click:
- maskfield: `query.select_by_clicks` on the run's field (threshold 0.3, granularity whole);
- decoder: `imitation.aggregate` with SAM's decoder on the rendered embedding (threshold 0.5),
  and with --refine also after the ray-pair refinement;
- exact masks: the same aggregation fed the scene's true 2D object masks instead of the decoder
  (what the aggregation itself reaches when the 2D masks are right).
Scores: 3D IoU against the object's true Gaussians and mean 2D IoU of the rendered selection on the
held-out views that show the object. With a randomly initialised teacher the decoder's masks mean
nothing, so its row measures only the plumbing; the exact-mask row is the aggregation's quality.

    python scripts/eval_imitation.py --scene SCENE --run RUN [--refine] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splatseg.data.synthetic import TABLE_ID, load_ground_truth  # noqa: E402
from splatseg.evaluate import choose_click, render_selection  # noqa: E402
from splatseg.imitation.aggregate import LiftViews, Point2D, aggregate  # noqa: E402
from splatseg.imitation.refine import refine_scores  # noqa: E402
from splatseg.imitation.views import DecoderRun  # noqa: E402
from splatseg.metrics import iou  # noqa: E402
from splatseg.prompts import select_clicks as select_by_clicks  # noqa: E402  (the rule segment uses)
from splatseg.query import Click  # noqa: E402
from splatseg.run import load_field, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", type=Path, required=True, help="generated scene directory (with labels/)")
    ap.add_argument("--run", type=Path, required=True, help="run with field.npz and imitation.npz")
    ap.add_argument("--refine", action="store_true", help="also score the ray-pair refined decoder selection")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gt = load_ground_truth(args.scene)
    fld = load_field(args.run)
    run = DecoderRun.load(args.run, "cpu")
    lift_views = LiftViews(run)
    cams = run.cameras
    held = [cams.index_of(n) for n in run.info["heldout_views"]]
    gt_maps = {i: gt.view_labels(cams.names[i])[0] for i in range(len(cams))}

    def exact(view, points, labels, box, mask_index):
        lab = gt_maps[cams.index_of(view.name)]
        x, y = points[labels == 1][0]
        return lab == lab[int(y), int(x)], 0, 1.0

    def scores(mask: np.ndarray, oid: int) -> tuple[float, float]:
        vals = [iou(render_selection(run.params, mask, cams, i), gt_maps[i] == oid) for i in held if (gt_maps[i] == oid).any()]
        return iou(mask, gt.object_id == oid), float(np.mean(vals)) if vals else float("nan")

    print(f"teacher {run.imitation.teacher}; {run.num_gaussians:,} Gaussians, {len(run.train_views)} training and {len(held)} held-out views")
    methods = ["maskfield", "decoder"] + (["decoder+refine"] if args.refine else []) + ["exact masks"]
    rows = []
    for oid, name in enumerate(gt.object_names):
        if oid == TABLE_ID:
            continue
        best = max(run.train_views, key=lambda i: int((gt_maps[i] == oid).sum()))
        xy = choose_click(gt_maps[best], oid)
        if xy is None:
            continue
        row = {"object": name, "click": [cams.names[best], *xy]}
        row["maskfield"] = scores(select_by_clicks(fld, [Click(cams.names[best], *xy)], "whole", 0.3).mask, oid)
        t0 = time.time()
        agg = aggregate(run, [Point2D(cams.names[best], *xy)], lift_views=lift_views)
        row["decoder_seconds"] = round(time.time() - t0, 1)
        row["decoder"] = scores(agg.mask, oid)
        if args.refine:
            row["decoder+refine"] = scores(refine_scores(agg.scores, lift_views, agg.view_masks, run.splats.base_rgb) > 0.5, oid)
        row["exact masks"] = scores(aggregate(run, [Point2D(cams.names[best], *xy)], source=exact, lift_views=lift_views).mask, oid)
        rows.append(row)
        print(f"  {name:<8} " + "  ".join(f"{m} {row[m][0]:.3f}/{row[m][1]:.3f}" for m in methods) + f"  ({row['decoder_seconds']} s)", flush=True)
    print(f"\n{'method':<16} {'IoU 3D':>8} {'IoU 2D held-out':>16}   (means over {len(rows)} objects; worst in brackets)")
    summary = {}
    for m in methods:
        a = np.array([r[m][0] for r in rows])
        b = np.array([r[m][1] for r in rows])
        summary[m] = {"iou_3d": float(a.mean()), "iou_2d_heldout": float(np.nanmean(b)), "worst_3d": float(a.min()), "worst_2d": float(np.nanmin(b))}
        print(f"{m:<16} {a.mean():>8.3f} {np.nanmean(b):>16.3f}   ({a.min():.3f} / {np.nanmin(b):.3f})")
    if args.json:
        write_json(args.json, json.loads(json.dumps({"teacher": run.imitation.teacher, "objects": rows, "summary": summary}, default=float)))


if __name__ == "__main__":
    main()
