"""`splatseg imitate` and `splatseg decode`: the commands of the SAM-decoder path.

`decode` prints one JSON line last: the view, SAM's three scores, the mask index used, the mask's
pixel count; with --out also `selected`, `total`, the views prompted and `seconds`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from splatseg.imitation.config import DecodeConfig, ImitateConfig
from splatseg.imitation.decoder import PromptError

RANDOM_DECODE_WARNING = ("WARNING: {run} was imitated from a RANDOMLY initialised SAM ({teacher}): "
                         "its masks are meaningless for real use (a benchmark teacher).")


def run_imitate(cfg: ImitateConfig) -> dict:
    from splatseg.imitation.distill import imitate

    return imitate(cfg)


def check_decode_config(cfg: DecodeConfig) -> None:
    if not cfg.click and cfg.box is None:
        raise PromptError("give at least one --click STEM X Y or a --box STEM X0 Y0 X1 Y1")
    if not 0.0 <= cfg.threshold <= 1.0:
        raise PromptError(f"--threshold must lie in [0, 1], got {cfg.threshold}")
    if cfg.mask_index not in (-1, 0, 1, 2):
        raise PromptError(f"--mask-index must be -1 (best score), 0, 1 or 2, got {cfg.mask_index}")
    if cfg.mask_out is not None and cfg.mask_out.suffix.lower() != ".png":
        raise PromptError(f"--mask-out must name a .png file, got {cfg.mask_out}")
    if cfg.max_views < 0:
        raise PromptError(f"--max-views must be >= 0, got {cfg.max_views}")


def run_decode(cfg: DecodeConfig) -> dict:
    """Decodes the 2D mask (and with --out the 3D selection); returns the JSON summary."""
    from splatseg.export import export_ply
    from splatseg.imitation.aggregate import Box2D, LiftViews, Point2D, aggregate, click_point, prompts_in_view
    from splatseg.imitation.refine import refine_scores
    from splatseg.imitation.views import DecoderRun
    from splatseg.io.images import save_image

    t0 = time.time()
    check_decode_config(cfg)
    run = DecoderRun.load(cfg.run, cfg.device)
    from splatseg.run import CKPT_NAME, RUN_FILES, refuse_writing_over

    inputs = [(Path(run.info["splats"]), "the run's splats file"), (Path(cfg.run) / "imitation.npz", "the run's imitation.npz"),
              *((Path(cfg.run) / name, f"the run's {name}") for name in (*RUN_FILES, CKPT_NAME)),
              *((Path(p), "one of the scene's images") for p in run.cameras.image_paths)]
    for path, flag in ((cfg.out, "--out"), (cfg.mask_out, "--mask-out")):
        if path is not None:
            refuse_writing_over(Path(path), inputs, flag=flag)
    if run.imitation.random_teacher:
        print(RANDOM_DECODE_WARNING.format(run=cfg.run, teacher=run.imitation.teacher), file=sys.stderr, flush=True)
    clicks = [Point2D(s, x, y, True) for s, x, y in cfg.click] + [Point2D(s, x, y, False) for s, x, y in cfg.negative]
    box = None if cfg.box is None else Box2D(*cfg.box)
    stem = cfg.view or (box.stem if box is not None else next((c.stem for c in clicks if c.positive), None))
    if stem is None:
        raise PromptError("with only negative clicks, name the view of the mask with --view")
    view = run.view(stem)
    if box is not None:
        run.view(box.stem)  # unknown stem -> one-line error
        if box.stem != view.name:
            raise PromptError(f"the box is drawn in {box.stem!r} but the mask is asked for {view.name!r}: a box prompts its own view only")
    points = [click_point(run, c) for c in clicks]
    xy, labels = prompts_in_view(view, run.geometry(view), points)
    if not (labels == 1).any() and box is None:
        raise PromptError(f"no positive click is visible in {view.name!r}")
    decoded = run.decode(view, xy if len(xy) else None, labels if len(xy) else None, None if box is None else box.array)
    k = decoded.choose(cfg.mask_index)
    mask2d = decoded.masks[k]
    summary = {"view": view.name, "scores": [round(float(s), 4) for s in decoded.scores], "mask_index": k,
               "mask_pixels": int(mask2d.sum()), "mask_fraction": round(float(mask2d.mean()), 4), "teacher": run.imitation.teacher}
    if cfg.mask_out is not None:
        Path(cfg.mask_out).parent.mkdir(parents=True, exist_ok=True)
        save_image(cfg.mask_out, mask2d)
        summary["mask_out"] = str(cfg.mask_out)
    if cfg.out is not None:
        lift_views = LiftViews(run)
        agg = aggregate(run, clicks, box, mask_index=None if cfg.mask_index < 0 else cfg.mask_index, threshold=cfg.threshold,
                        max_views=cfg.max_views, lift_views=lift_views, progress=cfg.progress)
        scores = agg.scores
        if cfg.refine:
            scores = refine_scores(scores, lift_views, agg.view_masks, run.splats.base_rgb)
        selected = scores > cfg.threshold
        export = ~selected if cfg.invert else selected
        if not export.any():
            raise PromptError("the selection is empty: nothing to export (try a lower --threshold or another prompt)")
        count = export_ply(Path(run.info["splats"]), export, cfg.out)
        summary.update({"selected": count, "total": run.num_gaussians, "views_prompted": [len(r) for r in agg.rounds],
                        "refined": cfg.refine, "out": str(cfg.out)})
    summary["seconds"] = round(time.time() - t0, 3)
    return summary


def print_summary(summary: dict) -> None:
    print(json.dumps(summary))
