"""`splatseg imitate`: train the imitation field against SAM's encoder (geometry frozen).

Targets (teacher embeddings [C, g, g]):
- every training view's photo, encoded once and cached on disk (`teacher.cached_embedding`);
- augmented views: a camera between two neighbouring training poses (rotation slerped, centre and
  intrinsics interpolated linearly), the splats rendered there by splatseg's renderer at the
  camera's own size (the photos' size, so the teacher sees what a photo from there would give;
  `augment_max_side` renders larger), and the teacher run online on that rendered RGB; these go
  into a FIFO of `fifo_size` entries (oldest dropped first).
Each step takes `batch_size` views: on the steps scheduled for it, a share `new_fraction` of the
batch is new augmented views (added to the FIFO), the rest drawn uniformly from the cached targets
(photos and FIFO); the loss is the mean squared error between the rendered embedding
(`field.CellView.embedding`) and the target over `cells_per_view` random cells of the g x g grid,
padding included (the head is per cell, so sampled cells estimate the whole-grid loss unbiasedly).
New targets cost an encoder pass each, so `augment_targets` caps them and spreads them evenly over
the steps (SA-NeRF's schedule, a new quarter of every batch, is the uncapped case).
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp
from tqdm import tqdm

from splatseg.data import load_scene
from splatseg.imitation.config import ImitateConfig
from splatseg.imitation.decoder import PromptDecoder
from splatseg.imitation.field import IMITATION_FILE, CellView, ImitationModel, save_imitation
from splatseg.imitation.teacher import Teacher, TeacherSpec, cached_embedding, load_teacher
from splatseg.io.images import load_image
from splatseg.data.placement import splats_in_world
from splatseg.devices import resolve_device
from splatseg.render import render
from splatseg.run import RunError, file_sha256
from splatseg.types import Cameras, Splats

RANDOM_TEACHER_WARNING = (
    "WARNING: the teacher is SAM {model} with RANDOM weights (seed {seed}), not a trained SAM: its masks are "
    "meaningless for real use. This is the benchmark's teacher; pass --sam-checkpoint for real segmentation."
)


def read_run_info(run_dir: Path) -> dict:
    """run.json of a run directory (scene, splats, train/held-out views); RunError when missing.
    The decoder path needs no more of a run than this file, the splats and the scene (the splats'
    SHA-256 is compared where they are read)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise RunError(f"{run_dir} has no run.json: train a run first with `splatseg train`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is not valid JSON: {e}") from None


@dataclass
class Target:
    """One training sample: the camera's cell view and the teacher's embedding [1, C, g, g] (float16)."""

    view: CellView
    embedding: torch.Tensor
    name: str


def interpolate_camera(cams: Cameras, i: int, j: int, t: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(viewmat [4, 4], K [3, 3], W, H) between cameras i (t = 0) and j (t = 1): camera-to-world
    rotation slerped, centre lerped, intrinsics lerped after scaling j's to i's image size."""
    c2w = cams.camtoworlds[[i, j]]
    rot = Slerp([0.0, 1.0], Rotation.from_matrix(c2w[:, :3, :3]))(t).as_matrix()
    centre = (1 - t) * c2w[0, :3, 3] + t * c2w[1, :3, 3]
    W, H = int(cams.widths[i]), int(cams.heights[i])
    Kj = cams.Ks[j].copy()
    Kj[0] *= W / cams.widths[j]
    Kj[1] *= H / cams.heights[j]
    K = (1 - t) * cams.Ks[i] + t * Kj
    viewmat = np.eye(4)
    viewmat[:3, :3] = rot.T
    viewmat[:3, 3] = -rot.T @ centre
    return viewmat, K, W, H


def render_rgb(params: dict, sh_degree: int, viewmat: np.ndarray, K: np.ndarray, width: int, height: int, max_side: int) -> np.ndarray:
    """uint8 [h, w, 3] RGB of the splats for a camera, rendered with the long side `max_side`
    (0: at width x height)."""
    f = max_side / max(width, height) if max_side > 0 else 1.0
    w, h = max(1, round(width * f)), max(1, round(height * f))
    Ks = np.array(K, np.float64, copy=True)
    Ks[0] *= w / width
    Ks[1] *= h / height
    dev = params["means"].device
    with torch.no_grad():
        out = render(params["means"], params["quats"], params["scales"], params["opacities"], params["sh"],
                     torch.as_tensor(viewmat[None], dtype=torch.float32, device=dev),
                     torch.as_tensor(Ks[None], dtype=torch.float32, device=dev), w, h, sh_degree=sh_degree)
    return (out.colors[0].clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def new_target_schedule(steps: int, batch: int, new_fraction: float, budget: int) -> np.ndarray:
    """int [steps]: new augmented targets taken at each step (module doc)."""
    per_step = max(0, min(batch, int(round(batch * new_fraction)))) if new_fraction > 0 else 0
    total = min(max(0, budget), steps * per_step)
    if total == 0 or per_step == 0:
        return np.zeros(steps, np.int64)
    steps_with_new = int(np.ceil(total / per_step))
    at = np.unique(np.floor(np.linspace(0, steps, steps_with_new, endpoint=False)).astype(np.int64))
    out = np.zeros(steps, np.int64)
    out[at] = per_step
    out[at[-1]] -= out.sum() - total
    return out


def neighbours(cams: Cameras, idx: list[int], k: int = 3) -> dict[int, list[int]]:
    """For each camera index in `idx`, its k nearest cameras of `idx` by centre distance."""
    c = cams.centers[idx]
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1)[:, : max(1, min(k, len(idx) - 1))]
    return {idx[a]: [idx[b] for b in order[a]] for a in range(len(idx))}


def view_loss(model: ImitationModel, target: Target, cells: int, generator: torch.Generator) -> torch.Tensor:
    """Mean squared error of one view's rendered embedding against its target, over `cells` random
    grid cells (all cells when 0 or more than the grid has)."""
    g = model.grid_size
    if cells <= 0 or cells >= g * g:
        return torch.nn.functional.mse_loss(target.view.embedding(model), target.embedding.float())
    index = torch.randperm(g * g, generator=generator)[:cells].to(target.embedding.device)
    want = target.embedding[0].reshape(target.embedding.shape[1], -1).index_select(1, index).float()  # [C, k]
    return torch.nn.functional.mse_loss(target.view.embedding(model, index), want)


def check_config(cfg: ImitateConfig) -> None:
    if cfg.feature_dim < 1 or cfg.hidden < 1 or cfg.supersample < 1:
        raise ValueError("--feature-dim, --hidden and --supersample must be positive")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError("--steps and --batch-size must be positive")
    if not 0.0 <= cfg.new_fraction <= 1.0:
        raise ValueError(f"--new-fraction must lie in [0, 1], got {cfg.new_fraction}")
    if cfg.fifo_size < 1 or cfg.augment_targets < 0 or cfg.teacher_views < 0 or cfg.cells_per_view < 0:
        raise ValueError("--fifo-size must be positive, --augment-targets and --teacher-views non-negative")


def imitate(cfg: ImitateConfig, teacher: Teacher | None = None) -> dict:
    """Trains and writes RUN/imitation.npz; returns a summary dict. `teacher` may be given ready
    (tests pass a tiny random SAM); otherwise it is built from the config."""
    t0 = time.time()
    check_config(cfg)
    run_dir = Path(cfg.run)
    info = read_run_info(run_dir)
    device = resolve_device(cfg.device)
    splats_path = Path(info["splats"])
    if not splats_path.is_file():
        raise FileNotFoundError(f"the run's splats file {splats_path} is missing")
    if info.get("splats_sha256") and file_sha256(splats_path) != info["splats_sha256"]:
        raise RunError(f"{splats_path} changed since {run_dir} was trained (SHA-256 differs)")
    splats: Splats = splats_in_world(splats_path, info.get("splats_transform"))  # the cameras' frame
    cams = load_scene(info["scene"]).cameras
    train_idx = [cams.index_of(n) for n in info.get("train_views") or cams.names]
    if cfg.teacher_views and cfg.teacher_views < len(train_idx):
        pick = np.unique(np.round(np.linspace(0, len(train_idx) - 1, cfg.teacher_views)).astype(int))
        train_idx = [train_idx[p] for p in pick]
    if teacher is None:
        spec = TeacherSpec(cfg.sam_model, cfg.sam_checkpoint, cfg.sam_random_init)
        if spec.random_init is not None:
            print(RANDOM_TEACHER_WARNING.format(model=spec.model_type, seed=spec.random_init), file=sys.stderr, flush=True)
        teacher = load_teacher(spec, str(device))
    else:
        teacher.model.to(device)
    decoder = PromptDecoder.from_sam(teacher.model)
    params = {k: v.to(device) for k, v in splats.torch_params().items()}
    gen = torch.Generator().manual_seed(cfg.seed)
    g = teacher.grid(1, 1).grid
    model = ImitationModel(len(splats), cfg.feature_dim, teacher.channels, cfg.hidden, teacher.grid(1, 1).img_size, g,
                           cfg.supersample, gen).to(device)
    cache = Path(cfg.teacher_cache) if cfg.teacher_cache is not None else run_dir / "teacher_cache"

    t_teacher = time.time()
    photos: list[Target] = []
    encoded = 0
    for i in tqdm(train_idx, desc="teacher (photos)", disable=not cfg.progress):
        W, H = int(cams.widths[i]), int(cams.heights[i])
        rgb = load_image(cams.image_paths[i], size=(W, H))
        emb, fresh = cached_embedding(cache, cams.names[i], rgb, teacher)
        encoded += int(fresh)
        view = CellView.build(model, params, cams.viewmats[i], cams.Ks[i], W, H)
        photos.append(Target(view, torch.from_numpy(emb)[None].to(device, torch.float16), cams.names[i]))
    teacher_seconds = time.time() - t_teacher

    rng = np.random.default_rng(cfg.seed)
    near = neighbours(cams, train_idx)
    fifo: deque[Target] = deque(maxlen=cfg.fifo_size)
    schedule = new_target_schedule(cfg.steps, cfg.batch_size, cfg.new_fraction, cfg.augment_targets)
    optim = torch.optim.Adam([
        {"params": [model.features, model.background, model.pad], "lr": cfg.lr},
        {"params": model.head.parameters(), "lr": cfg.head_lr},
    ])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, cfg.steps, eta_min=0.1 * cfg.lr)
    augment_seconds = 0.0
    loss_ema = None
    t_opt = time.time()
    bar = tqdm(range(cfg.steps), desc="imitate", disable=not cfg.progress)
    for step in bar:
        batch: list[Target] = []
        for _ in range(int(schedule[step])):
            ta = time.time()
            i = train_idx[int(rng.integers(len(train_idx)))]
            j = near[i][int(rng.integers(len(near[i])))] if len(train_idx) > 1 else i
            vm, K, W, H = interpolate_camera(cams, i, j, float(rng.uniform(0.0, 1.0)))
            rgb = render_rgb(params, splats.sh_degree, vm, K, W, H, cfg.augment_max_side)
            emb = teacher.encode(rgb)
            fifo.append(Target(CellView.build(model, params, vm, K, W, H), torch.from_numpy(emb)[None].to(device, torch.float16), f"aug{step}"))
            batch.append(fifo[-1])
            augment_seconds += time.time() - ta
        pool = len(photos) + len(fifo)
        while len(batch) < cfg.batch_size:
            k = int(rng.integers(pool))
            batch.append(photos[k] if k < len(photos) else fifo[k - len(photos)])
        loss = sum(view_loss(model, t, cfg.cells_per_view, gen) for t in batch) / len(batch)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        if step % 20 == 0:
            bar.set_postfix(mse=f"{loss_ema:.4f}", fifo=len(fifo))
    optimise_seconds = time.time() - t_opt - augment_seconds

    summary = {
        "teacher": teacher.name,
        "random_teacher": "/random-init-" in teacher.name,
        "final_mse": round(float(loss_ema), 5),
        "teacher_views": len(photos),
        "photos_encoded_now": encoded,
        "augmented_targets": int(schedule.sum()),
        "teacher_seconds": round(teacher_seconds, 1),
        "augment_seconds": round(augment_seconds, 1),
        "optimise_seconds": round(optimise_seconds, 1),
        "seconds": round(time.time() - t0, 1),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    meta = {
        "teacher": teacher.name,
        "sam_model": cfg.sam_model,
        "splats": str(splats_path.resolve()),
        "splats_sha256": info.get("splats_sha256"),
        "train_views": [cams.names[i] for i in train_idx],
        "heldout_views": info.get("heldout_views", []),
        "config": cfg.as_json(),
        "summary": summary,
    }
    model.cpu()
    save_imitation(run_dir / IMITATION_FILE, model, decoder, meta)
    summary["out"] = str(run_dir / IMITATION_FILE)
    return summary
