"""`splatseg demo` end to end on a small scene: every artefact is written and the numbers are sane."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import TINY_SCENE
from splatseg.demo import DemoConfig, run_demo
from splatseg.io.ply import read_vertex_table


@pytest.mark.slow
def test_demo_writes_objects_results_and_overview(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(DemoConfig(out=out, scene=TINY_SCENE, iterations=250, holdout_every=4, progress=False))
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(summary))
    names = [o["name"] for o in results["objects"]]
    assert names == ["mug", "box", "ball", "lamp", "block"]
    for o in results["objects"]:
        assert len(read_vertex_table(out / "objects" / f"{o['name']}.ply")) == o["selected"] > 0
    assert results["mean_iou_3d"] > 0.6 and results["mean_iou_2d_heldout"] > 0.7
    w, h = Image.open(out / "overview.png").size
    assert w > 2 * TINY_SCENE.width and h >= 5 * TINY_SCENE.height
    # a second run replaces its own earlier output, but never a folder it did not write
    (tmp_path / "other").mkdir()
    with pytest.raises(FileExistsError):
        run_demo(DemoConfig(out=tmp_path / "other", scene=TINY_SCENE, iterations=10, progress=False))
