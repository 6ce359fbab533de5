"""Benchmark: click -> selection latency against N, and training time per iteration.

Clicks: a field with K queries and N Gaussians (random lifted scores, 8 views of feature maps);
each click reads the feature under it, picks a query, thresholds that query's N scores and applies
the large-splat rule to N stored footprints (`splatseg.query.select_by_clicks`, the code `segment`
and the viewer run).
Clicks with 3D scores (the path `segment` and the viewer take on a run with cameras): a surface
cloud (four spheres on a plane, N Gaussians, K random lifted scores, 8 stored cameras); per click
the Gaussians near the ray (`picking.near_ray`), their blend at the pixel (`picking.pixel_weights`,
beside the 1x1 `render` call the click made before, on the same Gaussians), and the whole
`select_clicks`; the two blends' largest difference is printed too.
Training: the demo's scene (generated once into a temporary directory, noisy ground-truth
segments so no segmentation time is counted), per-iteration time of the training step at the
default settings, and the projected time of a default-length run.

    python scripts/bench_query.py                 # N = 10k, 100k, 1M, 2M and the training step
    python scripts/bench_query.py --sizes 1000000 --no-train
    python scripts/bench_query.py --sizes 100000 1000000 3000000 --no-train --no-plain   # the ray path
Targets: a click on 1M Gaussians under 20 ms on 2 CPU cores, a click with 3D scores under 5 ms at
3M; demo training under 2 minutes.
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
    plain: bool = True
    """Time clicks on the random field without cameras (2D rule)."""
    ray: bool = True
    """Time clicks with 3D scores on a surface cloud with cameras."""
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


def surface_field(n: int, k: int, d: int = 16, views: int = 8, seed: int = 0):
    """(Field with stored cameras and containment, PickingTensors) of a surface cloud of n Gaussians:
    four spheres standing on a plane, flat Gaussians about one spacing wide."""
    from splatseg.viewer.picking import PickingTensors, ray_camera

    rng = np.random.default_rng(seed)
    per = n // 5
    parts = []
    for c in [(0, 0, 0.3), (0.5, 0.2, 0.2), (-0.4, -0.3, 0.25), (0.1, -0.5, 0.15)]:
        u = rng.normal(size=(per, 3))
        parts.append(np.array(c) + u / np.linalg.norm(u, axis=1, keepdims=True) * c[2])
    parts.append(np.c_[rng.uniform(-1, 1, (n - 4 * per, 2)), np.zeros(n - 4 * per)])
    means = np.concatenate(parts).astype(np.float32)
    scales = (np.full((n, 3), 2.0 / np.sqrt(n)) * rng.uniform(0.5, 1.5, (n, 1)) * [1, 1, 0.1]).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    fld = random_field(n, k, d, views, seed)
    W, H, f = 256, 192, 220.0
    vms = []
    for a in np.linspace(0, 2 * np.pi, views, endpoint=False):
        origin = np.array([2.2 * np.cos(a), 2.2 * np.sin(a), 1.3])
        vms.append(ray_camera(origin, -origin, f)[0])
    fld.view_viewmats = np.stack(vms).astype(np.float32)
    fld.view_Ks = np.tile(np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], np.float32), (views, 1, 1))
    fld.image_sizes = np.tile([[W, H]], (views, 1))
    fld.containment = rng.uniform(0, 1, (k, k)).astype(np.float32)
    fld.features = rng.normal(size=(n, d)).astype(np.float32)
    picking = PickingTensors.build(means, quats, scales, rng.uniform(0.3, 0.99, n).astype(np.float32), fld.features)
    return fld, picking


def bench_ray_clicks(args: Args) -> None:
    from splatseg.prompts import click_ray
    from splatseg.render import render
    from splatseg.viewer.picking import NEAR_PLANE, near_ray, pixel_weights, ray_camera

    print(f"\nclick with 3D scores, surface cloud (K={args.queries}, {args.clicks} clicks, {torch.get_num_threads()} threads; median ms)")
    print(f"{'N':>10} {'near ray':>9} {'members':>8} {'blend':>7} {'1x1 render':>11} {'ratio':>6} {'max diff':>9} {'whole click':>12} {'p95':>7}")
    rng = np.random.default_rng(2)
    for n in args.sizes:
        fld, picking = surface_field(n, args.queries)
        rows = {"near": [], "blend": [], "render": [], "click": [], "members": [], "diff": []}
        for _ in range(args.clicks):
            click = Click(f"v{rng.integers(8)}", rng.uniform(64, 192), rng.uniform(48, 144))
            origin, direction, f = click_ray(fld, click)
            t0 = time.perf_counter()
            idx = near_ray(picking, origin, direction, f)
            t1 = time.perf_counter()
            viewmat, K = ray_camera(origin, direction, f)
            pw = pixel_weights(picking, idx, viewmat, f)
            new = pw.composite(fld.lifted[:, pw.gaussians].T)
            t2 = time.perf_counter()
            it = torch.from_numpy(idx)
            with torch.no_grad():
                out = render(picking.means[it], picking.quats[it], picking.scales[it], picking.opacities[it],
                             torch.from_numpy(np.ascontiguousarray(fld.lifted[:, idx].T, np.float32)),
                             torch.from_numpy(viewmat[None]).float(), torch.from_numpy(K[None]).float(), 1, 1, near_plane=NEAR_PLANE)
            t3 = time.perf_counter()
            select_by_clicks(fld, [click], picking=picking)
            t4 = time.perf_counter()
            for key, v in (("near", t1 - t0), ("blend", t2 - t1), ("render", t3 - t2), ("click", t4 - t3)):
                rows[key].append(v * 1000)
            rows["members"].append(idx.size)
            rows["diff"].append(float(np.abs(new - out.colors[0, 0, 0].numpy()).max()) / 255.0)
        med = {k: float(np.median(v)) for k, v in rows.items()}
        print(f"{n:>10} {med['near']:>9.2f} {med['members']:>8.0f} {med['blend']:>7.2f} {med['render']:>11.2f} "
              f"{med['render'] / max(med['blend'], 1e-9):>5.1f}x {max(rows['diff']):>9.1e} {med['click']:>12.2f} {np.percentile(rows['click'], 95):>7.2f}")


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
    if args.plain:
        bench_clicks(args)
    if args.ray:
        bench_ray_clicks(args)
    if args.train:
        bench_training(args)


if __name__ == "__main__":
    main(tyro.cli(Args))
