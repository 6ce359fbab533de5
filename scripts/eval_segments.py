"""Segment quality of the weights-free source (`FelzenszwalbSource`) on a scene with ground truth.

Feeds the source exactly what training does (`splatseg/train/segments_stage.py`): each image loaded at
the segmentation resolution (longest side <= `--max-side`) and, when splats are available, the depth
and opacity rendered from them with `splatseg.train.segments_stage.render_geometry`. Then, per view:

  level 0 (wholes): for each ground-truth object, the best-segment IoU (max over level-0 segments of
      the IoU with the object's mask); "merged" = some level-0 segment covers > `--merge-fraction` of
      the object's pixels *and* that many pixels of the table (object 0) at once.
  level 1 (parts): for each ground-truth part, the best-segment IoU over level-1 segments.

Printed: one row per object and per part (mean best IoU over the views showing it, the fraction of
(object, view) pairs with best IoU >= `--iou-threshold`, the merged fraction), summary rows, and the
source's time per image. Objects (parts) covering fewer than `--min-fraction` of a view's pixels are
not counted in that view (a sliver at the border or behind another object).

Ground truth:
  - a generated tabletop (`splatseg.data.synthetic.generate`): `labels/<stem>.npz` object / part maps
    and `labels/objects.json` names; object 0 is the table;
  - a real capture with per-frame `gt_mask_path` foreground masks (e.g. maryrose): one object, no
    table, no parts.

Examples:
    python scripts/eval_segments.py --scene /tmp/syn/scene
    python scripts/eval_segments.py --scene /work/shared/data/maryrose --splats runs/maryrose_recon/splats.ply
    python scripts/eval_segments.py --scene /tmp/syn/scene --segments.concave-threshold 0.3 --json out.json
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splatseg.segments.cache import resize_nearest  # noqa: E402
from splatseg.segments.felzenszwalb import FelzenszwalbConfig, FelzenszwalbSource  # noqa: E402
from splatseg.segments.geometry import Geometry  # noqa: E402


@dataclass
class Args:
    """Measure the weights-free segments against ground-truth object / part labels."""

    scene: Path
    """Scene directory (transforms.json or COLMAP) with ground truth: labels/ (generated tabletop) or
    per-frame gt_mask_path foreground masks."""
    splats: Path | None = None
    """Splat PLY for the geometry; default <scene>/splats.ply when it exists, else colour only."""
    splats_transform: Path | None = None
    """world_from_splats JSON for splats in another frame (as `train --splats-transform`)."""
    colour_only: bool = False
    """Ignore the splats: colour-only segments (model felzenszwalb-rgb-v*)."""
    every: int = 1
    """Use every n-th view."""
    max_views: int = 0
    """At most this many views (after --every); 0 = all."""
    max_side: int = 512
    """Segmentation resolution: longest image side (the trainer's segment_max_side)."""
    min_fraction: float = 0.002
    """Objects / parts covering fewer than this fraction of a view's pixels are skipped in that view."""
    iou_threshold: float = 0.8
    """Best-segment IoU at or above which an (object, view) pair counts as found."""
    merge_fraction: float = 0.3
    """Level 0 merges an object with the table when one segment holds more than this fraction of the
    object's pixel count of both the object and the table."""
    geometry_cache: Path | None = None
    """Directory to keep rendered geometry in (one npz per view), so repeated runs skip rendering."""
    json_out: Path | None = None
    """Write the per-(object/part, view) numbers and the summary here as JSON."""
    threads: int = 1
    """Torch threads for rendering the geometry (segmenting itself runs on one core)."""
    segments: FelzenszwalbConfig = field(default_factory=FelzenszwalbConfig)
    """The source's configuration (any field can be set, e.g. --segments.part-scale 800)."""


# ----------------------------------------------------------------------------- ground truth


@dataclass
class ViewTruth:
    objects: np.ndarray  # int32 [H, W], -1 = none / unlabelled
    parts: np.ndarray | None  # int32 [H, W] or None


class Truth:
    """Ground-truth label maps of a scene's views, at the label files' resolution."""

    def __init__(self, root: Path, scene):
        self.root = root
        meta = root / "labels" / "objects.json"
        self.table_id: int | None = None
        if meta.is_file():
            info = json.loads(meta.read_text())
            self.kind = "tabletop"
            self.object_names = list(info["objects"])
            self.part_names = list(info["parts"])
            self.part_object = list(info["part_object"])
            self.table_id = int(info.get("table_id", 0))
        elif all("gt_mask_path" in e for e in scene.frame_extras):
            self.kind = "foreground-masks"
            self.object_names = ["(none)", root.name]
            self.part_names, self.part_object = [], []
        else:
            raise SystemExit(f"{root}: no ground truth (labels/objects.json or per-frame gt_mask_path)")
        self.scene = scene

    def view(self, i: int) -> ViewTruth:
        cams = self.scene.cameras
        if self.kind == "tabletop":
            with np.load(self.root / "labels" / f"{cams.names[i]}.npz") as z:
                return ViewTruth(z["object"].astype(np.int32), z["part"].astype(np.int32))
        from PIL import Image

        m = np.asarray(Image.open(self.root / self.scene.frame_extras[i]["gt_mask_path"]))
        if m.ndim == 3:
            m = m[..., :3].max(-1) if m.shape[-1] != 4 else m[..., 3]
        obj = np.where(m > (127 if m.max() > 1 else 0), 1, -1).astype(np.int32)
        return ViewTruth(obj, None)


def best_ious(segmap: np.ndarray, gt: np.ndarray, ids, min_pixels: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """{gt id: best IoU} over the segments of `segmap` (same shape, -1 = none) for each id in `ids`
    with >= min_pixels pixels; also the contingency table [segments, gt ids + 1] and the gt sizes."""
    n_seg = int(segmap.max()) + 1 if (segmap >= 0).any() else 0
    n_gt = int(max(ids)) + 1 if len(ids) else 0
    s = np.where(segmap >= 0, segmap, n_seg).ravel()  # n_seg = "no segment"
    g = np.where((gt >= 0) & (gt < n_gt), gt, n_gt).ravel()  # n_gt = "other"
    table = np.bincount(s * (n_gt + 1) + g, minlength=(n_seg + 1) * (n_gt + 1)).reshape(n_seg + 1, n_gt + 1)
    seg_size = table[:n_seg].sum(1)
    gt_size = table[:, :n_gt].sum(0)
    out = {}
    for k in ids:
        if gt_size[k] < min_pixels:
            continue
        inter = table[:n_seg, k]
        union = seg_size + gt_size[k] - inter
        out[int(k)] = float((inter / np.maximum(union, 1)).max()) if n_seg else 0.0
    return out, table, gt_size


# ----------------------------------------------------------------------------- main


def main(args: Args) -> dict:
    import torch

    from splatseg.train.segments_stage import render_geometry

    torch.set_num_threads(max(1, args.threads))
    from splatseg.data import load_scene
    from splatseg.io.images import load_image
    from splatseg.data.placement import place_splats

    scene = load_scene(args.scene)
    truth = Truth(Path(args.scene), scene)
    cams = scene.cameras
    factor = max(1.0, float(max(cams.widths.max(), cams.heights.max())) / args.max_side)
    seg_cams = cams.downscaled(factor)
    splats_path = args.splats or scene.splats_path
    params = None
    if not args.colour_only and splats_path is not None and Path(splats_path).is_file():
        params = place_splats(splats_path, scene, args.splats_transform, check=False, log=lambda _: None).splats.torch_params()
    source = FelzenszwalbSource(args.segments)
    views = list(range(0, len(cams), max(1, args.every)))
    if args.max_views > 0:
        views = views[: args.max_views]
    if args.geometry_cache is not None:
        Path(args.geometry_cache).mkdir(parents=True, exist_ok=True)

    rows_obj: dict[int, list] = {}
    rows_part: dict[int, list] = {}
    per_view = []
    times, cpu_times = [], []
    for i in views:
        W, H = int(seg_cams.widths[i]), int(seg_cams.heights[i])
        rgb = load_image(cams.image_paths[i], size=(W, H))
        geom = None
        if params is not None:
            cached = Path(args.geometry_cache) / f"{cams.names[i]}_{W}x{H}.npz" if args.geometry_cache else None
            if cached is not None and cached.is_file():
                with np.load(cached) as z:
                    geom = Geometry(z["depth"], z["alpha"], z["K"])
            else:
                geom = render_geometry(params, seg_cams, i)
                if cached is not None:
                    np.savez(cached, depth=geom.depth, alpha=geom.alpha, K=geom.K)
        t0, c0 = time.perf_counter(), time.process_time()
        seg = source(rgb, geom)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)

        vt = truth.view(i)
        Hg, Wg = vt.objects.shape
        segmaps = resize_nearest(seg.segmaps, (Wg, Hg))
        min_pixels = max(1, int(np.ceil(args.min_fraction * Hg * Wg)))
        obj_ids = [k for k in range(len(truth.object_names)) if truth.kind == "tabletop" or k > 0]
        l0, table0, gt_size = best_ious(segmaps[0], vt.objects, obj_ids, min_pixels)
        record = {"view": cams.names[i], "seconds": times[-1], "objects": {}, "parts": {}}
        for k, iou in l0.items():
            merged = None
            t = truth.table_id
            if t is not None and k != t and gt_size[t] > 0:
                lim = args.merge_fraction * gt_size[k]
                merged = bool(np.any((table0[:-1, k] > lim) & (table0[:-1, t] > lim)))
            rows_obj.setdefault(k, []).append((iou, merged))
            record["objects"][truth.object_names[k]] = {"iou0": iou, "merged": merged}
        if vt.parts is not None and segmaps.shape[0] > 1:
            l1, _, _ = best_ious(segmaps[1], vt.parts, list(range(len(truth.part_names))), min_pixels)
            for k, iou in l1.items():
                rows_part.setdefault(k, []).append(iou)
                record["parts"][truth.part_names[k]] = {"iou1": iou}
        per_view.append(record)

    thr = args.iou_threshold
    print(f"scene {args.scene}  views {len(views)}  size {seg_cams.widths[views[0]]}x{seg_cams.heights[views[0]]}  "
          f"model {source.model_name(params is not None)}  geometry {'yes' if params is not None else 'no (colour only)'}")
    print(f"{'object':<16}{'views':>6}{'L0 mean IoU':>13}{f'L0 >= {thr:g}':>11}{'merged w/ table':>17}")
    summary: dict = {"model": source.model_name(params is not None), "views": len(views)}
    all_found, obj_found, merged_all, obj_iou = [], [], [], []
    for k in sorted(rows_obj):
        ious = np.array([r[0] for r in rows_obj[k]])
        merged = [r[1] for r in rows_obj[k] if r[1] is not None]
        found = ious >= thr
        all_found += found.tolist()
        if k != truth.table_id:
            obj_found += found.tolist()
            merged_all += merged
            obj_iou += ious.tolist()
        else:
            summary["L0_mean_iou_table"] = float(ious.mean())
        mtxt = f"{np.mean(merged):>17.2f}" if merged else f"{'-':>17}"
        print(f"{truth.object_names[k]:<16}{len(ious):>6}{ious.mean():>13.3f}{found.mean():>11.2f}{mtxt}")
    summary["L0_found_all"] = float(np.mean(all_found)) if all_found else float("nan")
    summary["L0_found_objects"] = float(np.mean(obj_found)) if obj_found else float("nan")
    summary["L0_merged_with_table"] = float(np.mean(merged_all)) if merged_all else float("nan")
    summary["L0_mean_iou_objects"] = float(np.mean(obj_iou)) if obj_iou else float("nan")
    print(f"{'ALL (incl table)':<16}{len(all_found):>6}{'':>13}{summary['L0_found_all']:>11.2f}")
    print(f"{'objects only':<16}{len(obj_found):>6}{summary['L0_mean_iou_objects']:>13.3f}{summary['L0_found_objects']:>11.2f}"
          f"{summary['L0_merged_with_table']:>17.2f}")
    if rows_part:
        print(f"\n{'part':<16}{'object':<10}{'views':>6}{'L1 mean IoU':>13}{f'L1 >= {thr:g}':>11}")
        multi = {o for o in truth.part_object if truth.part_object.count(o) > 1}
        part_found, part_iou = [], []
        for k in sorted(rows_part):
            ious = np.array(rows_part[k])
            o = truth.part_object[k]
            if o in multi:
                part_found += (ious >= thr).tolist()
                part_iou += ious.tolist()
            print(f"{truth.part_names[k]:<16}{truth.object_names[o]:<10}{len(ious):>6}{ious.mean():>13.3f}{(ious >= thr).mean():>11.2f}")
        summary["L1_found_multipart"] = float(np.mean(part_found)) if part_found else float("nan")
        summary["L1_mean_iou_multipart"] = float(np.mean(part_iou)) if part_iou else float("nan")
        print(f"{'parts of two-part objects':<26}{len(part_found):>6}{summary['L1_mean_iou_multipart']:>13.3f}"
              f"{summary['L1_found_multipart']:>11.2f}")
    summary["seconds_median"] = float(np.median(times))
    summary["seconds_mean"] = float(np.mean(times))
    summary["cpu_seconds_median"] = float(np.median(cpu_times))
    print(f"\ntime per image: median {summary['seconds_median']:.3f} s, mean {summary['seconds_mean']:.3f} s wall; "
          f"median {summary['cpu_seconds_median']:.3f} s CPU")
    if args.json_out is not None:
        from splatseg.io.atomic import atomic_write

        with atomic_write(args.json_out) as f:
            f.write(json.dumps({"summary": summary, "views": per_view}, indent=1).encode())
    return summary


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
