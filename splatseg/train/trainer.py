"""The training loop: frozen geometry, per-Gaussian features [N, D] and K queries, MaskField-style.

Per step, one view: the feature map F [HW, D] is composited from the cached blend weights on CPU
or rasterised by gsplat on CUDA (`view_renderers.py`), mask logits [K, HW] = q_k . F + b_k, Hungarian matching against all of
the view's segments (every level), focal + Dice (+ CLIP cosine) on matched pairs, unmatched masks
pushed to zero. After training the queries' masks are lifted onto the Gaussians (`lifting.py`)
and everything `segment` / `view` need is written to the run directory (`splatseg.run`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from splatseg.data import Scene, load_scene
from splatseg.io.ply import read_ply
from splatseg.run import RUN_VERSION, RunError, atomic_write_bytes, file_sha256, save_npz, write_json
from splatseg.segments.cache import read_segments, segments_dir
from splatseg.train.config import TrainConfig, holdout_split
from splatseg.train.lifting import lift_queries
from splatseg.train.losses import dice_loss, focal_loss, focal_loss_to_zero, pairwise_cosine_cost, pairwise_dice_cost, pairwise_focal_cost
from splatseg.train.matching import hungarian
from splatseg.train.segments_stage import ensure_segments
from splatseg.train.view_renderers import ViewRenderer, make_view_renderer
from splatseg.types import Cameras, Splats


@dataclass
class TrainView:
    """One training view at training resolution: blend weights and target masks [M, HW]."""

    name: str
    renderer: ViewRenderer
    masks: torch.Tensor  # [M, HW] float32 in {0, 1}
    embeddings: torch.Tensor | None  # [M, E] or None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(name)


def training_cameras(cameras: Cameras, max_side: int) -> Cameras:
    """Cameras downscaled so the longest image side is at most `max_side` pixels."""
    factor = max(1.0, float(max(cameras.widths.max(), cameras.heights.max())) / max_side)
    return cameras.downscaled(factor)


def view_renderer(kind: str, params: dict, cameras: Cameras, i: int) -> ViewRenderer:
    device = params["means"].device
    return make_view_renderer(kind, params, torch.from_numpy(cameras.viewmats[i]).float().to(device),
                              torch.from_numpy(cameras.Ks[i]).float().to(device), int(cameras.widths[i]), int(cameras.heights[i]))


def load_view(params: dict, cameras: Cameras, i: int, seg_dir: Path, min_pixels: int, kind: str = "auto") -> TrainView:
    """Blend weights and the segment masks of view i (all levels), resized to training resolution."""
    w, h = int(cameras.widths[i]), int(cameras.heights[i])
    seg = read_segments(seg_dir / f"{cameras.names[i]}.npz", size=(w, h))
    flat = seg.segmaps.reshape(seg.segmaps.shape[0], -1)
    ids, counts = np.unique(flat[flat >= 0], return_counts=True)
    ids = ids[counts >= min_pixels]
    masks = np.zeros((len(ids), h * w), np.float32)
    for j, m in enumerate(ids):
        masks[j] = (flat == m).any(axis=0)
    emb = None
    if seg.embeddings is not None and len(ids):
        emb = torch.from_numpy(seg.embeddings[ids].astype(np.float32))
    device = params["means"].device
    return TrainView(cameras.names[i], view_renderer(kind, params, cameras, i), torch.from_numpy(masks).to(device),
                     None if emb is None else emb.to(device))


class FeatureField(torch.nn.Module):
    """Learnable features [N, D], queries [K, D], biases [K] and optional CLIP vectors [K, E]."""

    def __init__(self, n: int, d: int, k: int, clip_dim: int | None, generator: torch.Generator):
        super().__init__()
        self.features = torch.nn.Parameter(torch.randn(n, d, generator=generator) * 0.5)
        self.queries = torch.nn.Parameter(torch.randn(k, d, generator=generator) / math.sqrt(d))
        self.query_bias = torch.nn.Parameter(torch.full((k,), -2.0))
        self.query_clip = torch.nn.Parameter(torch.randn(k, clip_dim, generator=generator) * 0.01) if clip_dim else None

    def logits(self, feature_map: torch.Tensor) -> torch.Tensor:
        """[HW, D] rendered features -> [K, HW] mask logits."""
        return self.queries @ feature_map.T + self.query_bias[:, None]


def step_loss(model: FeatureField, view: TrainView, cfg: TrainConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Matched focal + Dice (+ CLIP) loss of one view on a random sample of its pixels
    (Mask2Former-style point sampling); unmatched queries pushed to zero."""
    fmap = view.renderer.features(model.features)
    targets = view.masks
    if 0 < cfg.pixels_per_step < fmap.shape[0]:
        sample = torch.randperm(fmap.shape[0], generator=generator)[: cfg.pixels_per_step].to(fmap.device)
        fmap, targets = fmap[sample], targets[:, sample]
    logits = model.logits(fmap)  # [K, P]
    k = logits.shape[0]
    matched = torch.zeros(k, dtype=torch.bool, device=logits.device)
    loss = logits.new_zeros(())
    if targets.shape[0] > 0:
        with torch.no_grad():
            cost = cfg.focal_weight * pairwise_focal_cost(logits, targets) + cfg.dice_weight * pairwise_dice_cost(logits, targets)
            if model.query_clip is not None and view.embeddings is not None:
                cost = cost + cfg.clip_weight * pairwise_cosine_cost(model.query_clip, view.embeddings)
        qi, mi = hungarian(cost)
        qi_t, mi_t = torch.from_numpy(qi).to(logits.device), torch.from_numpy(mi).to(logits.device)
        matched[qi_t] = True
        loss = cfg.focal_weight * focal_loss(logits[qi_t], targets[mi_t]) * len(qi) / k
        loss = loss + cfg.dice_weight * dice_loss(logits[qi_t], targets[mi_t])
        if model.query_clip is not None and view.embeddings is not None:
            cos = torch.nn.functional.cosine_similarity(model.query_clip[qi_t], view.embeddings[mi_t], dim=-1)
            loss = loss + cfg.clip_weight * (1 - cos).mean()
    rest = logits[~matched]
    if rest.shape[0] > 0:
        loss = loss + cfg.focal_weight * focal_loss_to_zero(rest) * rest.shape[0] / k
    return loss


def _run_identity(cfg: TrainConfig, splats_sha: str, n: int, names: list[str]) -> dict:
    return {"splats_sha256": splats_sha, "num_gaussians": n, "feature_dim": cfg.feature_dim,
            "num_queries": cfg.num_queries, "views": names}


def _check_resume(ckpt: dict, identity: dict, out: Path) -> None:
    for key, value in identity.items():
        if ckpt["identity"].get(key) != value:
            raise RunError(f"{out} holds a run with a different {key}; choose another --out or delete it")


def make_virtual_views(cfg: TrainConfig) -> tuple[Splats, Path, dict]:
    """PLY-only runs: (splats, RUN/views, run.json keys) after making or reusing the virtual views;
    prints the one-line note that no photos were given."""
    from splatseg.data.virtual_views import ensure_virtual_scene
    from splatseg.io.splat_input import load_splats

    if not Path(cfg.splats_path).is_file():
        raise FileNotFoundError(f"splats file {cfg.splats_path} not found")
    splats = load_splats(cfg.splats_path)
    if len(splats) == 0:
        raise ValueError(f"{cfg.splats_path} has no Gaussians")
    views_dir = Path(cfg.out) / "views"
    identity = {"splats_sha256": file_sha256(cfg.splats_path)}
    report, reused = ensure_virtual_scene(splats, views_dir, cfg.virtual, identity, progress=cfg.progress,
                                          extra_info={"splats": str(Path(cfg.splats_path).resolve())})
    how = "reusing" if reused else "made"
    print(f"no photos given: {how} {report['views']} virtual views ({report['kind']}, {report['width']}x{report['height']}, "
          f"coverage {report['coverage']:.3f}) of {cfg.splats_path} in {views_dir}", flush=True)
    return splats, views_dir, {"ply_only": True, "virtual_views": report}


def train(cfg: TrainConfig) -> Path:
    """Runs segments (if missing) -> training -> lifting; writes and returns the run directory.
    Without `cfg.data`, virtual views of the splats are made first (`RUN/views/`, see
    `splatseg.data.virtual_views`) and training reads them as its scene."""
    t0 = time.time()
    device = resolve_device(cfg.device)
    splats = None
    if cfg.ply_only:
        splats, scene_dir, ply_only_info = make_virtual_views(cfg)
    else:
        scene_dir, ply_only_info = Path(cfg.data), {"ply_only": False}
    scene: Scene = load_scene(scene_dir)
    splats_path = cfg.splats_path
    if not Path(splats_path).is_file():
        raise FileNotFoundError(f"splats file {splats_path} not found (pass --splats, or run `splatseg recon` first)")
    if splats is None:
        splats = read_ply(splats_path)
    n = len(splats)
    if n == 0:
        raise ValueError(f"{splats_path} has no Gaussians")
    seg_dir = Path(cfg.segments) if cfg.segments is not None else segments_dir(scene.root)
    seg_info = ensure_segments(scene, splats, cfg, seg_dir)
    segments_seconds = time.time() - t0

    train_idx, held_idx = holdout_split(len(scene.cameras), cfg.holdout_every)
    if not train_idx:
        raise ValueError("no training views left after --holdout-every")
    cams = training_cameras(scene.cameras, cfg.train_max_side)
    params = {k: v.to(device) for k, v in splats.torch_params().items()}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = _run_identity(cfg, file_sha256(splats_path), n, [cams.names[i] for i in train_idx])

    views = [load_view(params, cams, i, seg_dir, cfg.min_segment_pixels, cfg.feature_renderer)
             for i in tqdm(train_idx, desc="views", disable=not cfg.progress)]
    clip_dim = next((v.embeddings.shape[1] for v in views if v.embeddings is not None), None)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = FeatureField(n, cfg.feature_dim, cfg.num_queries, clip_dim, gen).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gamma = cfg.lr_final_ratio ** (1.0 / max(cfg.iterations, 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma)
    start = 0
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        _check_resume(ckpt, identity, out)
        model.load_state_dict({k: v.to(device) for k, v in ckpt["model"].items()})
        optim.load_state_dict(ckpt["optim"])
        sched.load_state_dict(ckpt["sched"])
        start = int(ckpt["step"])

    def save_ckpt(step: int) -> None:
        state = {"identity": identity, "model": model.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(), "step": step}
        atomic_write_bytes(ckpt_path, lambda f: torch.save(state, f))

    order = np.random.default_rng(cfg.seed).integers(0, len(views), size=cfg.iterations)
    loss_ema = None
    t_opt = time.time()
    bar = tqdm(range(start, cfg.iterations), desc="train", disable=not cfg.progress, initial=start, total=cfg.iterations)
    for step in bar:
        loss = step_loss(model, views[order[step]], cfg, gen)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_ema:.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.iterations:
            save_ckpt(step + 1)
    save_ckpt(cfg.iterations)
    train_seconds = time.time() - t_opt

    features = model.features.detach()
    with torch.no_grad():
        lifted, visibility = lift_queries(model, views, n, splats.means, cfg.fill_unseen_neighbours, progress=cfg.progress)
        maps = []
        for i in tqdm(range(len(cams)), desc="feature maps", disable=not cfg.progress, leave=False):
            renderer = views[train_idx.index(i)].renderer if i in train_idx else view_renderer(cfg.feature_renderer, params, cams, i)
            fmap = renderer.features(features).reshape(renderer.height, renderer.width, -1)
            maps.append(fmap.cpu().numpy().astype(np.float16))
    query_size = lifted.astype(np.float32).sum(axis=1) / 255.0
    arrays = {
        "features": features.cpu().numpy().astype(np.float32),
        "queries": model.queries.detach().cpu().numpy(),
        "query_bias": model.query_bias.detach().cpu().numpy(),
        "lifted": lifted,
        "query_size": query_size,
        "visibility": visibility,
    }
    if model.query_clip is not None:
        arrays["query_clip"] = model.query_clip.detach().cpu().numpy()
    save_npz(out / "field.npz", **arrays)
    save_npz(out / "views.npz", names=np.array(scene.cameras.names), maps=np.stack(maps),
             image_sizes=np.stack([scene.cameras.widths, scene.cameras.heights], 1))
    info = {
        "version": RUN_VERSION,
        "scene": str(Path(scene.root).resolve()),
        "splats": str(Path(splats_path).resolve()),
        **identity,
        "train_views": [cams.names[i] for i in train_idx],
        "heldout_views": [cams.names[i] for i in held_idx],
        "train_resolution": [int(cams.widths[0]), int(cams.heights[0])],
        "segments_model": seg_info["model"],
        "clip_model": seg_info["embedding_model"],
        "clip_has_weights": seg_info["clip_has_weights"] and model.query_clip is not None,
        "clip_model_name": cfg.clip_model if model.query_clip is not None else None,
        "clip_pretrained": cfg.clip_pretrained if model.query_clip is not None else None,
        "final_loss": loss_ema,
        "seconds": round(time.time() - t0, 2),
        "segments_seconds": round(segments_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "config": cfg.as_json(),
        **ply_only_info,
    }
    write_json(out / "run.json", info)
    return out
