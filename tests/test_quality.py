"""Quality bar: on a generated tabletop with noisy, view-inconsistent segments (SAM's failure modes
simulated: jittered boundaries, dropped segments, merged neighbours, background pieces, split
parts, random numbering per view), one click per object selects it:
mean 2D IoU on held-out views >= 0.95 and mean 3D IoU against the true Gaussians >= 0.90."""

from __future__ import annotations

import numpy as np
import pytest

from splatseg.data import load_scene
from splatseg.data.synthetic import SyntheticConfig, generate, load_ground_truth
from splatseg.evaluate import evaluate_one_click_per_object
from splatseg.query import DEFAULT_THRESHOLD
from splatseg.segments.cache import segments_dir, write_segments
from splatseg.segments.noisy import NoiseConfig, simulate_segments
from splatseg.train import TrainConfig, train


def write_noisy_segments(scene_dir, noise: NoiseConfig, seed: int) -> None:
    gt = load_ground_truth(scene_dir)
    for v, stem in enumerate(load_scene(scene_dir).cameras.names):
        obj, part = gt.view_labels(stem)
        seg = simulate_segments(obj, part, seed=seed * 1000 + v, config=noise)
        write_segments(segments_dir(scene_dir) / f"{stem}.npz", seg)


@pytest.mark.slow
def test_one_click_per_object_with_noisy_segments(tmp_path):
    scene = generate(tmp_path / "scene", SyntheticConfig(seed=1), progress=False)
    write_noisy_segments(scene, NoiseConfig(boundary_px=2.0, drop_prob=0.1, merge_prob=0.05, background_pieces=4, split_prob=0.3), seed=1)
    run = train(TrainConfig(data=scene, out=tmp_path / "run", iterations=800, holdout_every=8, progress=False))
    ev = evaluate_one_click_per_object(scene, run, threshold=DEFAULT_THRESHOLD)
    report = {r.name: (round(r.iou_2d_heldout, 3), round(r.iou_3d, 3)) for r in ev.results}
    print("per object (2D held-out IoU, 3D IoU):", report)
    assert len(ev.results) == 5
    assert np.mean([r.iou_2d_heldout for r in ev.results]) >= 0.95, report
    assert np.mean([r.iou_3d for r in ev.results]) >= 0.90, report
