"""Cost of the steps after training, side by side: the earlier lifting (blend evidence, unseen
Gaussians filled from neighbours) against today's (X-ray votes, surface graph, propagation,
containment), on trained runs whose evidence `scripts/tune_lifting.py` cached (tune_evidence.npz).

    python scripts/bench_lifting.py --work runs/evalq --runs q9_medium --seeds 200-205

Prints per run: N, K, seconds of each step, and the added seconds against the run's own training
time (run.json `train_seconds`, on the machine and load it was trained under).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Args:
    work: Path = Path("outputs/eval_quality")
    runs: str = "default_medium"
    seeds: str = "200-205"
    repeats: int = 2
    """Timed repetitions (median)."""


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main(args: Args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from eval_quality import parse_seeds

    from splatseg.data.placement import splats_in_world
    from splatseg.train.lifting import LiftEvidence, evidence_scores, fill_unseen, quantise
    from splatseg.train.refine import RefineConfig, containment, refine_scores, surface_graph

    print(f"{'run':<14} {'N':>7} {'K':>4} | {'before s':>8} | {'votes s':>7} {'graph s':>7} {'propagate s':>11} {'contain s':>9} {'after s':>8} | "
          f"{'added s':>7} {'train s':>7} {'added/train':>11}")
    for seed in parse_seeds(args.seeds):
        run = args.work / "runs" / args.runs / f"default_{seed:03d}"
        z = np.load(run / "tune_evidence.npz")
        ev = LiftEvidence(z["blend_sum"], z["blend_weight"], z["xray_sum"], z["xray_count"])
        info = json.loads((run / "run.json").read_text())
        splats = splats_in_world(info["splats"], info.get("splats_transform"))
        n, k = ev.blend_sum.shape

        def before():
            s, sup = evidence_scores(ev, 0.0)
            return quantise(fill_unseen(s, sup, splats.means, 8))

        t_before, _ = timed(before, args.repeats)
        t_votes, (scores, support) = timed(lambda: evidence_scores(ev, 0.01), args.repeats)
        scores = fill_unseen(scores, support, splats.means, 8)
        t_graph, graph = timed(lambda: surface_graph(splats, RefineConfig()), args.repeats)
        t_prop, refined = timed(lambda: refine_scores(scores, support, graph, RefineConfig()), args.repeats)
        lifted = quantise(refined)
        t_cont, _ = timed(lambda: containment(lifted > 127), args.repeats)

        def full():
            s, sup = evidence_scores(ev, 0.01)
            s = fill_unseen(s, sup, splats.means, 8)
            cfg = RefineConfig()
            q = quantise(refine_scores(s, sup, surface_graph(splats, cfg), cfg))
            return containment(q > 127)

        after, _ = timed(full, args.repeats)
        added = after - t_before
        train = float(info.get("train_seconds", float("nan")))
        print(f"{run.name:<14} {n:>7} {k:>4} | {t_before:>8.2f} | {t_votes:>7.2f} {t_graph:>7.2f} {t_prop:>11.2f} {t_cont:>9.2f} {after:>8.2f} | "
              f"{added:>7.2f} {train:>7.1f} {added / train:>11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(tyro.cli(Args)))
