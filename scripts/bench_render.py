"""Benchmark of splatseg's rendering backend (never imported by the package).

For each N (Gaussians) x resolution x D (channels): forward and forward+backward time of the full
differentiable render (`render(..., backend="torch")`, one camera), its peak memory, and for D=16 the
frozen-geometry feature step (`composite` forward+backward on cached `blend_weights`) beside it; on a
CUDA machine also gsplat's `rasterization` (through `render`) on the same scene.

Memory: peak resident set size (`resource.getrusage(...).ru_maxrss`) of a fresh subprocess per
configuration, minus its value after the scene is built (so the Python/torch baseline and the
scene's own tensors are excluded); GPU rows use `torch.cuda.max_memory_allocated`.
Configurations whose estimated peak exceeds the memory available are printed as skipped.

Scene: Gaussians uniformly in the camera frustum at depths 2..4, anisotropic, random orientation,
opacities U(0.1, 0.99), sizes log-uniform over a factor 9 around a mean chosen so that the 3-sigma
ellipses cover each pixel `--overdraw` times on average (a few to tens of pixels each), as in
trained scenes where more Gaussians means smaller ones.

    python scripts/bench_render.py            # full grid (a few minutes on 2 cores)
    python scripts/bench_render.py --quick    # small grid, seconds
    python scripts/bench_render.py --ns 100000 --resolutions 144 --channels 3 --sh-degree 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TARGET = dict(n=20_000, res=256, d=16, limit_s=0.3)
BYTES_PER_CANDIDATE_PAIR = 250  # pair selection / backward temporaries per pair in a chunk (measured ~230)
BYTES_PER_KEPT_PAIR = 24  # saved for backward (indices, alpha, T) and the CSR matrix
BYTES_PER_GAUSSIAN = 1400  # projection graph, SH, gradients (float32, one camera)


def make_scene(n: int, res: int, d: int, sh_degree: int | None, overdraw: float, seed: int = 0):
    """Random scene in front of one camera at the origin looking down +z (OpenCV), focal = res px."""
    import torch

    g = torch.Generator().manual_seed(seed)
    focal = float(res)
    z = torch.empty(n).uniform_(2.0, 4.0, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 1.1 * z[:, None] * (res / focal)
    means = torch.cat([xy, z[:, None]], dim=1)
    # E[sigma^2] of a log-uniform sigma on [s0/3, 3 s0] is s0^2 (9 - 1/9) / (2 ln 9)
    sigma0 = math.sqrt(overdraw * res * res / (n * 9 * math.pi * (9 - 1 / 9) / (2 * math.log(9))))
    sigma_px = sigma0 * torch.exp(torch.empty(n).uniform_(-math.log(3), math.log(3), generator=g))
    aniso = torch.exp(torch.empty(n, 3).uniform_(-math.log(2), math.log(2), generator=g))
    scales = (sigma_px * z / focal)[:, None] * aniso
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.empty(n).uniform_(0.1, 0.99, generator=g)
    if sh_degree is None:
        colors = torch.rand(n, d, generator=g)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.3
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[focal, 0.0, res / 2], [0.0, focal, res / 2], [0.0, 0.0, 1.0]]])
    return means, quats, scales, opacities, colors, viewmats, Ks


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (falls back to total physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_bytes(n: int, res: int, d: int, overdraw: float, with_frozen: bool) -> int:
    """Rough peak of one configuration: candidate pairs scale with overdraw x pixels."""
    candidates = 1.3 * overdraw * res * res
    chunk = min(candidates, 1 << 22)
    pairs_bytes = chunk * BYTES_PER_CANDIDATE_PAIR + candidates * BYTES_PER_KEPT_PAIR
    frozen = candidates * 24 if with_frozen else 0
    return int(n * (BYTES_PER_GAUSSIAN + 8 * d) + pairs_bytes + frozen)


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(fn, reps: int) -> tuple[float, float]:
    """(wall, process CPU) seconds of fn(), the minimum over reps runs after one warm-up run when
    reps > 1; the minimum is the figure least disturbed by other processes on the machine."""
    if reps > 1:
        fn()
    walls, cpus = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def worker(cfg: dict) -> dict:
    """Run one configuration in this process; returns timings and memory."""
    import torch

    from splatseg.render import blend_weights, composite, render

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = cfg["device"]
    scene = [t.to(device) for t in make_scene(cfg["n"], cfg["res"], cfg["d"], cfg["sh_degree"], cfg["overdraw"])]
    means, quats, scales, opacities, colors, viewmats, Ks = scene
    params = [t.requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    res, reps = cfg["res"], cfg["reps"]
    backend = "gsplat" if device == "cuda" else "torch"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    result = {}

    def forward():
        out = render(*params, viewmats, Ks, res, res, sh_degree=cfg["sh_degree"], backend=backend)
        sync()
        return out

    def forward_backward():
        out = forward()
        (out.colors.sum() + out.depths.sum()).backward()
        for p in params:
            p.grad = None
        sync()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = maxrss_bytes()
    result["fwd_s"], _ = timed(forward, reps)
    result["fwd_mb"] = (maxrss_bytes() - base) / 2**20
    result["fwdbwd_s"], result["fwdbwd_cpu_s"] = timed(forward_backward, reps)
    result["fwdbwd_mb"] = (maxrss_bytes() - base) / 2**20
    if device == "cuda":
        result["fwd_mb"] = result["fwdbwd_mb"] = torch.cuda.max_memory_allocated() / 2**20
    t0 = time.perf_counter()
    bw = blend_weights(means.detach(), quats.detach(), scales.detach(), opacities.detach(), viewmats[0], Ks[0], res, res)
    sync()
    result["bw_s"] = time.perf_counter() - t0
    result["pairs_per_px"] = bw.pixel.numel() / res**2
    if cfg["frozen"]:
        result["bw_mb"] = sum(t.numel() * t.element_size() for t in (bw.pixel, bw.gaussian, bw.weight)) / 2**20
        features = torch.randn(cfg["n"], 16, device=device, requires_grad=True)
        target = torch.randn(res, res, 16, device=device)

        def feature_step():
            loss = (composite(bw, features) * target).sum()
            loss.backward()
            features.grad = None
            sync()

        feature_step()  # builds and caches the CSR matrices, as the first training step does
        result["composite_s"], result["composite_cpu_s"] = timed(feature_step, max(reps, 5))
    return result


def run_config(cfg: dict, timeout: float) -> dict:
    """One configuration in a fresh subprocess (clean peak-memory accounting)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(cfg)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small grid: N in {10k, 20k}, resolutions {128, 256}")
    parser.add_argument("--ns", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="numbers of Gaussians")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256, 512], help="square image sizes in pixels")
    parser.add_argument("--channels", type=int, nargs="+", default=[3, 16], help="channel counts D of the full render")
    parser.add_argument("--sh-degree", type=int, default=None, help="render D=3 colours from SH of this degree")
    parser.add_argument("--overdraw", type=float, default=20.0, help="mean number of 3-sigma ellipses covering a pixel")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions after a warm-up (one cold run for the largest configurations)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    parser.add_argument("--no-target", action="store_true", help="skip the explicit target-configuration run")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    if args.quick:
        args.ns, args.resolutions = [10_000, 20_000], [128, 256]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    avail = available_bytes()
    threads = args.threads or torch.get_num_threads()
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {threads} threads on {os.cpu_count()} cores (load average {load:.1f}), {avail / 2**30:.1f} GiB available, overdraw {args.overdraw}")
    if load > 0.5 and threads > 1:
        print("note: other processes are using the cores; multi-threaded timings suffer badly from that (try --threads 1)")
    print("fwd / fwd+bwd: full differentiable render of one view; composite: frozen-geometry feature step (D=16, fwd+bwd)")
    print("times are minima over --reps runs (wall clock; 'cpu' = process CPU time); peak MB = RSS growth")
    header = (
        f"{'device':>6} {'N':>9} {'res':>5} {'D':>3} {'pairs/px':>8} {'fwd s':>7} {'fwd+bwd s':>9} {'(cpu s)':>8} "
        f"{'peak MB':>8} {'composite s':>11} {'(cpu s)':>8} {'bw MB':>7}"
    )
    print(header)
    print("-" * len(header))

    configs = [(n, r, d) for n in args.ns for r in args.resolutions for d in args.channels]
    results = {}
    for device in devices:
        for n, res, d in configs:
            sh = args.sh_degree if d == 3 else None
            frozen = d == args.channels[-1]
            est = estimate_bytes(n, res, d, args.overdraw, frozen)
            label = f"{device:>6} {n:>9} {res:>5} {d:>3}"
            if device == "cpu" and est > 0.8 * avail:
                print(f"{label} skipped: estimated {est / 2**30:.1f} GiB > 80% of {avail / 2**30:.1f} GiB available")
                continue
            expected_work = n / 2e5 + 1.3 * args.overdraw * res * res / 1e6  # ~ seconds per render on one core
            reps = 1 if expected_work > 4 and device == "cpu" else args.reps
            cfg = dict(n=n, res=res, d=d, sh_degree=sh, overdraw=args.overdraw, reps=reps, frozen=frozen, device=device, threads=args.threads)
            r = run_config(cfg, args.timeout)
            results[(device, n, res, d)] = r
            if "error" in r:
                print(f"{label} error: {r['error']}")
                continue
            print(
                f"{label} {r['pairs_per_px']:>8.1f} {r['fwd_s']:>7.3f} {r['fwdbwd_s']:>9.3f} {r['fwdbwd_cpu_s']:>8.3f} "
                f"{r['fwdbwd_mb']:>8.0f} {fmt(r.get('composite_s'), 11, 4)} {fmt(r.get('composite_cpu_s'), 8, 4)} "
                f"{fmt(r.get('bw_mb'), 7, 1)}",
                flush=True,
            )

    if not args.no_target:
        key = ("cpu", TARGET["n"], TARGET["res"], TARGET["d"])
        r = results.get(key)
        if r is None or "error" in r:
            cfg = dict(n=TARGET["n"], res=TARGET["res"], d=16, sh_degree=None, overdraw=args.overdraw, reps=3, frozen=True, device="cpu", threads=args.threads)
            r = run_config(cfg, args.timeout)
        if "error" in r:
            print(f"target configuration failed: {r['error']}")
        else:
            verdict = "meets" if r["composite_s"] < TARGET["limit_s"] else "MISSES"
            print(
                f"\nTARGET 20k Gaussians, 256x256, D=16 frozen-geometry feature step (composite fwd+bwd): "
                f"{r['composite_s'] * 1000:.1f} ms ({verdict} the {TARGET['limit_s']} s target); "
                f"blend_weights once: {r['bw_s']:.3f} s; full render fwd+bwd: {r['fwdbwd_s']:.3f} s"
            )


if __name__ == "__main__":
    main()
