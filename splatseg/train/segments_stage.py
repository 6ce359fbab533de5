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


def ensure_segments(scene: Scene, splats: Splats, cfg, seg_dir: Path, source=None) -> dict:
    """Computes missing segments; returns {"model", "embedding_model", "clip_has_weights"} read
    from the cache (the producers recorded in the first view's file). `source`: a ready mask source
    instead of the one `cfg` names (scripts pass a SAM with a tiny random model)."""
    cams = scene.cameras
    missing = [i for i, name in enumerate(cams.names) if not (seg_dir / f"{name}.npz").exists()]
    encoder = None
    if missing:
        factor = max(1.0, float(max(cams.widths.max(), cams.heights.max())) / cfg.segment_max_side)
        seg_cams = cams.downscaled(factor)
        if source is None:
            source = make_source(cfg.mask_source, sam_model=cfg.sam_model, sam_checkpoint=cfg.sam_checkpoint,
                                 sam_input=getattr(cfg, "sam_input", "rgb"))
        if cfg.clip_pretrained is not None:
            from splatseg.semantics.clip import ClipEncoder

            encoder = ClipEncoder(cfg.clip_model, cfg.clip_pretrained)
        params = splats.torch_params()
        needs_geometry = cfg.mask_source == "felzenszwalb" or bool(getattr(source, "needs_geometry", False))

        def images():
            for i in missing:
                size = (int(seg_cams.widths[i]), int(seg_cams.heights[i]))
                rgb = load_image(cams.image_paths[i], size=size)
                yield cams.names[i], rgb, (render_geometry(params, seg_cams, i) if needs_geometry else None)

        compute_segments(images(), seg_dir, source, encoder=encoder, progress=cfg.progress)
    meta = read_meta(seg_dir / f"{cams.names[0]}.npz")
    embedding_model = str(meta["embedding_model"]) if meta["has_embeddings"] else None
    return {
        "model": str(meta["model"]),
        "embedding_model": embedding_model,
        "clip_has_weights": embedding_model is not None and not embedding_model.endswith("/random"),
    }
