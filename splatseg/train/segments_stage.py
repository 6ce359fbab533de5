"""Makes sure every scene view has cached 2D segments before training.

Views whose `segments/<stem>.npz` exists (computed earlier, or imported from another tool) are
used as they are; the others are computed with the configured source. The weights-free source
and SAM with --sam-input depth|both also get the splats' rendered depth and opacity for each view
(geometry edges; SAM sees the depth colour-mapped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from splatseg.data import Scene
from splatseg.io.images import load_image
from splatseg.render import render
from splatseg.segments.cache import read_meta
from splatseg.segments.compute import Geometry, compute_segments, make_source
from splatseg.types import Cameras, Splats


def render_geometry(params: dict, cameras: Cameras, i: int) -> Geometry:
    """Expected depth and opacity of camera i at its size: what the weights-free source is given."""
    with torch.no_grad():
        out = render(
            params["means"], params["quats"], params["scales"], params["opacities"],
            params["means"].new_zeros(params["means"].shape[0], 1),
            torch.from_numpy(cameras.viewmats[i : i + 1]).float(), torch.from_numpy(cameras.Ks[i : i + 1]).float(),
            int(cameras.widths[i]), int(cameras.heights[i]),
        )
    return Geometry(depth=out.depths[0, ..., 0].cpu().numpy(), alpha=out.alphas[0, ..., 0].cpu().numpy(), K=cameras.Ks[i].astype(np.float32))


def ensure_segments(scene: Scene, splats: Splats, cfg, seg_dir: Path, views: list[int] | None = None, source=None) -> dict:
    """Computes the missing segments of `views` (default: every view). Without `views`, returns
    {"model", "embedding_model", "clip_has_weights"} read from the cache (the producers recorded in
    the first view's file); with `views` (one rank's share under torchrun), returns {}. `source`: a
    ready mask source instead of the one `cfg` names (scripts pass a SAM with a tiny random model)."""
    cams = scene.cameras
    wanted = range(len(cams)) if views is None else views
    missing = [i for i in wanted if not (seg_dir / f"{cams.names[i]}.npz").exists()]
    encoder = None
    if missing:
        factor = max(1.0, float(max(cams.widths.max(), cams.heights.max())) / cfg.segment_max_side)
        seg_cams = cams.downscaled(factor)
        params = splats.torch_params()
        sam_input = getattr(cfg, "sam_input", "rgb")
        depth_for_sam = getattr(source, "needs_geometry", False) if source is not None else (cfg.mask_source == "sam" and sam_input != "rgb")
        needs_geometry = cfg.mask_source == "felzenszwalb" or bool(depth_for_sam)
        ray_address = getattr(cfg, "ray", None)
        if ray_address is not None and source is None:  # Ray tasks write the same files (splatseg.train.segments_ray)
            from splatseg.train.segments_ray import compute_segments_ray

            clip_spec = None if cfg.clip_pretrained is None else (cfg.clip_model, cfg.clip_pretrained)
            compute_segments_ray(ray_address, cams.names, cams.image_paths, seg_cams, missing, params, needs_geometry, seg_dir,
                                 (cfg.mask_source, cfg.sam_model, cfg.sam_checkpoint, sam_input), clip_spec, progress=cfg.progress)
            missing = []
        if source is None and missing:
            source = make_source(cfg.mask_source, sam_model=cfg.sam_model, sam_checkpoint=cfg.sam_checkpoint, sam_input=sam_input)
        if cfg.clip_pretrained is not None and missing:
            from splatseg.semantics.clip import ClipEncoder

            encoder = ClipEncoder(cfg.clip_model, cfg.clip_pretrained)

        def images():
            for i in missing:
                size = (int(seg_cams.widths[i]), int(seg_cams.heights[i]))
                rgb = load_image(cams.image_paths[i], size=size)
                yield cams.names[i], rgb, (render_geometry(params, seg_cams, i) if needs_geometry else None)

        if missing:
            compute_segments(images(), seg_dir, source, encoder=encoder, progress=cfg.progress)
    if views is not None:
        return {}
    meta = read_meta(seg_dir / f"{cams.names[0]}.npz")
    embedding_model = str(meta["embedding_model"]) if meta["has_embeddings"] else None
    return {
        "model": str(meta["model"]),
        "embedding_model": embedding_model,
        "clip_has_weights": embedding_model is not None and not embedding_model.endswith("/random"),
    }
