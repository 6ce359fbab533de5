"""The training loop: frozen geometry, per-Gaussian features [N, D] and K queries, MaskField-style.

Per step, one view: the feature map F [HW, D] is composited from the cached blend weights on CPU
or rasterised by gsplat on CUDA (`view_renderers.py`), mask logits [K, HW] = q_k . F + b_k, Hungarian matching against all of
the view's segments (every level), focal + Dice (+ CLIP cosine) on matched pairs, unmatched masks
pushed to zero. After training the queries' masks are lifted onto the Gaussians (`lifting.py`)
and everything `segment` / `view` need is written to the run directory (`splatseg.run`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from splatseg.data import Scene, load_scene
from splatseg.data.placement import place_splats
from splatseg.data.sources import SplatSource, resolve_splats
from splatseg.data.split import split_for_training
from splatseg.data.undistort import CACHE_NAME, undistort_scene
from splatseg.devices import resolve_device
from splatseg.io.checkpoint import save_state
from splatseg.presets import write_config_yml
from splatseg.run import (CKPT_NAME, RunError, claim_run_dir, file_sha256, refuse_training_over_inputs, splats_record, verify_splats,
                          write_run)
from splatseg.segments.cache import read_segments, segments_dir
from splatseg.train.config import TrainConfig
from splatseg.train.distributed import Dist, distributed, rank_device
from splatseg.train.lifting import evidence_scores, fill_unseen, lift_evidence, quantise
from splatseg.train.losses import dice_loss, focal_loss, focal_loss_to_zero, pairwise_cosine_cost, pairwise_dice_cost, pairwise_focal_cost
from splatseg.train.matching import hungarian
from splatseg.train.refine import RefineConfig, containment, footprint_areas, refine_scores, surface_graph
from splatseg.train.segments_stage import ensure_segments
from splatseg.train.validation import validate_train_config
from splatseg.train.view_renderers import ViewRenderer, make_view_renderer
from splatseg.types import Cameras, Splats


@dataclass
class TrainView:
    """One training view at training resolution: blend weights and target masks [M, HW] (uint8 0/1,
    a quarter of float32's memory: every training view's masks stay in memory; the loss takes floats
    of the sampled pixels only)."""

    name: str
    renderer: ViewRenderer
    masks: torch.Tensor  # [M, HW] uint8 in {0, 1}
    embeddings: torch.Tensor | None  # [M, E] or None


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
    masks = np.zeros((len(ids), h * w), np.uint8)
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
    targets = targets.float()
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


def resolve_inputs(cfg: TrainConfig) -> tuple[SplatSource, Path | None]:
    """(the splats --splats leads to, the scene directory): --data when given, else the scene a
    trainer's output folder names when it is on this machine (said in one line), else None (no
    photos: the run is made from the splats alone); ValueError for a folder naming a scene that
    is not here."""
    given = cfg.splats_path
    if not Path(given).exists():
        raise FileNotFoundError(f"splats file {given} not found (pass --splats, or run `splatseg recon` first)")
    source = resolve_splats(given)
    for note in source.notes:
        print(f"splats: {note}")
    if cfg.data is not None:
        return source, Path(cfg.data)
    if source.scene is not None and source.scene_exists:
        print(f"train: no --data given; using the scene {source.scene} named by the {source.kind} output {given}")
        return source, source.scene
    if source.scene is not None:  # the user expects its photos: say where they are missing, do not guess
        raise ValueError(f"train: {given} names the scene {source.scene}, which is not on this machine; pass --data SCENE "
                         f"(or --splats {source.splats_file} to make the run from the splat file alone)")
    return source, None


def make_virtual_views(cfg: TrainConfig, splats_file: Path) -> tuple[Splats, Path, dict]:
    """PLY-only runs: (splats, RUN/views, run.json keys) after making or reusing the virtual views
    of `splats_file` (the file --splats leads to); prints the one-line note that no photos were given."""
    from splatseg.data.virtual_views import SIDE_PER_TRAIN_SIDE, ensure_virtual_scene
    from splatseg.io.formats import read_splats

    splats = read_splats(splats_file)
    if len(splats) == 0:
        raise ValueError(f"{splats_file} has no Gaussians")
    views_dir = Path(cfg.out) / "views"
    identity = {"splats_sha256": file_sha256(splats_file)}
    virtual = cfg.virtual
    if not virtual.side_limit:  # views finer than the training resolution are downsampled before use
        virtual = replace(virtual, side_limit=int(round(SIDE_PER_TRAIN_SIDE * cfg.train_max_side)))
    report, reused = ensure_virtual_scene(splats, views_dir, virtual, identity, progress=cfg.progress,
                                          extra_info={"splats": str(Path(splats_file).resolve())})
    how = "reusing" if reused else "made"
    print(f"no photos given: {how} {report['views']} virtual views ({report['kind']}, {report['width']}x{report['height']}, "
          f"coverage {report['coverage']:.3f}) of {splats_file} in {views_dir}", flush=True)
    return splats, views_dir, {"ply_only": True, "virtual_views": report}


def lifted_scores(evidence, splats: Splats, cfg: TrainConfig) -> np.ndarray:
    """lifted [K, N] uint8 from the lifting evidence: blend evidence and X-ray votes combined
    (`lifting.evidence_scores`), unseen Gaussians filled from their neighbours, then propagated
    along surfaces (`refine.refine_scores`, unless --surface-smoothing 0)."""
    scores, support = evidence_scores(evidence, cfg.xray_weight)
    scores = fill_unseen(scores, support, splats.means, cfg.fill_unseen_neighbours)
    if cfg.surface_smoothing > 0:
        refine = RefineConfig(smoothing=cfg.surface_smoothing)
        scores = refine_scores(scores, support, surface_graph(splats, refine), refine)
    return quantise(scores)


@contextlib.contextmanager
def main_first(dist: Dist):
    """The body runs on rank 0 first, then on the other ranks (which then reuse what it wrote)."""
    if not dist.is_main:
        dist.barrier()
    yield
    if dist.is_main:
        dist.barrier()


def train(cfg: TrainConfig) -> Path:
    """Runs segments (if missing) -> training -> lifting; writes and returns the run directory.

    Under torchrun (WORLD_SIZE > 1) the ranks share the work (`splatseg.train.distributed`):
    segments and training views sharded, gradients and lifting sums all-reduced, and only rank 0
    writes the run. Every rank returns the run directory.

    The run is written as one unit (`splatseg.run.write_run`); `--out` is claimed first
    (`claim_run_dir`): a matching checkpoint is resumed, another run's files are refused.
    Without a scene (no --data, and --splats names no scene on this machine), virtual views of the
    splats are made first (`RUN/views/`, see `splatseg.data.virtual_views`) and training reads
    them as its scene."""
    validate_train_config(cfg)
    device = rank_device(resolve_device(cfg.device))
    with distributed(device) as dist:
        return _train(cfg, device, dist)


def _train(cfg: TrainConfig, device: torch.device, dist: Dist) -> Path:
    t0 = time.time()
    if not dist.is_main:  # one progress display, from rank 0
        cfg = replace(cfg, progress=False)
    source, data = resolve_inputs(cfg)
    ply_only = data is None
    if ply_only and cfg.splats_transform is not None:
        raise ValueError("--splats-transform moves splats onto a scene's cameras; without --data there are none (leave it out)")
    if ply_only:
        with main_first(dist):
            _, data, ply_only_info = make_virtual_views(cfg, source.splats_file)
    else:
        ply_only_info = {"ply_only": False}
    scene: Scene = load_scene(data)
    splats_path = source.splats_file
    splats_rec = splats_record(splats_path)
    train_idx, held_idx, split_source = split_for_training(scene.cameras.names, cfg.holdout_every, splats_path)
    if not train_idx:
        raise ValueError(f"no training views left after holding out {len(held_idx)} ({split_source}); use --test-every 0 or add views")
    if held_idx:
        print(f"split: {len(held_idx)} of {len(scene.cameras)} views held out ({split_source})")
    out = Path(cfg.out)
    seg_dir = Path(cfg.segments) if cfg.segments is not None else segments_dir(scene.root)
    refuse_training_over_inputs(out, splats_path, scene.cameras.image_paths, [seg_dir / f"{m}.npz" for m in scene.cameras.names])
    undistorted = Path(cfg.undistorted_dir) if cfg.undistorted_dir is not None else out / CACHE_NAME
    with main_first(dist):
        scene, undistortion = undistort_scene(scene, undistorted, progress=cfg.progress)  # pinhole from here on
    if ply_only:  # the views were made from the file's own frame: nothing to move or check
        placed = place_splats(splats_path, scene, None, check=False, views=train_idx)
    else:
        placed = place_splats(splats_path, scene, cfg.splats_transform, check=not cfg.skip_alignment_check, views=train_idx,
                              folder_frame=source.world_from_splats, folder_kind=source.kind)
    splats: Splats = placed.splats
    n = len(splats)
    if n == 0:
        raise ValueError(f"{splats_path} has no Gaussians")
    identity = _run_identity(cfg, splats_rec["splats_sha256"], n, [scene.cameras.names[i] for i in train_idx])
    identity["splats_transform"] = None if placed.transform is None else placed.transform["world_from_splats"]
    resume = claim_run_dir(out, identity, cfg.as_json(), cfg.overwrite)  # before the slow segments: fail fast
    clipseg = None
    if cfg.clipseg is not None:  # loaded before the slow stages: missing weights fail in one line at once
        from splatseg.semantics.clipseg import ClipSeg

        clipseg = ClipSeg.load(cfg.clipseg, device=str(device))
    if dist.active and cfg.ray is None:  # each rank computes its share of the missing files, then all read them
        ensure_segments(scene, splats, cfg, seg_dir, views=dist.shard(list(range(len(scene.cameras)))))
        dist.barrier()
    elif dist.active:  # rank 0 alone submits the Ray tasks
        with main_first(dist):
            if dist.is_main:
                ensure_segments(scene, splats, cfg, seg_dir)
    seg_info = ensure_segments(scene, splats, cfg, seg_dir)
    segments_seconds = time.time() - t0

    cams = training_cameras(scene.cameras, cfg.train_max_side)
    params = {k: v.to(device) for k, v in splats.torch_params().items()}

    local_idx = dist.shard(train_idx)  # this rank's training views (all of them for one process)
    views = [load_view(params, cams, i, seg_dir, cfg.min_segment_pixels, cfg.feature_renderer)
             for i in tqdm(local_idx, desc="views", disable=not cfg.progress)]
    clip_dim = next((v.embeddings.shape[1] for v in views if v.embeddings is not None), None)
    if dist.active:  # a rank whose views happen to lack embeddings still builds the same model
        clip_dim = int(dist.all_reduce_max(torch.tensor(clip_dim or 0, device=device)).item()) or None
    gen = torch.Generator().manual_seed(cfg.seed)
    model = FeatureField(n, cfg.feature_dim, cfg.num_queries, clip_dim, gen).to(device)
    if not dist.is_main:  # same initial field on every rank, its own pixel samples
        gen.manual_seed(cfg.seed + 1_000_003 * dist.rank)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gamma = cfg.lr_final_ratio ** (1.0 / max(cfg.iterations, 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma)
    start, loss_ema = 0, None
    ckpt_path = out / CKPT_NAME
    if resume is not None:
        try:
            model.load_state_dict({k: v.to(device) for k, v in resume["model"].items()})
            optim.load_state_dict(resume["optim"])
            sched.load_state_dict(resume["sched"])
            if "generator" in resume:  # pixel sampling continues exactly where it stopped
                gen.set_state(resume["generator"])
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
            raise RunError(f"{ckpt_path} does not fit this run ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                           "pass --overwrite to start over") from None
        start, loss_ema = int(resume["step"]), resume.get("loss_ema")
        if not dist.is_main:  # the checkpoint holds rank 0's sampler
            gen.manual_seed(cfg.seed + 1_000_003 * dist.rank + start)
    if dist.active:  # a rank that found another checkpoint (or none) would step out of line: refuse
        steps = torch.tensor([start, -start], device=device)
        dist.all_reduce_max(steps)
        if int(steps[0]) != -int(steps[1]):
            raise RunError(f"the ranks found different checkpoints in {out} (steps {-int(steps[1])} to {int(steps[0])}); "
                           "put --out on a file system every node shares")
    dist.broadcast_parameters_(model)

    def save_ckpt(step: int) -> None:
        if not dist.is_main:
            return
        save_state(ckpt_path, {"identity": identity, "model": model.state_dict(), "optim": optim.state_dict(),
                               "sched": sched.state_dict(), "step": step, "generator": gen.get_state(), "loss_ema": loss_ema})

    order = np.random.default_rng(cfg.seed if dist.is_main else [cfg.seed, dist.rank]).integers(0, len(views), size=cfg.iterations)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)  # only now: bad input found above leaves no folder behind
    t_opt = time.time()
    bar = tqdm(range(start, cfg.iterations), desc="train", disable=not cfg.progress, initial=start, total=cfg.iterations)
    for step in bar:
        loss = step_loss(model, views[order[step]], cfg, gen)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients_(model)  # every rank steps with the mean gradient of W views
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
    t_lift = time.time()
    with torch.no_grad():
        evidence = lift_evidence(model, views, params["means"], progress=cfg.progress, reduce=dist.all_reduce_)
        maps = []
        local = {i: v for i, v in zip(local_idx, views)}
        for i in tqdm(range(len(cams)), desc="feature maps", disable=not cfg.progress, leave=False):
            owner = dist.rank if i in local else (train_idx.index(i) if i in train_idx else i) % dist.world_size
            if owner == dist.rank:
                renderer = local[i].renderer if i in local else view_renderer(cfg.feature_renderer, params, cams, i)
                fmap = renderer.features(features).reshape(renderer.height, renderer.width, -1).half()
            else:
                fmap = torch.zeros(int(cams.heights[i]), int(cams.widths[i]), cfg.feature_dim, dtype=torch.float16, device=device)
            if dist.active:  # one rank holds the map, the others add zeros: exact
                fmap = dist.reduce_to_main_(fmap.float()).half()
            if dist.is_main:
                maps.append(fmap.cpu().numpy())
    lifted = lifted_scores(evidence, splats, cfg)
    visibility = evidence.blend_weight
    lift_seconds = time.time() - t_lift  # lifting, votes, propagation (and the feature maps rendered meanwhile)
    if not dist.is_main:  # rank 0 writes the run; the others wait for it
        dist.barrier()
        return out
    query_size = lifted.astype(np.float32).sum(axis=1) / 255.0
    arrays = {
        "features": features.cpu().numpy().astype(np.float32),
        "queries": model.queries.detach().cpu().numpy(),
        "query_bias": model.query_bias.detach().cpu().numpy(),
        "lifted": lifted,
        "query_size": query_size,
        "visibility": visibility,
        "containment": containment(lifted > 127),
        "footprint": footprint_areas(splats),
    }
    if model.query_clip is not None:
        arrays["query_clip"] = model.query_clip.detach().cpu().numpy()
    view_arrays = {"names": np.array(scene.cameras.names), "maps": np.stack(maps),
                   "image_sizes": np.stack([scene.cameras.widths, scene.cameras.heights], 1),
                   "viewmats": scene.cameras.viewmats.astype(np.float32), "Ks": scene.cameras.Ks.astype(np.float32)}
    extra_files, clipseg_record = {}, None
    if clipseg is not None:
        from splatseg.train.clipseg_stage import clipseg_arrays

        t_clipseg = time.time()
        extra_files["clipseg.npz"], clipseg_record = clipseg_arrays(clipseg, scene.cameras, train_idx, params, cfg.clipseg_lift_side,
                                                                    progress=cfg.progress)
        clipseg_record["seconds"] = round(time.time() - t_clipseg, 2)
    verify_splats(splats_rec, out)  # still the file trained on: not replaced while training
    info = {
        "scene": str(Path(scene.root).resolve()),
        **splats_rec,
        "splats_source": source.as_json(),
        **identity,
        "train_views": [cams.names[i] for i in train_idx],
        "heldout_views": [cams.names[i] for i in held_idx],
        "split_source": split_source,
        "splats_transform": placed.transform,
        "alignment": placed.alignment,
        "undistortion": undistortion,
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
        "lift_seconds": round(lift_seconds, 2),
        "config": cfg.as_json(),
        "distributed": dist.info(),
        **ply_only_info,
    }
    if clipseg_record is not None:
        info["clipseg"] = clipseg_record
    write_run(out, info, arrays, view_arrays, extra_files)
    write_config_yml(out, cfg, "train")  # with the finished run: a failed one leaves no file behind
    dist.barrier()
    return out
