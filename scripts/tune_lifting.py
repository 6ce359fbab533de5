"""How the lifting defaults were chosen: X-ray weight, surface smoothing and threshold, on trained runs.

Training (800 steps) does not depend on what happens after it, so each run's lifting evidence
(`splatseg.train.lifting.lift_evidence`, recomputed from its ckpt.pt) is computed once and cached
beside the run (tune_evidence.npz); every setting of the grid then rebuilds `lifted` and the
containment exactly as `train` does (`trainer.lifted_scores`) and scores every click of the quality
protocol (`splatseg.evaluate.score_clicks`, the query rule `segment` uses). Means and worst cases
over the runs are printed side by side, one line per setting.

    python scripts/eval_quality.py --seeds 100-107 --rules deepest   # trains the tuning runs
    python scripts/tune_lifting.py --work outputs/eval_quality --seeds 100-107

Tune on seeds kept apart from the seeds you report (the README tunes on 0 and 100-103 and
reports 200-209). The large-splat rule of the query (`--large-factor`, `--large-score`) is varied
here too; its selections use footprints computed from the splats, so older runs can be tuned.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Args:
    work: Path = Path("outputs/eval_quality")
    """eval_quality's work folder (scenes/ and runs/)."""
    runs: str = "default_medium"
    """Run folder under WORK/runs/."""
    seeds: str = "100-107"
    """Seeds of the runs to tune on."""
    xray_weight: list[float] = field(default_factory=lambda: [0.0, 0.003, 0.01, 0.03])
    surface_smoothing: list[float] = field(default_factory=lambda: [0.0, 0.3, 1.0, 3.0])
    threshold: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5])
    rules: list[str] = field(default_factory=lambda: ["deepest", "random", "views"])
    query_rule: str = "3d"
    """"3d" (segment's rule) or "2d" (largest active query)."""
    large_factor: list[float] = field(default_factory=lambda: [8.0])
    """Large-splat rule (splatseg.query, step 5): footprint factor over the selection's median (inf: off)."""
    large_score: list[float] = field(default_factory=lambda: [0.8])
    """Large-splat rule: the score a large splat needs."""
    spike_margin: list[float] = field(default_factory=lambda: [-1.0])
    """Also drop selected splats reaching this far beyond the selection's box (refine.spikes; -1: off)."""
    show_worst: int = 0
    """Also print this many worst clicks (by 3D IoU) of every setting."""


def evidence_of(run: Path, fld, scene: Path):
    """The run's LiftEvidence, recomputed from its checkpoint once and cached in the run folder."""
    from splatseg.data import load_scene
    from splatseg.data.placement import splats_in_world
    from splatseg.io.checkpoint import load_state
    from splatseg.train.config import TrainConfig
    from splatseg.train.lifting import LiftEvidence, lift_evidence
    from splatseg.train.trainer import FeatureField, training_cameras, view_renderer

    cache = run / "tune_evidence.npz"
    if cache.exists():
        z = np.load(cache)
        return LiftEvidence(z["blend_sum"], z["blend_weight"], z["xray_sum"], z["xray_count"])
    cfg = fld.info["config"]
    state = load_state(run / "ckpt.pt")["model"]
    n, d = state["features"].shape
    k = state["queries"].shape[0]
    clip_dim = state["query_clip"].shape[1] if "query_clip" in state else None
    model = FeatureField(n, d, k, clip_dim, torch.Generator().manual_seed(0))
    model.load_state_dict(state)
    cams = training_cameras(load_scene(scene).cameras, int(cfg.get("train_max_side", TrainConfig.train_max_side)))
    params = splats_in_world(fld.splats_path, fld.info.get("splats_transform")).torch_params()
    views = [type("V", (), {"renderer": view_renderer("cached", params, cams, cams.names.index(nm))})() for nm in fld.info["train_views"]]
    with torch.no_grad():
        ev = lift_evidence(model, views, params["means"], progress=True)
    np.savez(cache, **dataclasses.asdict(ev))
    return ev


def main(args: Args) -> int:
    from eval_quality import parse_seeds, summarise, flatten  # noqa: E402 (scripts/ on the path)

    from splatseg.data.placement import splats_in_world
    from splatseg.evaluate import score_clicks
    from splatseg.prompts import run_picking, select_clicks
    from splatseg.query import select_by_clicks
    from splatseg.run import load_field
    from splatseg.train.config import TrainConfig
    from splatseg.query import Selection
    import splatseg.query as query
    from splatseg.train.refine import containment, footprint_areas, sigma3_extent, spikes

    def despike(sel, means, ext, margin):
        mask = sel.mask & ~spikes(means, ext, sel.mask, margin)
        return Selection(mask=mask, scores=sel.scores, queries=sel.queries)
    from splatseg.train.trainer import lifted_scores

    torch.set_num_threads(2)
    items = []
    for seed in parse_seeds(args.seeds):
        scene = args.work / "scenes" / f"default_{seed:03d}"
        run = args.work / "runs" / args.runs / scene.name
        fld = load_field(run)
        if fld.view_viewmats is None:  # a run from before cameras were stored: take them from its scene
            from splatseg.data import load_scene

            cams = load_scene(scene).cameras
            order = [cams.names.index(nm) for nm in fld.view_names]
            fld = dataclasses.replace(fld, view_viewmats=cams.viewmats[order], view_Ks=cams.Ks[order])
        splats = splats_in_world(fld.splats_path, fld.info.get("splats_transform"))
        items.append((seed, scene, fld, evidence_of(run, fld, scene), splats, run_picking(fld, splats)))  # picking: geometry only
    keys = ["iou_2d", "iou_3d_count", "iou_3d_area", "precision_3d_area", "recall_3d_area"]
    print(f"{'xray':>6} {'smooth':>6} {'thr':>4} {'large':>9} {'spike':>5} | " + " ".join(f"{k:>17}" for k in keys) + "   (mean / worst seed)")
    for beta, lam in itertools.product(args.xray_weight, args.surface_smoothing):
        base = []
        for seed, scene, fld, ev, splats, picking in items:
            cfg = TrainConfig(data=scene, out=Path("unused"), xray_weight=beta, surface_smoothing=lam)
            lifted = lifted_scores(ev, splats, cfg)
            f = dataclasses.replace(fld, lifted=lifted, containment=containment(lifted > 127),
                                    query_size=lifted.astype(np.float32).sum(axis=1) / 255.0,
                                    footprint=footprint_areas(splats))  # runs from before the rule stored none
            base.append((seed, scene, f, picking))
        for t, factor, score, margin in itertools.product(args.threshold, args.large_factor, args.large_score, args.spike_margin):
            query.LARGE_SPLAT_FACTOR, query.LARGE_SPLAT_SCORE = factor, score  # the rule reads them at every selection
            rows = []
            for (seed, scene, f, picking), (_, _, _, _, splats, _) in zip(base, items):
                if args.query_rule == "2d":
                    select = lambda fl, c: select_by_clicks(fl, [c], threshold=t)  # noqa: E731
                else:
                    select = lambda fl, c, p=picking: select_clicks(fl, [c], threshold=t, picking=p)  # noqa: E731
                if margin >= 0:
                    ext = sigma3_extent(splats)
                    select = lambda fl, c, inner=select, ext=ext, sp=splats: despike(inner(fl, c), sp.means, ext, margin)  # noqa: E731
                rows += [flatten(seed, s) for s in score_clicks(scene, f, select, rules=args.rules, seed=seed)]
            s = summarise(rows)
            print(f"{beta:>6} {lam:>6} {t:>4} {f'{factor:g}/{score:g}':>9} {margin:>5} | " + " ".join(f"{s['mean'][k]:>8.3f} / {s['worst_seed'][k]:.3f}" for k in keys), flush=True)
            for r in sorted(rows, key=lambda r: r["iou_3d_count"])[: args.show_worst]:
                print(f"    seed {r['seed']} {r['object']:<10} {r['rule']:<8} {r['click']}  2D {r['iou_2d']:.3f} 3D {r['iou_3d_count']:.3f} "
                      f"P {r['precision_3d_count']:.3f} R {r['recall_3d_count']:.3f} selected {r['selected']}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main(tyro.cli(Args)))
