"""Quality on the generated family at a reduced size (issue 9): two scenes the defaults were not
tuned on (seeds 300-301: tuning used 0 and 100-103, the README reports 200-209), 1,500 Gaussians
per object, 24 views at 192x144, segments from the SAM failure simulator at medium noise, one
click per object at its deepest pixel. Area-weighted (opacity x footprint) precision and recall
of the 3D selection, and held-out 2D IoU.

Measured when written: area precision 0.939 / 0.948 (without the large-splat rule of query.py:
0.834 / 0.851, so the precision bar fails without it), area recall 0.987 / 0.996, 2D 0.987 / 0.981."""

from __future__ import annotations

import numpy as np
import pytest

from splatseg.data import load_scene
from splatseg.data.family import FamilyConfig, generate_family_scene
from splatseg.data.placement import splats_in_world
from splatseg.data.synthetic import TABLE_ID, load_ground_truth
from splatseg.evaluate import score_clicks
from splatseg.prompts import run_picking, select_clicks
from splatseg.query import DEFAULT_THRESHOLD
from splatseg.run import load_field
from splatseg.segments.cache import write_segments
from splatseg.segments.noisy import NOISE_LEVELS, simulate_segments
from splatseg.train import TrainConfig, train

SEEDS = (300, 301)


def family_run(root, seed: int):
    scene = generate_family_scene(root / f"scene_{seed}", FamilyConfig(seed=seed, gaussians_per_object=1500, num_cameras=24,
                                                                        resolution=(192, 144)), progress=False)
    gt = load_ground_truth(scene)
    room = [i for i in gt.background_ids if gt.object_names[i] in ("floor", "wall")]
    segments = root / f"segments_{seed}"
    for v, stem in enumerate(load_scene(scene).cameras.names):
        obj, part = gt.view_labels(stem)
        write_segments(segments / f"{stem}.npz", simulate_segments(obj, part, seed=seed * 1000 + v, config=NOISE_LEVELS["medium"],
                                                                   support_ids=[TABLE_ID], room_ids=room))
    run = train(TrainConfig(data=scene, out=root / f"run_{seed}", segments=segments, holdout_every=8, iterations=400, progress=False))
    return scene, run


@pytest.mark.slow
def test_one_click_selects_the_object_without_sheets_of_background(tmp_path):
    precision, recall, iou_2d = [], [], []
    for seed in SEEDS:
        scene, run = family_run(tmp_path, seed)
        fld = load_field(run)
        picking = run_picking(fld, splats_in_world(fld.splats_path, None))
        rows = score_clicks(scene, fld, lambda f, c: select_clicks(f, [c], threshold=DEFAULT_THRESHOLD, picking=picking),
                            rules=("deepest",), seed=seed)
        assert len(rows) >= 4, f"seed {seed}: only {len(rows)} objects clicked"
        precision.append(np.mean([r.precision_3d["area"] for r in rows]))
        recall.append(np.mean([r.recall_3d["area"] for r in rows]))
        iou_2d.append(np.mean([r.iou_2d for r in rows]))
    report = f"area precision {np.round(precision, 3)}, area recall {np.round(recall, 3)}, held-out 2D {np.round(iou_2d, 3)}"
    print(report)
    assert np.mean(precision) >= 0.90, report
    assert np.mean(recall) >= 0.95, report
    assert np.mean(iou_2d) >= 0.93, report
