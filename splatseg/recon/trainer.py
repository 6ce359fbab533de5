"""The reconstruction loop behind `splatseg recon`: `run_recon(cfg) -> OUT/splats.ply`.

One training view per step (a fresh random permutation of the training views per epoch, seeded,
so a resumed run sees the same order), loss (1 - l) * L1 + l * (1 - SSIM) against the image at
the training resolution, Adam on every parameter, densification after the optimiser step (as
gsplat's trainer does), the SH degree raised on schedule. Held-out views (every `test_every`-th)
are evaluated periodically and at the end.

Outputs in OUT (all written atomically):
    splats.ply   reference 3DGS layout, SH degree as trained (the active degree at the end)
    recon.json   config, steps, held-out PSNR (dB) / SSIM, PSNR on a sample of training views,
                 Gaussian count, wall-clock and process CPU seconds (summed over resumed runs),
                 and the periodic evaluations ("history")
    split.json   the train / test split by image name (`splatseg.data.split`), which `train` reads
    undistorted/ pinhole copies of the images when the cameras declare distortion (`--undistorted-dir`)
    config.yml   the resolved configuration (a valid --config file)
    ckpt.pt      checkpoint for `--resume` (see recon.checkpoint)
    point_cloud/iteration_<N>/point_cloud.ply, cameras.json, cfg_args: the reference trainer's
                 layout (recon.ecosystem), a PLY at every checkpoint
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from splatseg.data.split import SPLIT_NAME, write_split
from splatseg.io.ply import atomic_write, write_ply
from splatseg.presets import write_config_yml
from splatseg.recon.checkpoint import CHECKPOINT_NAME, fingerprint, load_checkpoint, save_checkpoint
from splatseg.recon.config import ReconConfig
from splatseg.recon.densify import Densifier, GsplatDefault, Params, num_gaussians
from splatseg.recon.ecosystem import write_iteration, write_layout
from splatseg.recon.init import colors_from_images, random_points, scene_extent, splats_from_points
from splatseg.recon.losses import photometric_loss, psnr, ssim
from splatseg.recon.model import (
    active_sh_degree,
    make_optimizers,
    params_from_splats,
    render_views,
    set_step_learning_rates,
    splats_from_params,
)
from splatseg.recon.views import ReconError, Views, border_color, load_views
from splatseg.types import Splats

PLY_NAME = "splats.ply"
REPORT_NAME = "recon.json"
TRAIN_EVAL_VIEWS = 8
"""Training views (evenly spaced) rendered at the end for `train_psnr`, the fit on seen views."""


# --- set-up ------------------------------------------------------------------------------------
def validate_config(cfg: ReconConfig) -> None:
    """One-line ReconError for values no run can use."""
    if not isinstance(cfg.data, (str, Path)) or str(cfg.data) == "":
        raise ReconError("recon needs a scene directory (--data SCENE)")
    if not isinstance(cfg.out, (str, Path)) or str(cfg.out) == "":
        raise ReconError("recon needs an output directory (--out DIR)")
    checks = [
        (cfg.steps >= 0, f"steps must be >= 0, got {cfg.steps}"),
        (0 <= cfg.sh_degree <= 3, f"sh_degree must be 0..3, got {cfg.sh_degree}"),
        (cfg.sh_degree_interval >= 1, f"sh_degree_interval must be >= 1, got {cfg.sh_degree_interval}"),
        (math.isfinite(cfg.downscale) and cfg.downscale > 0, f"downscale must be a positive number, got {cfg.downscale}"),
        (0.0 <= cfg.ssim_lambda <= 1.0, f"ssim_lambda must be in [0, 1], got {cfg.ssim_lambda}"),
        (cfg.test_every >= 0, f"test_every must be >= 0, got {cfg.test_every}"),
        (cfg.init_num_points > 0, f"init_num_points must be positive, got {cfg.init_num_points}"),
        (0.0 <= cfg.init_far_fraction < 1.0, f"init_far_fraction must be in [0, 1), got {cfg.init_far_fraction}"),
        (0.0 < cfg.init_min_views <= 1.0, f"init_min_views must be in (0, 1], got {cfg.init_min_views}"),
        (0.0 < cfg.init_opacity < 1.0, f"init_opacity must be in (0, 1), got {cfg.init_opacity}"),
        (cfg.max_gaussians >= 0, f"max_gaussians must be >= 0, got {cfg.max_gaussians}"),
        (cfg.refine_every >= 1, f"refine_every must be >= 1, got {cfg.refine_every}"),
        (0.0 < cfg.prune_opacity < 0.5, f"prune_opacity must be in (0, 0.5), got {cfg.prune_opacity}"),
        (cfg.ckpt_every >= 0 and cfg.eval_every >= 0, "ckpt_every and eval_every must be >= 0"),
        (cfg.means_lr > 0 and cfg.means_lr_final > 0, "means_lr and means_lr_final must be positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise ReconError(message)
    if cfg.strategy == "gsplat" and cfg.max_gaussians > 0:
        raise ReconError("gsplat's DefaultStrategy has no Gaussian cap: use --strategy own, or --max-gaussians 0")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ReconError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReconError("device cuda was asked for but no CUDA GPU is available (use --device cpu or --preset cpu)")
    return device


def initial_splats(cfg: ReconConfig, views: Views, rng: np.random.Generator) -> Splats:
    """Gaussians from the scene's sparse points or random points in the training views' volume
    (cfg.init), subsampled to cfg.max_gaussians when capped."""
    scene = views.scene
    train_cams = views.cameras.subset(views.train)
    has_points = scene.points is not None and len(scene.points) > 0
    if cfg.init == "points" and not has_points:
        raise ReconError(f"{cfg.data}: --init points but the scene has no sparse points (use --init random)")
    if cfg.init == "points" or (cfg.init == "auto" and has_points):
        points = np.asarray(scene.points, dtype=np.float64)
        if cfg.max_gaussians and len(points) > cfg.max_gaussians:
            keep = np.sort(rng.choice(len(points), cfg.max_gaussians, replace=False))
            points = points[keep]
            colors_u8 = None if scene.point_colors is None else scene.point_colors[keep]
        else:
            colors_u8 = scene.point_colors
        colors = colors_u8.astype(np.float32) / 255.0 if colors_u8 is not None else None
    else:
        num = min(cfg.init_num_points, cfg.max_gaussians) if cfg.max_gaussians else cfg.init_num_points
        try:
            points = random_points(train_cams, num, far_fraction=cfg.init_far_fraction, min_views=cfg.init_min_views, rng=rng)
        except ValueError as e:
            raise ReconError(f"{cfg.data}: {e}") from None
        colors = None
    if colors is None:
        colors = colors_from_images(points, train_cams, views.numpy_images(views.train))
    return splats_from_points(points, colors, sh_degree=cfg.sh_degree, opacity=cfg.init_opacity, scale_mult=cfg.init_scale)


def make_strategy(cfg: ReconConfig, extent: float, device: torch.device) -> Densifier | GsplatDefault:
    kind = cfg.strategy
    if kind == "auto":
        kind = "gsplat" if device.type == "cuda" and cfg.max_gaussians == 0 else "own"
    common = dict(
        refine_start=cfg.refine_start,
        refine_stop=cfg.refine_stop,
        refine_every=cfg.refine_every,
        reset_every=cfg.reset_every,
        grow_grad2d=cfg.grow_grad2d,
        grow_scale3d=cfg.grow_scale3d,
        prune_opacity=cfg.prune_opacity,
        prune_scale3d=cfg.prune_scale3d,
    )
    if kind == "gsplat":
        return GsplatDefault(extent, **common)
    return Densifier(extent, max_gaussians=cfg.max_gaussians, seed=cfg.seed, **common)


def view_for_step(train: list[int], step: int, seed: int) -> int:
    """Training view of `step`: a seeded permutation of the training views per epoch."""
    epoch, pos = divmod(step, len(train))
    perm = np.random.default_rng([seed, epoch]).permutation(len(train))
    return train[int(perm[pos])]


# --- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(params: Params, background: torch.Tensor, views: Views, indices: list[int], sh_degree: int) -> dict:
    """Mean PSNR (dB) and SSIM over the given views, rendered at the training resolution."""
    psnrs, ssims = [], []
    for i in indices:
        w, h = views.size(i)
        out = render_views(params, background, views.viewmats[i : i + 1], views.Ks[i : i + 1], w, h, sh_degree)
        img = out.colors[0].clamp(0.0, 1.0)
        psnrs.append(psnr(img, views.images[i]))
        ssims.append(float(ssim(img, views.images[i])) if min(w, h) >= 11 else float("nan"))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "views": len(indices)}


# --- the run -----------------------------------------------------------------------------------
class _Background:
    """The colour behind the splats: learned ([3] logit parameter with its own Adam), fixed, or
    "random": a fresh colour every training step (drawn from the seed and the step, so a resumed
    run draws the same ones), evaluated over the image borders' colour."""

    def __init__(self, mode: str, init_rgb: torch.Tensor, lr: float, seed: int = 0) -> None:
        self.mode = mode
        self.seed = int(seed)
        fixed = {"black": 0.0, "white": 1.0}
        rgb = init_rgb if mode in ("learned", "random") else torch.full_like(init_rgb, fixed[mode])
        self.logit = torch.nn.Parameter(torch.logit(rgb.clamp(1e-3, 1 - 1e-3)), requires_grad=mode == "learned")
        self.fixed = None if mode == "learned" else rgb
        self.optimizer = torch.optim.Adam([self.logit], lr=lr) if mode == "learned" else None

    def rgb(self) -> torch.Tensor:
        return torch.sigmoid(self.logit) if self.fixed is None else self.fixed

    def training_rgb(self, step: int) -> torch.Tensor:
        """The colour behind the splats at training step `step`."""
        if self.mode != "random":
            return self.rgb()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        return torch.rand(3, generator=gen).to(self.fixed.device, self.fixed.dtype)

    def step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


def _write_outputs(out: Path, cfg: ReconConfig, params: Params, bg: _Background, views: Views, step: int,
                   final: dict, history: list[dict], seconds: float, cpu_seconds: float, device: torch.device) -> Path:
    sh = active_sh_degree(cfg, max(step - 1, 0))
    ply = out / PLY_NAME
    write_ply(ply, splats_from_params(params, sh))
    write_split(out / SPLIT_NAME, views.cameras.names, views.train, views.test, cfg.test_every)
    report = {
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "steps": step,
        "num_gaussians": num_gaussians(params),
        "sh_degree": sh,
        "eval_split": "test" if views.test else "train",
        "psnr": final["psnr"],
        "ssim": final["ssim"],
        "eval_views": final["views"],
        "train_psnr": final["train_psnr"],
        "train_views": len(views.train),
        "test_views": [views.cameras.names[i] for i in views.test],
        "undistortion": views.undistortion,
        "image_size": list(views.size(views.train[0])),
        "background": [round(float(v), 6) for v in bg.rgb().detach().cpu()],
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "device": str(device),
        "history": history,
    }
    with atomic_write(out / REPORT_NAME) as f:
        f.write((json.dumps(report, indent=2) + "\n").encode())
    return ply


def run_recon(cfg: ReconConfig) -> Path:
    """Reconstruct `cfg.data` into `cfg.out` (see the module docstring); returns OUT/splats.ply.

    Raises ReconError (a ValueError; the loaders' SceneError / ImageError likewise) with a
    one-line message for bad input: no training views, a checkpoint that does not match, etc.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    validate_config(cfg)
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    data, out = Path(cfg.data), Path(cfg.out)
    views = load_views(data, cfg.downscale, cfg.test_every, device, cfg.undistorted_path, progress=cfg.progress)
    extent = scene_extent(views.cameras.subset(views.train))
    expected = fingerprint(views.cameras, views.train, views.test, cfg.sh_degree, cfg.background)
    ckpt_path = out / CHECKPOINT_NAME
    if out.exists() and not out.is_dir():
        raise ReconError(f"{out}: exists and is not a directory")

    bg = _Background(cfg.background, border_color([views.images[i] for i in views.train]), cfg.background_lr, cfg.seed)
    strategy = make_strategy(cfg, extent, device)
    if cfg.resume:
        ckpt = load_checkpoint(ckpt_path, expected, device)
        params = {k: torch.nn.Parameter(v.to(device)) for k, v in ckpt["params"].items()}
        optimizers = make_optimizers(params, cfg, extent)
        for name, state in ckpt["optimizers"].items():
            optimizers[name].load_state_dict(state)
        with torch.no_grad():
            bg.logit.copy_(ckpt["background"])
        if bg.optimizer is not None and ckpt.get("background_optimizer") is not None:
            bg.optimizer.load_state_dict(ckpt["background_optimizer"])
        if type(strategy).__name__ != ckpt.get("strategy_kind"):
            raise ReconError(f"{ckpt_path}: checkpoint used densification {ckpt.get('strategy_kind')}, this run {type(strategy).__name__} (same --strategy?)")
        strategy.load_state_dict(ckpt["strategy"])
        start, history = int(ckpt["step"]), list(ckpt["history"])
        seconds_before, cpu_before = float(ckpt["seconds"]), float(ckpt["cpu_seconds"])
    else:
        torch.manual_seed(cfg.seed)
        splats = initial_splats(cfg, views, np.random.default_rng(cfg.seed))
        params = params_from_splats(splats, device)
        optimizers = make_optimizers(params, cfg, extent)
        start, history, seconds_before, cpu_before = 0, [], 0.0, 0.0
    out.mkdir(parents=True, exist_ok=True)
    write_config_yml(out, cfg, "recon")

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def cpu_elapsed() -> float:
        return cpu_before + time.process_time() - cpu_started

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, {
            "step": step,
            "params": {k: v.detach() for k, v in params.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "background": bg.logit.detach(),
            "background_optimizer": None if bg.optimizer is None else bg.optimizer.state_dict(),
            "strategy_kind": type(strategy).__name__,
            "strategy": strategy.state_dict(),
            "history": history,
            "seconds": elapsed(),
            "cpu_seconds": cpu_elapsed(),
            "fingerprint": expected,
        })
        write_iteration(out, step, splats_from_params(params, active_sh_degree(cfg, max(step - 1, 0))))

    eval_set = views.test or views.train
    bar = tqdm(total=cfg.steps, initial=min(start, cfg.steps), desc="recon", disable=not cfg.progress, dynamic_ncols=True)
    step = start
    try:
        for step in range(start, cfg.steps):
            set_step_learning_rates(optimizers, cfg, extent, step)
            sh = active_sh_degree(cfg, step)
            i = view_for_step(views.train, step, cfg.seed)
            w, h = views.size(i)
            rendered = render_views(params, bg.training_rgb(step), views.viewmats[i : i + 1], views.Ks[i : i + 1], w, h, sh)
            densifying = step < cfg.refine_stop
            if densifying:
                strategy.pre_backward(rendered.meta)
            loss = photometric_loss(rendered.colors[0], views.images[i], cfg.ssim_lambda if min(w, h) >= 11 else 0.0)
            loss.backward()
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            bg.step()
            if densifying:
                strategy.post_backward(params, optimizers, step, rendered.meta, w, h)
            del rendered
            done = step + 1
            if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                metrics = evaluate(params, bg.rgb(), views, eval_set, active_sh_degree(cfg, step))
                history.append({"step": done, "num_gaussians": num_gaussians(params), "seconds": round(elapsed(), 2),
                                "cpu_seconds": round(cpu_elapsed(), 2), **metrics})
                line = (f"step {done}: {'held-out' if views.test else 'train'} PSNR {metrics['psnr']:.2f} dB, "
                        f"SSIM {metrics['ssim']:.4f}, {num_gaussians(params)} Gaussians, {elapsed() / 60:.1f} min")
                (bar.write if cfg.progress else print)(line)
            if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.steps:
                checkpoint(done)
            bar.set_postfix(loss=f"{loss.item():.4f}", n=num_gaussians(params), sh=sh, refresh=False)
            bar.update(1)
        step = max(start, cfg.steps)
    except KeyboardInterrupt:
        bar.close()
        checkpoint(step)
        raise
    bar.close()

    final_sh = active_sh_degree(cfg, max(step - 1, 0))
    final = evaluate(params, bg.rgb(), views, eval_set, final_sh)
    train_sample = views.train[:: max(1, len(views.train) // TRAIN_EVAL_VIEWS)][:TRAIN_EVAL_VIEWS]
    final["train_psnr"] = evaluate(params, bg.rgb(), views, train_sample, final_sh)["psnr"]
    if history and history[-1]["step"] == step:  # resumed with nothing left to do: re-evaluated
        history.pop()
    history.append({"step": step, "num_gaussians": num_gaussians(params), "seconds": round(elapsed(), 2),
                    "cpu_seconds": round(cpu_elapsed(), 2), **final})
    checkpoint(step)
    ply = _write_outputs(out, cfg, params, bg, views, step, final, history, elapsed(), cpu_elapsed(), device)
    # cfg_args' sh_degree must be the PLYs' degree: the INRIA loaders size their SH arrays from it.
    write_layout(data, out, final_sh, cfg.background == "white", bool(views.test))
    print(f"recon: {step} steps, {num_gaussians(params)} Gaussians, {'held-out' if views.test else 'train'} "
          f"PSNR {final['psnr']:.2f} dB SSIM {final['ssim']:.4f} ({len(eval_set)} views), {elapsed() / 60:.1f} min -> {ply}")
    return ply
