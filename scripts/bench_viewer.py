"""Viewer responsiveness: server-side time from a click to the recoloured splat handle.

For N = 10k, 100k, 1M Gaussians of a synthetic field (128 sphere-shaped objects spread over a
4 x 4 x 1 box, Gaussians on their surfaces sized to the sample spacing; D = 16 features, K = 128
queries, one per object), each click is timed in four steps, exactly as `splatseg view` runs them:
  ray     `SelectionSession.click` part 1: cull + render the 1x1 feature pixel along the ray
  query   `SelectionSession.click` part 2: `query.select_by_feature` (K x D product + lifted row)
  colours `Highlighter.rgbs(mask)`: the new uint8 [N, 3] display colours
  assign  `handle.rgbs = ...` on a viser Gaussian splat handle (packing + the queued message copy)
Rays start at a camera 6 units from the box centre and aim at random objects' centres, with the
focal length of a 1080-pixel-high, 50-degree canvas. Printed: a markdown table of medians (ms), the
p95 of the total, and the one-off set-up costs (picking tensors + covariances + highlight
colours; adding the handle). Target: total < 150 ms at N = 100k on 2 CPU cores.

    python scripts/bench_viewer.py [--sizes 10000 100000 1000000] [--clicks 20]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from splatseg.query import QueryError
from splatseg.run import Field
from splatseg.viewer.display import Highlighter, splat_covariances
from splatseg.viewer.picking import PickingTensors, focal_from_fov
from splatseg.viewer.session import SelectionSession

NUM_OBJECTS = 128
FEATURE_DIM = 16


def synthetic(n: int, seed: int = 0):
    """(means, quats, scales, opacities, rgb, field, object centres) of a random N-Gaussian scene."""
    rng = np.random.default_rng(seed)
    centres = np.column_stack([rng.uniform(-2, 2, NUM_OBJECTS), rng.uniform(-2, 2, NUM_OBJECTS), rng.uniform(-0.5, 0.5, NUM_OBJECTS)])
    radii = rng.uniform(0.1, 0.3, NUM_OBJECTS)
    obj = rng.integers(0, NUM_OBJECTS, n)
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    means = (centres[obj] + radii[obj, None] * v).astype(np.float32)
    spacing = math.sqrt((4 * math.pi * radii**2).sum() / n)
    scales = np.full((n, 3), 0.75 * spacing, np.float32)
    scales[:, 2] *= 0.1
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    opacities = np.full(n, 0.9, np.float32)
    rgb = rng.uniform(0, 1, (NUM_OBJECTS, 3)).astype(np.float32)[obj]
    directions = rng.normal(size=(NUM_OBJECTS, FEATURE_DIM)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    features = directions[obj] + rng.normal(0, 0.05, (n, FEATURE_DIM)).astype(np.float32)
    lifted = np.zeros((NUM_OBJECTS, n), np.uint8)
    lifted[obj, np.arange(n)] = 255
    field = Field(
        run_dir=Path("."), info={"num_gaussians": n}, features=features, queries=directions * 8.0,
        query_bias=np.full(NUM_OBJECTS, -4.0, np.float32), query_clip=None, lifted=lifted,
        query_size=lifted.astype(np.float32).sum(1) / 255, visibility=np.ones(n, np.float32),
        view_names=[], view_maps=np.zeros((0, 1, 1, FEATURE_DIM), np.float16), image_sizes=np.zeros((0, 2), np.int64),
    )
    return means, quats, scales, opacities, rgb, field, centres


def bench(n: int, clicks: int, server) -> dict:
    means, quats, scales, opacities, rgb, field, centres = synthetic(n)
    t0 = time.perf_counter()
    covs = splat_covariances(quats, scales)
    rgb_u8 = (rgb * 255 + 0.5).astype(np.uint8)
    picking = PickingTensors.build(means, quats, scales, opacities, field.features)
    highlighter = Highlighter(rgb_u8)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    handle = server.scene.add_gaussian_splats(f"/bench_{n}", means, covs, rgb_u8, opacities[:, None])
    add = time.perf_counter() - t0
    session = SelectionSession(field, picking)
    focal = focal_from_fov(math.radians(50), 1080)
    eye = np.array([6.0, 0.0, 3.0])
    rng = np.random.default_rng(1)
    rows = {"ray": [], "query": [], "colours": [], "assign": [], "total": []}
    done = 0
    while done < clicks:
        target = centres[rng.integers(NUM_OBJECTS)]
        session.clear()
        t0 = time.perf_counter()
        try:
            result = session.click(eye, target - eye, focal)
        except QueryError:
            continue  # the ray missed (cannot happen when aiming at a centre, but be safe)
        t1 = time.perf_counter()
        colours = highlighter.rgbs(session.mask)
        t2 = time.perf_counter()
        handle.rgbs = colours
        t3 = time.perf_counter()
        rows["ray"].append(result.ray_seconds)
        rows["query"].append(result.query_seconds)
        rows["colours"].append(t2 - t1)
        rows["assign"].append(t3 - t2)
        rows["total"].append(t3 - t0)
        done += 1
    handle.remove()
    out = {k: 1e3 * statistics.median(v) for k, v in rows.items()}
    out["p95"] = 1e3 * float(np.percentile(rows["total"], 95))
    out.update(n=n, setup=setup, add=add, selected=session.count)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the viewer's default is 1)")
    args = ap.parse_args()
    import viser

    torch.set_num_threads(args.threads)
    import socket

    with socket.socket() as sock:  # a free local port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    try:
        results = [bench(n, args.clicks, server) for n in args.sizes]
    finally:
        server.stop()
    print(f"\nclick -> recoloured handle, server side, median of {args.clicks} clicks, torch threads {torch.get_num_threads()} (ms)\n")
    print("| N | ray feature | query | colours | assign | **total** | p95 total | set-up (s) | add handle (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['n']:,} | {r['ray']:.1f} | {r['query']:.1f} | {r['colours']:.1f} | {r['assign']:.1f} | **{r['total']:.1f}** | {r['p95']:.1f} "
              f"| {r['setup']:.2f} | {r['add']:.2f} |")


if __name__ == "__main__":
    main()
