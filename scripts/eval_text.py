"""Text-prompt evaluation in the LERF-Mask style: per prompt, the 3D selection the text gives,
rendered in annotated views, against that view's mask: mean IoU and boundary IoU per prompt.

Two sources of prompts and masks:

1. The generated family (default): for each `--seeds` member (`splatseg.data.family`, small images),
   every clickable object's name is a prompt ("mug", "ball", ...; objects sharing a name are one
   prompt whose mask is their union). The views with index % 8 == 0 are held out: CLIPSeg's image
   side and the lifting use the others (what `train --clipseg` stores, built here directly with
   `splatseg.train.clipseg_stage.clipseg_arrays`: a CLIPSeg answer does not use the learned field,
   so no features are trained), masks are scored in the held-out views. The selection is lifted
   relevancy > `--threshold` (`splatseg.text_query`).
2. Real data (`--run RUN --annotations DIR`): a run trained with `--clipseg` (or `--clip-pretrained`),
   answered exactly as `segment --text` answers. Layout read:
       DIR/<prompt>/<image stem>.png     one mask per annotated view (any image mode; nonzero = inside),
                                         at any size (resized to the view, nearest); the folder name is
                                         the prompt ("a ship model"); views are named by their stems
   Every annotated view is scored; a view the run trained on is marked in the table (train) since
   CLIPSeg saw it (LERF-Mask scores held-out frames).

`--oracle`: instead of CLIPSeg, the exact masks (the generator's object maps, or for real data the
annotations, which must then cover every training view) are the relevancy maps: the ceiling of
the lifting step with perfect 2D answers.

With random CLIPSeg weights (`--random-clipseg tiny`, the only ones on this machine) the figures are
near chance: the point is that the pipeline runs end to end and prints its table; a real run needs
`--clipseg` naming CIDAS/clipseg-rd64-refined (a local folder, or the hub name when online).

Examples:
    python scripts/eval_text.py --seeds 0 1 --random-clipseg tiny
    python scripts/eval_text.py --seeds 0 1 --oracle
    python scripts/eval_text.py --run runs/maryrose_run --annotations /tmp/maryrose_annotations
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splatseg.evaluate import render_selection  # noqa: E402
from splatseg.metrics import boundary_iou, iou  # noqa: E402


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """bool [H, W] (size = (W, H)) of an annotation image: nonzero = inside, nearest resize."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L")
        if im.size != size:
            im = im.resize(size, Image.NEAREST)
        return np.asarray(im) > 0


def score_views(params, mask3d, cams, views, truths) -> tuple[list[float], list[float]]:
    ious, bious = [], []
    for i, truth in zip(views, truths):
        pred = render_selection(params, mask3d, cams, i)
        ious.append(iou(pred, truth))
        bious.append(boundary_iou(pred, truth))
    return ious, bious


def family_rows(seed: int, clipseg, oracle: bool, threshold: float, cameras: int, side: int, work: Path) -> list[dict]:
    from splatseg.data import load_scene
    from splatseg.data.family import FamilyConfig, generate_family_scene
    from splatseg.data.synthetic import load_ground_truth
    from splatseg.io.ply import read_ply
    from splatseg.text_query import ClipSegIndex
    from splatseg.train.clipseg_stage import clipseg_arrays

    root = generate_family_scene(work / f"family{seed}", FamilyConfig(seed=seed, num_cameras=cameras, resolution=(side, side * 3 // 4),
                                                                      gaussians_per_object=1500), progress=False)
    scene = load_scene(root)
    cams = scene.cameras
    params = read_ply(root / "splats.ply").torch_params()
    train = [i for i in range(len(cams)) if i % 8 != 0]
    held = [i for i in range(len(cams)) if i % 8 == 0]
    arrays, _ = clipseg_arrays(clipseg, cams, train, params, lift_side=64, progress=False)
    index = ClipSegIndex.from_arrays(arrays, "eval")
    gt = load_ground_truth(root)
    labels = {i: np.load(root / "labels" / f"{cams.names[i]}.npz")["object"] for i in range(len(cams))}
    names: dict[str, list[int]] = {}
    for oid, name in enumerate(gt.object_names):
        if oid not in gt.background_ids:
            names.setdefault(name, []).append(oid)
    rows = []
    for name, ids in names.items():
        if oracle:
            maps = np.stack([np.isin(labels[i], ids).astype(np.float32) for i in train])
            scores = index.scores_from_maps(maps)
        else:
            scores = index.scores(clipseg, name)
        sel = scores > threshold
        truths = [np.isin(labels[i], ids) for i in held]
        keep = [(i, t) for i, t in zip(held, truths) if t.any()]
        ious, bious = score_views(params, sel, cams, [i for i, _ in keep], [t for _, t in keep])
        rows.append({"scene": f"family seed {seed}", "prompt": name, "views": len(keep), "miou": float(np.mean(ious)),
                     "biou": float(np.mean(bious)), "selected": int(sel.sum()), "total": int(sel.size),
                     "iou3d": iou(sel, np.isin(gt.object_id, ids))})
    return rows


def real_rows(run: Path, annotations: Path, oracle: bool, threshold: float) -> list[dict]:
    from splatseg.data import load_scene
    from splatseg.data.placement import run_splats
    from splatseg.run import load_field
    from splatseg.text_query import ClipSegIndex, TextPrompter

    if not annotations.is_dir():
        raise SystemExit(f"eval_text: --annotations {annotations} is not a folder (layout: DIR/<prompt>/<stem>.png)")
    fld = load_field(run)
    cams = load_scene(fld.scene_root).cameras
    params = run_splats(fld).torch_params()
    stems = {n: i for i, n in enumerate(cams.names)}
    trained = set(fld.info.get("train_views", []))
    prompter = TextPrompter(fld)
    rows = []
    for folder in sorted(p for p in annotations.iterdir() if p.is_dir()):
        prompt = folder.name
        files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")}
        unknown = [s for s in files if s not in stems]
        if unknown:
            raise SystemExit(f"eval_text: {folder}/{unknown[0]}: no view of the run's scene has that stem")
        if oracle:
            index = ClipSegIndex.load(fld)
            missing = [v for v in index.views if v not in files]
            if missing:
                raise SystemExit(f"eval_text: --oracle needs a mask for every training view; {folder} lacks {missing[0]}")
            maps = np.stack([load_mask(files[v], (int(cams.widths[stems[v]]), int(cams.heights[stems[v]]))).astype(np.float32)
                             for v in index.views])
            sel = index.scores_from_maps(maps) > threshold
            backend = "oracle"
        else:
            answer = prompter.select(prompt, threshold)
            sel, backend = answer.selection.mask, answer.backend
        for split in ("held-out", "train"):
            views = [stems[s] for s in files if (s in trained) == (split == "train")]
            if not views:
                continue
            truths = [load_mask(files[cams.names[i]], (int(cams.widths[i]), int(cams.heights[i]))) for i in views]
            ious, bious = score_views(params, sel, cams, views, truths)
            rows.append({"scene": f"{Path(run).name} ({backend}, {split})", "prompt": prompt, "views": len(views), "miou": float(np.mean(ious)),
                         "biou": float(np.mean(bious)), "selected": int(sel.sum()), "total": int(sel.size), "iou3d": None})
    return rows


def print_table(rows: list[dict], title: str) -> None:
    print(title)
    print(f"{'scene':34} {'prompt':22} {'views':>5} {'mIoU':>6} {'bIoU':>6} {'3D IoU':>7} {'selected':>16}")
    for r in rows:
        i3 = "" if r["iou3d"] is None else f"{r['iou3d']:.3f}"
        print(f"{r['scene'][:34]:34} {r['prompt'][:22]:22} {r['views']:5d} {r['miou']:6.3f} {r['biou']:6.3f} {i3:>7} "
              f"{r['selected']:>7,} of {r['total']:<7,}")
    if rows:
        m = [r["miou"] for r in rows]
        b = [r["biou"] for r in rows]
        print(f"{'mean over ' + str(len(rows)) + ' prompts':57} {np.mean(m):6.3f} {np.mean(b):6.3f}   (worst mIoU {min(m):.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="generated family members (without --run)")
    ap.add_argument("--clipseg", help="CLIPSeg folder or hub name for the family (e.g. a local CIDAS/clipseg-rd64-refined)")
    ap.add_argument("--random-clipseg", choices=["tiny", "rd64"], default=None, help="random-weight CLIPSeg for the family")
    ap.add_argument("--oracle", action="store_true", help="exact masks as relevancy: the lifting's ceiling")
    ap.add_argument("--threshold", type=float, default=0.3, help="lifted relevancy (divided by its maximum) above which a Gaussian is selected")
    ap.add_argument("--cameras", type=int, default=24, help="views per family scene (every 8th held out)")
    ap.add_argument("--side", type=int, default=128, help="image width of the family scenes")
    ap.add_argument("--run", type=Path, help="a trained run (real data): answered as `segment --text` does")
    ap.add_argument("--annotations", type=Path, help="DIR/<prompt>/<stem>.png masks for --run")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.run is not None:
        if args.annotations is None:
            raise SystemExit("eval_text: --run needs --annotations DIR (DIR/<prompt>/<stem>.png)")
        print_table(real_rows(args.run, args.annotations, args.oracle, args.threshold), f"text evaluation of {args.run}")
        return
    from splatseg.semantics.clipseg import ClipSeg, random_clipseg

    if args.clipseg:
        clipseg, what = ClipSeg.load(args.clipseg), args.clipseg
    else:
        kind = args.random_clipseg or "tiny"
        clipseg, what = random_clipseg(kind, seed=0), f"random-weight CLIPSeg ({kind}): near chance by construction"
    rows = []
    with tempfile.TemporaryDirectory(prefix="eval_text_") as work:
        for seed in args.seeds:
            rows += family_rows(seed, clipseg, args.oracle, args.threshold, args.cameras, args.side, Path(work))
    how = "oracle relevancy (exact object masks)" if args.oracle else what
    print_table(rows, f"text evaluation on the generated family, seeds {args.seeds}, held-out views, {how}")


if __name__ == "__main__":
    main()
