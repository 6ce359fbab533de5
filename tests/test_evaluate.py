"""Metrics and the foreground-evaluation protocol (NVOS / SPIn-NeRF) on the tiny scene."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from splatseg.data import load_scene, write_transforms_json
from splatseg.data.synthetic import load_ground_truth
from splatseg.evaluate import evaluate_foreground
from splatseg.io.images import save_image
from splatseg.metrics import accuracy, boundary_iou, iou


def test_metrics_on_known_masks():
    a = np.zeros((20, 20), bool)
    a[5:15, 5:15] = True
    b = np.zeros((20, 20), bool)
    b[5:15, 10:20] = True
    assert iou(a, a) == 1.0 and iou(a, b) == pytest.approx(50 / 150)
    assert accuracy(a, b) == pytest.approx(1 - 100 / 400)
    assert boundary_iou(a, a) == 1.0 and boundary_iou(a, b) < iou(a, b)
    assert iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        iou(a, b[:10])


def test_foreground_protocol_scores_the_clicked_object(tiny_scene, tiny_run, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene)
    gt = load_ground_truth(scene)
    ball = gt.object_names.index("ball")
    cams = load_scene(scene).cameras
    extras = []
    (scene / "gt_masks").mkdir()
    for stem in cams.names:
        save_image(scene / "gt_masks" / f"{stem}.png", gt.view_labels(stem)[0] == ball)
        extras.append({"gt_mask_path": f"gt_masks/{stem}.png"})
    write_transforms_json(scene, cams, extras)
    click, sel, rows = evaluate_foreground(scene, tiny_run)
    assert len(rows) == len(cams) and sum(r.heldout for r in rows) == 4
    assert np.mean([r.iou for r in rows]) > 0.8, [round(r.iou, 2) for r in rows]
    assert np.mean([r.accuracy for r in rows]) > 0.97
    with pytest.raises(ValueError, match="gt_mask_path"):
        evaluate_foreground(tiny_scene, tiny_run)
