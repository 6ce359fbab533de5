"""SAM on rendered depth end to end without SAM weights: a scene's segments computed by the
training stage's own code (`splatseg.train.segments_stage.ensure_segments`, which renders each
view's depth from the splats for --sam-input depth|both) with a tiny randomly initialised SAM built
from segment-anything's modules (the official checkpoints cannot be downloaded here), then a short
report of the levels. Train on them afterwards with `splatseg train --segments DIR --mask-source sam
--sam-input MODE` (the cache is reused, nothing is recomputed).

A random SAM's masks carry no meaning: this checks the plumbing (depth rendered and colour-mapped,
both inputs run and merged, the cache written with the model string "sam-vit_h+rgbd/..."), not quality.

Example:
    python scripts/try_sam_depth.py --data /tmp/scene --splats /tmp/scene/splats.ply --segments /tmp/segs --sam-input both
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splatseg.data import load_scene  # noqa: E402
from splatseg.io.formats import read_splats  # noqa: E402
from splatseg.segments.cache import read_segments  # noqa: E402
from splatseg.segments.sam import SamConfig, SamSource  # noqa: E402
from splatseg.train import TrainConfig  # noqa: E402
from splatseg.train.segments_stage import ensure_segments  # noqa: E402


def tiny_sam(seed: int = 0):
    """A randomly initialised SAM from segment-anything's own modules (as tests/conftest.py builds it)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    img, patch, dim = 256, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(depth=1, embed_dim=dim, img_size=img, mlp_ratio=2, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      num_heads=2, patch_size=patch, qkv_bias=True, use_rel_pos=False, global_attn_indexes=(), window_size=0,
                                      out_chans=dim),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(img // patch, img // patch), input_image_size=(img, img), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                                 transformer_dim=dim, iou_head_depth=1, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--splats", type=Path, required=True)
    ap.add_argument("--segments", type=Path, required=True, help="folder to write <stem>.npz into")
    ap.add_argument("--sam-input", choices=["rgb", "depth", "both"], default="both")
    ap.add_argument("--points-per-side", type=int, default=8)
    ap.add_argument("--max-side", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scene = load_scene(args.data)
    splats = read_splats(args.splats)
    cfg = TrainConfig(data=args.data, out=Path("unused"), mask_source="sam", sam_input=args.sam_input, segment_max_side=args.max_side)
    source = SamSource(SamConfig(sam_input=args.sam_input, points_per_side=args.points_per_side, pred_iou_thresh=0.0,
                                 stability_score_thresh=0.0), model=tiny_sam())
    info = ensure_segments(scene, splats, cfg, args.segments, source=source)
    counts = []
    for name in scene.cameras.names:
        seg = read_segments(args.segments / f"{name}.npz")
        counts.append([len(np.unique(level[level >= 0])) for level in seg.segmaps])
    counts = np.asarray(counts)
    print(f"segments: {len(counts)} views in {args.segments}, model {info['model']}; segments per level "
          f"(mean over views): {', '.join(f'{c:.1f}' for c in counts.mean(0))}")


if __name__ == "__main__":
    main()
