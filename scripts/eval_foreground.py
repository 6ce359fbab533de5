"""Foreground segmentation quality on a scene with ground-truth masks (NVOS / SPIn-NeRF protocol).

One click on the object in one view -> selection -> rendered in every view -> IoU, pixel
accuracy and boundary IoU against each frame's `gt_mask_path`, per view and mean (all views,
and held-out views when the run held some out).

    python scripts/eval_foreground.py --data ../shared/data/maryrose --run runs/maryrose_run
    python scripts/eval_foreground.py --data SCENE --run RUN --click IMG_9669 140 150 --json out.json
    python scripts/eval_foreground.py --data SCENE --run PLY_ONLY_RUN   # default prompt as a 3D point
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tyro

from splatseg.evaluate import evaluate_foreground
from splatseg.io.atomic import atomic_write
from splatseg.query import DEFAULT_THRESHOLD, Click, Granularity, Point


@dataclass
class Args:
    data: Path
    """Scene directory whose frames have gt_mask_path."""
    run: Path
    """Run directory trained on that scene."""
    click: tuple[str, float, float] | None = None
    """STEM X Y; default: the pixel deepest inside the first view's ground-truth mask (given as the
    3D point under it when the run does not know that view: a PLY-only run)."""
    point: tuple[float, float, float] | None = None
    """X Y Z: a 3D point prompt in the splats' world coordinates instead of a click."""
    granularity: Granularity = "whole"
    """Click granularity."""
    threshold: float = DEFAULT_THRESHOLD
    """Selection threshold on lifted scores."""
    json: Path | None = None
    """Also write the per-view rows and means here."""
    per_view: bool = False
    """Print every view's row."""


def main(args: Args) -> int:
    click = Click(*args.click) if args.click else None
    point = Point(*args.point) if args.point else None
    try:
        prompt, sel, rows = evaluate_foreground(args.data, args.run, click, args.threshold, args.granularity, point)
    except (ValueError, FileNotFoundError) as e:
        print(f"eval_foreground: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if isinstance(prompt, Click):
        what = f"click {prompt.stem} ({prompt.x:.1f}, {prompt.y:.1f})"
    else:
        what = f"point ({prompt.x:.4g}, {prompt.y:.4g}, {prompt.z:.4g})"
    print(f"{what} -> {sel.count} of {len(sel.mask)} Gaussians selected")
    if args.per_view:
        print(f"{'view':<14} {'held-out':>8} {'IoU':>7} {'acc':>7} {'bIoU':>7}")
        for r in rows:
            print(f"{r.stem:<14} {str(r.heldout):>8} {r.iou:>7.3f} {r.accuracy:>7.3f} {r.boundary_iou:>7.3f}")
    summary = {}
    for name, subset in (("all views", rows), ("held-out views", [r for r in rows if r.heldout])):
        if subset:
            summary[name] = {"views": len(subset), "mIoU": float(np.mean([r.iou for r in subset])),
                             "mAcc": float(np.mean([r.accuracy for r in subset])),
                             "boundary_mIoU": float(np.mean([r.boundary_iou for r in subset]))}
    print(f"{'':<16} {'views':>6} {'mIoU':>7} {'mAcc':>7} {'bIoU':>7}")
    for name, m in summary.items():
        print(f"{name:<16} {m['views']:>6} {m['mIoU']:>7.3f} {m['mAcc']:>7.3f} {m['boundary_mIoU']:>7.3f}")
    if args.json:
        with atomic_write(args.json) as f:
            f.write(json.dumps({("click" if isinstance(prompt, Click) else "point"): asdict(prompt), "selected": sel.count, "summary": summary,
                                "views": [asdict(r) for r in rows]}, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
