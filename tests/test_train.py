"""Training pieces (losses, matching) and a real training run on the tiny scene."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import torch

from splatseg.run import RunError, load_field
from splatseg.train import TrainConfig, train
from splatseg.train.losses import dice_loss, focal_loss, pairwise_dice_cost, pairwise_focal_cost
from splatseg.train.matching import hungarian


def test_pairwise_costs_equal_per_pair_losses():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 40, generator=g) * 3
    targets = (torch.rand(3, 40, generator=g) > 0.5).float()
    focal = pairwise_focal_cost(logits, targets)
    dice = pairwise_dice_cost(logits, targets)
    for k, m in itertools.product(range(5), range(3)):
        assert torch.allclose(focal[k, m], focal_loss(logits[k : k + 1], targets[m : m + 1]), atol=1e-6)
        assert torch.allclose(dice[k, m], dice_loss(logits[k : k + 1], targets[m : m + 1]), atol=1e-6)


def test_losses_prefer_the_right_mask():
    target = torch.tensor([[1.0] * 20 + [0.0] * 20])
    good = (target * 2 - 1) * 6
    bad = -good
    assert focal_loss(good, target) < 0.01 < focal_loss(bad, target)
    assert dice_loss(good, target) < 0.01 and dice_loss(bad, target) > 0.9


def test_hungarian_recovers_a_permutation():
    rng = np.random.default_rng(0)
    perm = rng.permutation(6)
    cost = torch.ones(8, 6)
    cost[perm, np.arange(6)] = 0.0  # query perm[m] fits mask m
    rows, cols = hungarian(cost)
    assert len(rows) == 6
    assert all(perm[c] == r for r, c in zip(rows, cols))


def test_tiny_run_is_complete(tiny_run, tiny_scene):
    fld = load_field(tiny_run)
    info = json.loads((tiny_run / "run.json").read_text())
    n = fld.num_gaussians
    assert fld.features.shape == (n, 16) and fld.lifted.shape == (128, n)
    assert fld.view_maps.shape[0] == 16 and max(fld.view_maps.shape[1:3]) == 96
    assert len(info["heldout_views"]) == 4 and info["segments_model"].startswith("felzenszwalb")
    assert np.isfinite(info["final_loss"])
    # the field separates the objects: a query covers each object better than chance
    from splatseg.data.synthetic import load_ground_truth

    gt = load_ground_truth(tiny_scene)
    scores = fld.lifted.astype(np.float32) / 255
    for oid in range(1, len(gt.object_names)):
        truth = gt.object_id == oid
        best = max(((scores[k] > 0.5) & truth).sum() / ((scores[k] > 0.5) | truth).sum() for k in range(128))
        assert best > 0.6, (gt.object_names[oid], best)


def test_train_resumes_and_refuses_other_splats(tiny_run, tiny_scene, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene)
    shutil.copytree(load_field(tiny_run).scene_root / "segments", scene / "segments")
    cfg = TrainConfig(data=scene, out=run, iterations=300, holdout_every=4, progress=False)
    train(cfg)  # already at step 300: nothing to optimise, same result
    assert np.array_equal(np.load(run / "field.npz")["features"], np.load(tiny_run / "field.npz")["features"])
    from splatseg.io.ply import read_ply, write_ply

    splats = read_ply(scene / "splats.ply")
    splats.means[0, 0] += 1.0
    write_ply(scene / "splats.ply", splats)
    with pytest.raises(RunError, match="splats_sha256"):
        train(cfg)


def test_cached_and_raster_view_renderers_agree(tiny_scene):
    """The CPU fast path and the rasterising path (gsplat's on CUDA) give the same feature maps
    and the same lifting."""
    from splatseg.data import load_scene
    from splatseg.io.ply import read_ply
    from splatseg.train.trainer import training_cameras, view_renderer

    params = read_ply(tiny_scene / "splats.ply").torch_params()
    cams = training_cameras(load_scene(tiny_scene).cameras, 48)
    cached, raster = (view_renderer(kind, params, cams, 2) for kind in ("cached", "raster"))
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(params["means"].shape[0], 5, generator=g)
    assert torch.allclose(cached.features(feats), raster.features(feats), atol=1e-5)
    values = torch.rand(cams.widths[2] * cams.heights[2], 3, generator=g)
    (s1, w1), (s2, w2) = cached.lift(values), raster.lift(values)
    assert w1.sum() > 0 and torch.allclose(s1, s2, atol=1e-4) and torch.allclose(w1, w2, atol=1e-5)
