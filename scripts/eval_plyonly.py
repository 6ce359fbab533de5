"""PLY-only runs beside photo-based runs on generated scenes, with 3D point prompts.

For each seed: generate the tabletop scene (`SyntheticConfig(seed=s)`, the demo's defaults), train
a photo-based run on it (every 8th view held out, as the demo) and a PLY-only run given nothing but
its `splats.ply` (`train --splats FILE` without `--data`), then prompt every object once:

  prompt   a 3D point on the object's surface: the demo's click (the pixel deepest inside the
           object in the training view that shows most of it) lifted to 3D through the depth the
           splats render there. The same point prompts both runs; the photo-based run is also
           scored with the click itself (`click` rows).
  2D IoU   rendered selection vs the scene's label maps on its held-out views (the photo run's split;
           no stage of the PLY-only run sees any photo).
  3D IoU   selected vs true Gaussians, by count and by area (weight opacity x the product of the
           two largest scales: a few huge wrong splats weigh what they cover).
  time     wall and CPU seconds of `train` (the PLY-only run includes making its views).

    python scripts/eval_plyonly.py --out runs/eval_plyonly --seeds 0 1 2 3 4

Prints a table per scene, the means and worst cases, and writes OUT/results.json. The per-scene
evaluation is `evaluate_scene(scene_dir, run_dir, ...)`.

A real file: `--real-splats FILE --real-data SCENE` trains a PLY-only run on FILE alone, prompts the
point under the pixel deepest inside the first photo's ground-truth mask (the same prompt as
scripts/eval_foreground.py, lifted to 3D) and scores the selection rendered with the scene's real
cameras against its `gt_mask_path` masks; `--picture PNG` draws three photos with the selection
over them and three of the made-up views.

    python scripts/eval_plyonly.py --out runs/plyonly_maryrose --real-splats runs/maryrose_recon/splats.ply \
        --real-data ../shared/data/maryrose --picture docs/plyonly_maryrose.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splatseg.data import load_scene  # noqa: E402
from splatseg.data.synthetic import TABLE_ID, SyntheticConfig, generate, load_ground_truth  # noqa: E402
from splatseg.data.virtual_views import footprint_area  # noqa: E402
from splatseg.evaluate import choose_click, render_selection, surface_point  # noqa: E402
from splatseg.io.atomic import atomic_write  # noqa: E402
from splatseg.io.formats import read_splats as load_splats  # noqa: E402
from splatseg.metrics import iou  # noqa: E402
from splatseg.prompts import select_clicks  # noqa: E402  (the rule segment uses)
from splatseg.query import DEFAULT_THRESHOLD, Click, Point, SurfaceIndex, combine, pick_from_logits, select_by_points  # noqa: E402
from splatseg.render import render  # noqa: E402
from splatseg.run import load_field  # noqa: E402
from splatseg.train import TrainConfig, train  # noqa: E402
from splatseg.data.split import split_views  # noqa: E402
from splatseg.types import Cameras  # noqa: E402

HOLDOUT_EVERY = 8


def render_depth(params: dict, cameras: Cameras, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth [H, W], alpha [H, W]) of camera i rendered from the splats."""
    n = params["means"].shape[0]
    with torch.no_grad():
        out = render(params["means"], params["quats"], params["scales"], params["opacities"], params["means"].new_zeros(n, 1),
                     torch.from_numpy(cameras.viewmats[i : i + 1]).float(), torch.from_numpy(cameras.Ks[i : i + 1]).float(),
                     int(cameras.widths[i]), int(cameras.heights[i]))
    return out.depths[0, ..., 0].numpy(), out.alphas[0, ..., 0].numpy()


@dataclass
class ScenePrompts:
    """One prompt per object of a generated scene: (object id, name, click, 3D point)."""

    objects: list[tuple[int, str, Click, Point]]
    heldout: list[int]


def scene_prompts(scene_dir: Path, heldout_names: list[str] | None = None) -> ScenePrompts:
    """The demo's click per object (training views only) and the surface point under it."""
    gt = load_ground_truth(scene_dir)
    cams = load_scene(scene_dir).cameras
    if heldout_names is None:
        _, heldout = split_views(cams.names, HOLDOUT_EVERY)
    else:
        heldout = [cams.names.index(n) for n in heldout_names]
    train_views = [i for i in range(len(cams)) if i not in heldout]
    params = load_splats(Path(scene_dir) / "splats.ply").torch_params()
    maps = {i: gt.view_labels(cams.names[i])[0] for i in train_views}
    out = []
    for oid, name in enumerate(gt.object_names):
        if oid == TABLE_ID:
            continue
        best = max(train_views, key=lambda i: int((maps[i] == oid).sum()))
        xy = choose_click(maps[best], oid)
        if xy is None:
            continue
        p = surface_point(params, cams, best, *xy)
        out.append((oid, name, Click(cams.names[best], *xy), Point(*p.tolist())))
    return ScenePrompts(out, heldout)


def project_logits(fld, cams: Cameras, depths: dict, point: np.ndarray, reach: float) -> np.ndarray | None:
    """Alternative point method ("project"): the point's pixel in every training view where it is
    not hidden (depth test), mean query probability over those views minus 0.5; None if unseen."""
    h, w = fld.view_maps.shape[1:3]
    probs = []
    for name in fld.info["train_views"]:
        v = fld.view_names.index(name)
        i = cams.names.index(name)
        s = w / float(cams.widths[i])
        vm = cams.viewmats[i]
        c = vm[:3, :3] @ point + vm[:3, 3]
        if c[2] <= 1e-6:
            continue
        K = cams.Ks[i]
        u, vv = (c[0] / c[2] * K[0, 0] + K[0, 2]) * s, (c[1] / c[2] * K[1, 1] + K[1, 2]) * s
        if not (0 <= u < w and 0 <= vv < h):
            continue
        d = depths[name][int(vv), int(u)]
        if d <= 0 or c[2] > d + 0.02 * c[2] + 2 * reach:
            continue
        logits = fld.queries @ fld.view_maps[v, int(vv), int(u)].astype(np.float32) + fld.query_bias
        probs.append(1 / (1 + np.exp(-logits)))
    if not probs:
        return None
    return np.mean(probs, axis=0) - 0.5


def evaluate_scene(scene_dir: Path, run_dir: Path, heldout_names: list[str] | None = None, threshold: float = DEFAULT_THRESHOLD,
                   methods: tuple[str, ...] = ("neighbours",), with_click: bool = False) -> dict:
    """Scores of one run on one generated scene: per object and method, 3D IoU (count, area) and
    mean held-out 2D IoU. `methods`: "neighbours" (query.select_by_points) and/or "project"."""
    scene_dir, run_dir = Path(scene_dir), Path(run_dir)
    gt = load_ground_truth(scene_dir)
    fld = load_field(run_dir)
    splats = load_splats(Path(scene_dir) / "splats.ply")
    params = splats.torch_params()
    area = footprint_area(splats)
    cams = load_scene(scene_dir).cameras
    prompts = scene_prompts(scene_dir, heldout_names)
    gt_maps = {i: gt.view_labels(cams.names[i])[0] for i in prompts.heldout}
    surface = SurfaceIndex.build(splats.means, splats.opacities)
    run_cams = depths = None
    if "project" in methods:
        run_cams = load_scene(fld.scene_root).cameras
        h, w = fld.view_maps.shape[1:3]
        small = run_cams.downscaled(float(run_cams.widths[0]) / w)
        depths = {n: render_depth(params, small, small.names.index(n))[0] for n in fld.info["train_views"]}
    rows = []
    for oid, name, click, point in prompts.objects:
        truth = gt.object_id == oid
        sels = {}
        for m in methods:
            if m == "neighbours":
                sels[m] = select_by_points(fld, surface, [point], "whole", threshold).mask
            else:
                snapped, _ = surface.snap(point)
                lg = project_logits(fld, run_cams, depths, snapped, float(splats.scales.max(1).mean()))
                if lg is None:
                    sels[m] = np.zeros(len(truth), bool)
                else:
                    sels[m] = combine(fld, [pick_from_logits(fld, lg, "whole")], (), threshold).mask
        if with_click:
            sels["click"] = select_clicks(fld, [click], "whole", threshold).mask
        for m, mask in sels.items():
            ious = [iou(render_selection(params, mask, cams, i), gt_maps[i] == oid) for i in prompts.heldout if (gt_maps[i] == oid).any()]
            inter, union = area[mask & truth].sum(), area[mask | truth].sum()
            rows.append({"object": name, "method": m, "point": [round(c, 5) for c in (point.x, point.y, point.z)],
                         "selected": int(mask.sum()), "true": int(truth.sum()), "iou_3d": iou(mask, truth),
                         "iou_3d_area": float(inter / union) if union > 0 else float("nan"),
                         "iou_2d_heldout": float(np.mean(ious)) if ious else float("nan")})
    means = {}
    for m in {r["method"] for r in rows}:
        sub = [r for r in rows if r["method"] == m]
        means[m] = {k: float(np.nanmean([r[k] for r in sub])) for k in ("iou_2d_heldout", "iou_3d", "iou_3d_area")}
    return {"scene": str(scene_dir), "run": str(run_dir), "objects": rows, "means": means}


def timed_train(cfg: TrainConfig) -> tuple[Path, dict]:
    wall, cpu = time.time(), time.process_time()
    out = train(cfg)
    return out, {"wall_s": round(time.time() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2)}


def overlay_truth(rgb: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Green: selected and true; red: selected, not true; blue: true, missed (as docs/maryrose_click.png)."""
    out = rgb.astype(np.float32) * 0.55
    for mask, colour in ((pred & truth, (60, 220, 60)), (pred & ~truth, (240, 50, 50)), (~pred & truth, (60, 110, 255))):
        out[mask] = rgb[mask] * 0.35 + np.asarray(colour, np.float32) * 0.65
    return np.clip(out, 0, 255).astype(np.uint8)


def overlay_selection(rgb: np.ndarray, pred: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.float32) * 0.55
    out[pred] = rgb[pred] * 0.35 + np.asarray((255, 200, 40), np.float32) * 0.65
    return np.clip(out, 0, 255).astype(np.uint8)


def evaluate_real(data: Path, splats: Path, out: Path, threshold: float, iterations: int, picture: Path | None) -> dict:
    """PLY-only run on `splats` alone, scored with `data`'s real cameras and ground-truth masks."""
    from PIL import Image

    from splatseg.evaluate import evaluate_foreground
    from splatseg.io.images import load_image

    run = out / "real_run"
    times = {}
    if not (run / "run.json").exists():
        _, times = timed_train(TrainConfig(splats=splats, out=run, iterations=iterations, progress=False))
        (run / "timing.json").write_text(json.dumps(times))
    elif (run / "timing.json").exists():
        times = json.loads((run / "timing.json").read_text())
    prompt, sel, rows = evaluate_foreground(data, run, threshold=threshold)
    info = json.loads((run / "run.json").read_text())
    heldout = set(split_views([r.stem for r in rows], HOLDOUT_EVERY)[1])
    summary = {"point": [prompt.x, prompt.y, prompt.z], "selected": sel.count, "total": len(sel.mask), "times": times,
               "virtual_views": {k: info["virtual_views"][k] for k in ("kind", "views", "width", "height", "coverage", "evidence")},
               "train_seconds": {k: info[k] for k in ("seconds", "segments_seconds", "train_seconds")}}
    for name, subset in (("all", rows), ("heldout_split", [r for i, r in enumerate(rows) if i in heldout])):
        summary[name] = {"views": len(subset), "mIoU": float(np.mean([r.iou for r in subset])),
                         "mAcc": float(np.mean([r.accuracy for r in subset])), "boundary_mIoU": float(np.mean([r.boundary_iou for r in subset]))}
    vv = summary["virtual_views"]
    print(f"{splats}: {vv['views']} virtual views ({vv['kind']}, {vv['width']}x{vv['height']}, coverage {vv['coverage']:.3f}); "
          f"point ({prompt.x:.4g}, {prompt.y:.4g}, {prompt.z:.4g}) -> {sel.count} of {len(sel.mask)} Gaussians")
    for name in ("all", "heldout_split"):
        m = summary[name]
        print(f"{name:<14} {m['views']:>3} views  mIoU {m['mIoU']:.3f}  mAcc {m['mAcc']:.3f}  boundary mIoU {m['boundary_mIoU']:.3f}")
    if times:
        print(f"train (PLY-only, views included): wall {times['wall_s']:.1f} s, cpu {times['cpu_s']:.1f} s")
    if picture is not None:
        from splatseg.io.images import load_mask

        scene = load_scene(data)
        cams = scene.cameras
        params = load_splats(splats).torch_params()
        picks = [0, len(cams) // 3, 2 * len(cams) // 3]
        tiles = []
        for i in picks:
            size = (int(cams.widths[i]), int(cams.heights[i]))
            rgb = load_image(cams.image_paths[i], size=size)
            truth = load_mask(Path(scene.root) / scene.frame_extras[i]["gt_mask_path"], size=size)
            pred = render_selection(params, sel.mask, cams, i)
            tiles.append(np.concatenate([rgb, overlay_truth(rgb, pred, truth)], 1))
        vcams = load_scene(run / "views").cameras
        vtiles = []
        for i in (0, len(vcams) // 3, 2 * len(vcams) // 3):
            rgb = load_image(vcams.image_paths[i])
            vtiles.append(overlay_selection(rgb, render_selection(params, sel.mask, vcams, i)))
        height = tiles[0].shape[0]
        vrow = np.concatenate([np.asarray(Image.fromarray(t).resize((round(t.shape[1] * height / t.shape[0]), height))) for t in vtiles], 1)
        photos = np.concatenate(tiles, 1)
        width = max(photos.shape[1], vrow.shape[1])
        pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255)  # noqa: E731
        image = np.concatenate([pad(photos), np.full((6, width, 3), 255, np.uint8), pad(vrow)], 0)
        img = Image.fromarray(image)
        if img.width > 1200:
            img = img.resize((1200, round(img.height * 1200 / img.width)), Image.LANCZOS)
        picture.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(picture) as f:
            img.save(f, format="PNG", optimize=True)
        print(f"picture written to {picture}")
    with atomic_write(out / "real_results.json") as f:
        f.write(json.dumps(summary, indent=1).encode())
    return summary


def bench_time(out: Path, seed: int, repeats: int, iterations: int) -> dict:
    """Train time side by side: photo-based and PLY-only runs of one scene, alternating, each in a
    fresh folder (segments and views made anew), `repeats` times; returns wall/CPU sums and ratios."""
    import shutil
    import tempfile

    scene = out / f"scene_{seed}"
    if not scene.exists():
        generate(scene, SyntheticConfig(seed=seed), progress=False)
    sums = {"photo": {"wall_s": 0.0, "cpu_s": 0.0}, "ply": {"wall_s": 0.0, "cpu_s": 0.0}}
    for r in range(repeats):
        for kind in ("photo", "ply"):
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                tmp = Path(tmp)
                if kind == "photo":
                    cfg = TrainConfig(data=scene, segments=tmp / "segments", out=tmp / "run", iterations=iterations,
                                      holdout_every=HOLDOUT_EVERY, progress=False)
                else:
                    cfg = TrainConfig(splats=scene / "splats.ply", out=tmp / "run", iterations=iterations, progress=False)
                _, t = timed_train(cfg)
                shutil.rmtree(tmp / "run", ignore_errors=True)
            print(f"repeat {r}: {kind:<5} wall {t['wall_s']:.1f} s, cpu {t['cpu_s']:.1f} s", flush=True)
            for k in ("wall_s", "cpu_s"):
                sums[kind][k] += t[k]
    ratio = {k: sums["ply"][k] / sums["photo"][k] for k in ("wall_s", "cpu_s")}
    print(f"PLY-only / photo-based train time, {repeats} alternating pairs: wall {ratio['wall_s']:.2f}x, cpu {ratio['cpu_s']:.2f}x")
    return {"sums": sums, "ratio": ratio}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="working folder (scenes and runs are kept and reused)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--iterations", type=int, default=800, help="training steps of both runs (the demo's default)")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--methods", nargs="+", default=["neighbours"], choices=["neighbours", "project"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 beside other jobs)")
    ap.add_argument("--real-splats", type=Path, help="a real capture's splat file: evaluate the PLY-only path on it alone")
    ap.add_argument("--real-data", type=Path, help="the capture's scene (cameras + gt_mask_path masks) used only to score")
    ap.add_argument("--picture", type=Path, help="with --real-*: write a picture of the selection here")
    ap.add_argument("--bench-seed", type=int, help="only time photo-based vs PLY-only training on this seed's scene, alternating")
    ap.add_argument("--repeats", type=int, default=2, help="with --bench-seed: alternating pairs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.bench_seed is not None:
        bench_time(out, args.bench_seed, args.repeats, args.iterations)
        return 0
    if args.real_splats is not None or args.real_data is not None:
        if args.real_splats is None or args.real_data is None:
            ap.error("--real-splats and --real-data go together")
        evaluate_real(args.real_data, args.real_splats, out, args.threshold, args.iterations, args.picture)
        return 0
    results = []
    for seed in args.seeds:
        scene = out / f"scene_{seed}"
        if not scene.exists():
            generate(scene, SyntheticConfig(seed=seed), progress=False)
        photo, ply = out / f"photo_{seed}", out / f"ply_{seed}"
        times = {}
        for kind, run, cfg in (
            ("photo", photo, TrainConfig(data=scene, segments=out / f"segments_{seed}", out=photo, iterations=args.iterations,
                                         holdout_every=HOLDOUT_EVERY, progress=False)),
            ("ply", ply, TrainConfig(splats=scene / "splats.ply", out=ply, iterations=args.iterations, progress=False)),
        ):
            if (run / "run.json").exists():
                times[kind] = json.loads((run / "timing.json").read_text()) if (run / "timing.json").exists() else {}
                continue
            _, times[kind] = timed_train(cfg)
            (run / "timing.json").write_text(json.dumps(times[kind]))
        heldout = load_field(photo).info["heldout_views"]
        res_photo = evaluate_scene(scene, photo, heldout, args.threshold, tuple(args.methods), with_click=True)
        res_ply = evaluate_scene(scene, ply, heldout, args.threshold, tuple(args.methods))
        info_ply = json.loads((ply / "run.json").read_text())
        results.append({"seed": seed, "photo": res_photo, "ply": res_ply, "times": times,
                        "virtual_views": {k: info_ply["virtual_views"][k] for k in ("kind", "views", "width", "height", "coverage")}})
        print(f"\nseed {seed}: {info_ply['virtual_views']['views']} virtual views ({info_ply['virtual_views']['kind']}, "
              f"{info_ply['virtual_views']['width']}x{info_ply['virtual_views']['height']}, coverage {info_ply['virtual_views']['coverage']:.3f})")
        print(f"{'run':<6} {'method':<11} {'object':<8} {'selected':>8} {'true':>6} {'3D':>6} {'3D area':>8} {'2D held-out':>11}")
        for tag, res in (("photo", res_photo), ("ply", res_ply)):
            for r in res["objects"]:
                print(f"{tag:<6} {r['method']:<11} {r['object']:<8} {r['selected']:>8} {r['true']:>6} {r['iou_3d']:>6.3f} "
                      f"{r['iou_3d_area']:>8.3f} {r['iou_2d_heldout']:>11.3f}")
        for kind, t in times.items():
            print(f"train {kind}: wall {t.get('wall_s', float('nan')):.1f} s, cpu {t.get('cpu_s', float('nan')):.1f} s")
        sys.stdout.flush()

    print("\nmeans over seeds", args.seeds, "(worst scene in brackets)")
    summary = {}
    for tag in ("photo", "ply"):
        for m in sorted(results[0][tag]["means"]):
            vals = {k: [r[tag]["means"][m][k] for r in results] for k in ("iou_2d_heldout", "iou_3d", "iou_3d_area")}
            summary[f"{tag}/{m}"] = {k: {"mean": float(np.mean(v)), "worst": float(np.min(v))} for k, v in vals.items()}
            s = summary[f"{tag}/{m}"]
            print(f"{tag:<6} {m:<11} 2D held-out {s['iou_2d_heldout']['mean']:.3f} [{s['iou_2d_heldout']['worst']:.3f}]  "
                  f"3D {s['iou_3d']['mean']:.3f} [{s['iou_3d']['worst']:.3f}]  3D area {s['iou_3d_area']['mean']:.3f} [{s['iou_3d_area']['worst']:.3f}]")
    ratios = [r["times"]["ply"].get("cpu_s", np.nan) / r["times"]["photo"].get("cpu_s", np.nan) for r in results if r["times"].get("ply") and r["times"].get("photo")]
    wall = [r["times"]["ply"].get("wall_s", np.nan) / r["times"]["photo"].get("wall_s", np.nan) for r in results if r["times"].get("ply") and r["times"].get("photo")]
    if ratios:
        print(f"train time PLY-only / photo: cpu {np.mean(ratios):.2f}x (worst {np.max(ratios):.2f}x), wall {np.mean(wall):.2f}x (worst {np.max(wall):.2f}x)")
        summary["time_ratio"] = {"cpu_mean": float(np.mean(ratios)), "cpu_worst": float(np.max(ratios)),
                                 "wall_mean": float(np.mean(wall)), "wall_worst": float(np.max(wall))}
    with atomic_write(out / "results.json") as f:
        f.write(json.dumps({"seeds": args.seeds, "summary": summary, "scenes": results}, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
