"""Benchmark: click -> selection latency against N, and training time per iteration.

Clicks: a field with K queries and N Gaussians (random lifted scores, 8 views of feature maps);
each click reads the feature under it, picks a query, thresholds that query's N scores and applies
the large-splat rule to N stored footprints (`splatseg.query.select_by_clicks`, the code `segment`
and the viewer run).
Training: the demo's scene (generated once into a temporary directory, noisy ground-truth
segments so no segmentation time is counted), per-iteration time of the training step at the
default settings, and the projected time of a default-length run.

    python scripts/bench_query.py                 # N = 10k, 100k, 1M, 2M and the training step
    python scripts/bench_query.py --sizes 1000000 --no-train
Targets: a click on 1M Gaussians under 20 ms on 2 CPU cores; demo training under 2 minutes.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

from splatseg.prompts import select_clicks as select_by_clicks  # the rule segment uses
from splatseg.query import Click
from splatseg.run import Field


@dataclass
class Args:
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000, 2_000_000])
    """Gaussian counts N for the click benchmark."""
    queries: int = 128
    """K queries."""
    clicks: int = 50
    """Clicks timed per N."""
    train: bool = True
    """Also time the training step on the demo scene."""
    train_steps: int = 40
    """Training steps timed."""
    threads: int = 2
    """torch threads."""


def random_field(n: int, k: int, d: int = 16, views: int = 8, seed: int = 0) -> Field:
    rng = np.random.default_rng(seed)
    return Field(
        run_dir=Path("."), info={"num_gaussians": n}, features=np.zeros((1, d), np.float32),
        queries=rng.normal(size=(k, d)).astype(np.float32), query_bias=np.zeros(k, np.float32), query_clip=None,
        lifted=rng.integers(0, 256, size=(k, n), dtype=np.uint8), query_size=rng.uniform(1, 100, k).astype(np.float32),
        visibility=np.ones(n, np.float32), footprint=rng.lognormal(-9.0, 1.0, n).astype(np.float32),  # the large-splat rule runs
        view_names=[f"v{i}" for i in range(views)],
        view_maps=rng.normal(size=(views, 96, 128, d)).astype(np.float16), image_sizes=np.tile([[256, 192]], (views, 1)),
    )


def bench_clicks(args: Args) -> None:
    print(f"\nclick -> selection (K={args.queries}, {args.clicks} clicks, {torch.get_num_threads()} threads)")
    print(f"{'N':>10} {'mean ms':>9} {'p95 ms':>8} {'selected %':>11}")
    rng = np.random.default_rng(1)
    for n in args.sizes:
        fld = random_field(n, args.queries)
        times, frac = [], []
        for _ in range(args.clicks):
            click = Click(f"v{rng.integers(8)}", rng.uniform(0, 256), rng.uniform(0, 192))
            t = time.perf_counter()
            sel = select_by_clicks(fld, [click])
            times.append((time.perf_counter() - t) * 1000)
            frac.append(sel.mask.mean())
        print(f"{n:>10} {np.mean(times):>9.2f} {np.percentile(times, 95):>8.2f} {100 * np.mean(frac):>11.1f}")


def bench_training(args: Args) -> None:
    from splatseg.data import load_scene
    from splatseg.data.synthetic import SyntheticConfig, generate, load_ground_truth
    from splatseg.io.formats import read_splats as read_ply
    from splatseg.segments.cache import segments_dir, write_segments
    from splatseg.segments.noisy import simulate_segments
    from splatseg.train.config import TrainConfig
    from splatseg.train.trainer import FeatureField, load_view, step_loss, training_cameras

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        scene_dir = generate(Path(tmp) / "scene", SyntheticConfig(), progress=False)
        gen_s = time.perf_counter() - t
        gt = load_ground_truth(scene_dir)
        cams = load_scene(scene_dir).cameras
        for v, stem in enumerate(cams.names):
            write_segments(segments_dir(scene_dir) / f"{stem}.npz", simulate_segments(*gt.view_labels(stem), seed=v))
        cfg = TrainConfig(data=scene_dir, out=Path(tmp) / "run")
        splats = read_ply(scene_dir / "splats.ply")
        params = splats.torch_params()
        tcams = training_cameras(cams, cfg.train_max_side)
        t = time.perf_counter()
        views = [load_view(params, tcams, i, segments_dir(scene_dir), cfg.min_segment_pixels) for i in range(len(cams))]
        prep_s = time.perf_counter() - t
        gen = torch.Generator().manual_seed(0)
        model = FeatureField(len(splats), cfg.feature_dim, cfg.num_queries, None, gen)
        optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        for i in range(3):  # warm-up
            step_loss(model, views[i], cfg, gen).backward()
        t = time.perf_counter()
        for i in range(args.train_steps):
            loss = step_loss(model, views[i % len(views)], cfg, gen)
            optim.zero_grad()
            loss.backward()
            optim.step()
        per_step = (time.perf_counter() - t) / args.train_steps
    print(f"\ntraining on the demo scene ({len(splats)} Gaussians, {len(cams)} views at "
          f"{tcams.widths[0]}x{tcams.heights[0]}, D={cfg.feature_dim}, K={cfg.num_queries}, {cfg.pixels_per_step} px/step)")
    print(f"{'scene generation s':>20} {'blend weights s':>16} {'ms / step':>10} {'steps':>6} {'projected train s':>18}")
    print(f"{gen_s:>20.1f} {prep_s:>16.1f} {per_step * 1000:>10.1f} {cfg.iterations:>6} {prep_s + per_step * cfg.iterations:>18.1f}")


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    bench_clicks(args)
    if args.train:
        bench_training(args)


if __name__ == "__main__":
    main(tyro.cli(Args))
