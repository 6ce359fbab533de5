"""`train --clipseg`: CLIPSeg's image side of every training view, and the blend weights its
relevancy will be lifted through, computed once and stored in RUN/clipseg.npz (keys documented in
`splatseg.text_query`), so a text query later runs only CLIPSeg's text tower and decoder.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from splatseg.io.images import load_image
from splatseg.render import blend_weights
from splatseg.semantics.clipseg import ClipSeg
from splatseg.types import Cameras

MIN_LIFT_WEIGHT = 1e-2
"""Blend weights below this are not stored: they are about half of all pairs (the faint tails of
each Gaussian's footprint and the ones deep behind the surface) and carry a few % of the weight."""


def lift_cameras(cameras: Cameras, max_side: int) -> Cameras:
    """Cameras downscaled so the longest side is at most `max_side` pixels (the lift resolution)."""
    factor = max(1.0, float(max(cameras.widths.max(), cameras.heights.max())) / max_side)
    return cameras.downscaled(factor)


def image_side_arrays(clipseg: ClipSeg, images, batch_size: int = 8, progress: bool = False) -> dict[str, np.ndarray]:
    """{"layer_j": float16 [V, 1 + P, hidden]} of a sequence of V uint8 [H, W, 3] RGB images
    (or zero-argument callables returning one, loaded a batch at a time)."""
    images = list(images)
    layers: list[list[np.ndarray]] = [[] for _ in range(clipseg.num_layers)]
    for start in tqdm(range(0, len(images), batch_size), desc="clipseg image side", disable=not progress, leave=False):
        batch = [im() if callable(im) else im for im in images[start : start + batch_size]]
        for j, a in enumerate(clipseg.image_side(batch, batch_size=batch_size)):
            layers[j].append(a.astype(np.float16))
    return {f"layer_{j}": np.concatenate(chunks) for j, chunks in enumerate(layers)}


def lift_arrays(cameras: Cameras, view_indices: list[int], params: dict, lift_side: int, progress: bool = False) -> dict[str, np.ndarray]:
    """The blend weights of the views at the lift resolution, as clipseg.npz stores them
    (lift_sizes, lift_offsets, lift_pixel, lift_gaussian, lift_weight; pairs < MIN_LIFT_WEIGHT dropped)."""
    small = lift_cameras(cameras, lift_side)
    pixels, gaussians, weights, offsets, sizes = [], [], [], [0], []
    dev = params["means"].device
    with torch.no_grad():
        for i in tqdm(view_indices, desc="clipseg lift weights", disable=not progress, leave=False):
            w, h = int(small.widths[i]), int(small.heights[i])
            bw = blend_weights(params["means"], params["quats"], params["scales"], params["opacities"],
                               torch.from_numpy(small.viewmats[i]).float().to(dev), torch.from_numpy(small.Ks[i]).float().to(dev), w, h)
            keep = bw.weight >= MIN_LIFT_WEIGHT
            pixels.append(bw.pixel[keep].cpu().numpy().astype(np.int32))
            gaussians.append(bw.gaussian[keep].cpu().numpy().astype(np.int32))
            weights.append(bw.weight[keep].cpu().numpy().astype(np.float16))
            offsets.append(offsets[-1] + int(keep.sum()))
            sizes.append((w, h))
    return {
        "lift_sizes": np.asarray(sizes, np.int32).reshape(-1, 2),
        "lift_offsets": np.asarray(offsets, np.int64),
        "lift_pixel": np.concatenate(pixels) if pixels else np.zeros(0, np.int32),
        "lift_gaussian": np.concatenate(gaussians) if gaussians else np.zeros(0, np.int32),
        "lift_weight": np.concatenate(weights) if weights else np.zeros(0, np.float16),
        "num_gaussians": np.array(int(params["means"].shape[0])),
    }


def clipseg_arrays(clipseg: ClipSeg, cameras: Cameras, view_indices: list[int], params: dict, lift_side: int,
                   progress: bool = True, batch_size: int = 8) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays for RUN/clipseg.npz, the run.json `clipseg` record) of the views `view_indices` of
    `cameras` (pinhole, the photos at `cameras.image_paths`); `params` the splats' torch tensors."""
    names = [cameras.names[i] for i in view_indices]
    loaders = [lambda p=cameras.image_paths[i]: load_image(p) for i in view_indices]
    lifted = lift_arrays(cameras, view_indices, params, lift_side, progress)
    arrays = {"views": np.array(names), **image_side_arrays(clipseg, loaders, batch_size, progress), **lifted,
              "image_size": np.array(clipseg.image_size)}
    record = {"model": clipseg.name, "file": "clipseg.npz", "views": len(names), "layers": clipseg.num_layers,
              "image_size": clipseg.image_size, "lift_side": int(lift_side), "lift_pairs": int(lifted["lift_offsets"][-1])}
    return arrays, record
