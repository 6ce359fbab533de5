"""Time of one text query through CLIPSeg on V views: the cached image side (what `train --clipseg`
stores; a query runs the text tower, the decoder on the cached activations and the lifting) against
the full CLIPSeg forward per view (then the same lifting), side by side in one process.

The views and blend weights come from a generated family scene (`splatseg.data.family`, seed 0, V
cameras; its splats only, no images are rendered: CLIPSeg gets random photos of the views' size,
which costs the same as real ones). CLIPSeg has random weights (no weights can be downloaded here):
"tiny" is the test model; "rd64" is `CLIPSegConfig()` with CIDAS/clipseg-rd64-refined's ViT-B/16 and
refined decoder at 352 px, the published architecture's size, so its times are the real model's.

Example (2 cores):
    python scripts/bench_text.py --views 40 --threads 2 --sizes tiny rd64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splatseg.data.family import FamilyConfig, build_family_scene  # noqa: E402
from splatseg.semantics.clipseg import random_clipseg  # noqa: E402
from splatseg.text_query import ClipSegIndex  # noqa: E402
from splatseg.train.clipseg_stage import image_side_arrays, lift_arrays  # noqa: E402

PHRASES = ("a mug", "the red box", "a ball on the table", "a lamp")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "rd64"], choices=["tiny", "rd64"])
    ap.add_argument("--queries", type=int, default=3, help="cached-path queries timed (median reported)")
    ap.add_argument("--full-queries", type=int, default=1, help="full-path queries timed")
    ap.add_argument("--lift-side", type=int, default=64, help="as train --clipseg-lift-side")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    scene = build_family_scene(FamilyConfig(seed=0, num_cameras=args.views, resolution=(256, 192)))
    params = scene.splats.torch_params()
    idx = list(range(len(scene.cameras)))
    t0 = time.perf_counter()
    lifted = lift_arrays(scene.cameras, idx, params, args.lift_side)
    lift_build = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (192, 256, 3), dtype=np.uint8) for _ in idx]
    print(f"scene: {len(scene.splats):,} Gaussians, {len(idx)} views; lift weights at {args.lift_side} px: "
          f"{int(lifted['lift_offsets'][-1]):,} pairs, built in {lift_build:.1f} s (train time); torch threads {args.threads}")
    print(f"{'model':6} {'image side once':>16} {'cached query':>13} {'  text+decoder':>14} {'  lift':>7} {'full query':>11} {'ratio':>7}")
    for size in args.sizes:
        seg = random_clipseg(size, seed=0)
        t0 = time.perf_counter()
        arrays = {**image_side_arrays(seg, images), **lifted, "views": np.array([str(i) for i in idx])}
        image_side = time.perf_counter() - t0
        index = ClipSegIndex.from_arrays(arrays, size)
        index.scores(seg, "warm up")  # builds the sparse matrices once, as the first query of a session does
        cached, decode = [], []
        for q in range(args.queries):
            t0 = time.perf_counter()
            maps = index.relevancy_maps(seg, PHRASES[q % len(PHRASES)])
            t1 = time.perf_counter()
            index.scores_from_maps(maps)
            cached.append(time.perf_counter() - t0)
            decode.append(t1 - t0)
        full = []
        for q in range(args.full_queries):
            t0 = time.perf_counter()
            maps = seg.full_relevancy(images, PHRASES[q % len(PHRASES)])
            index.scores_from_maps(maps)
            full.append(time.perf_counter() - t0)
        c, d = statistics.median(cached), statistics.median(decode)
        if full:
            f = statistics.median(full)
            print(f"{size:6} {image_side:15.2f}s {c:12.3f}s {d:13.3f}s {c - d:6.3f}s {f:10.2f}s {f / c:6.1f}x")
        else:  # --full-queries 0: the cached path alone
            print(f"{size:6} {image_side:15.2f}s {c:12.3f}s {d:13.3f}s {c - d:6.3f}s {'-':>11} {'-':>7}")


if __name__ == "__main__":
    main()
