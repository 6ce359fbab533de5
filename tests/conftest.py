"""Shared fixtures: a tiny generated tabletop scene and a run trained on it (built once per worker)."""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path

import pytest
import torch

from splatseg.data.synthetic import SyntheticConfig

# Under pytest-xdist each worker gets one thread: two workers with two threads each on a 2-core
# machine thrash torch's thread pool (measured 5x slower). SPLATSEG_TEST_THREADS overrides it
# (`make mutation` sets 1). The worker count itself is the Makefile's TEST_WORKERS.
_THREADS = os.environ.get("SPLATSEG_TEST_THREADS")
torch.set_num_threads(int(_THREADS) if _THREADS else 1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))

TINY_SCENE = SyntheticConfig(seed=3, num_cameras=16, width=96, height=72, gaussians_per_object=500, table_gaussians=1500)


def require_tool(available: bool, reason: str) -> None:
    """Skips a test whose external tool is missing, or fails it when SPLATSEG_REQUIRE_TOOLS=1
    (CI sets it, so a missing browser or splat reader can never pass silently there)."""
    if available:
        return
    if os.environ.get("SPLATSEG_REQUIRE_TOOLS") == "1":
        pytest.fail(f"required tool missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """A generated scene directory (16 views of 96x72, ~4k Gaussians)."""
    from splatseg.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("scene") / "tiny", TINY_SCENE, progress=False)


@pytest.fixture(scope="session")
def tiny_run(tiny_scene, tmp_path_factory) -> Path:
    """A run trained on `tiny_scene` with the weights-free segments (every 4th view held out)."""
    from splatseg.train import TrainConfig, train

    scene = tmp_path_factory.mktemp("scene_copy") / "tiny"
    shutil.copytree(tiny_scene, scene)  # segments are written into the scene: keep the original clean
    return train(TrainConfig(data=scene, out=tmp_path_factory.mktemp("run") / "run", iterations=300,
                             holdout_every=4, progress=False))


def tiny_sam(seed: int = 0):
    """A randomly initialised SAM built from segment-anything's own modules (256 px, 16x16 embedding)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    img, patch, dim = 256, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=1, embed_dim=dim, img_size=img, mlp_ratio=2, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2, patch_size=patch, qkv_bias=True, use_rel_pos=False, global_attn_indexes=(), window_size=0, out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(img // patch, img // patch), input_image_size=(img, img), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=1, iou_head_hidden_dim=16,
        ),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()
