"""`train --ray`: segments computed as Ray tasks on a local instance write the local path's cache."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import require_tool
from splatseg.cli import command_defaults, parse, ray_flag_value
from splatseg.data import load_scene
from splatseg.io.formats import read_splats
from splatseg.train import TrainConfig
from splatseg.train.segments_stage import ensure_segments

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray():
    require_tool(importlib.util.find_spec("ray") is not None, "ray is not installed (pip install 'splatseg[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


def test_ray_tasks_write_the_local_cache(local_ray, tiny_scene, tmp_path):
    scene = load_scene(tiny_scene)
    splats = read_splats(tiny_scene / "splats.ply")
    by_ray, local = tmp_path / "ray", tmp_path / "local"
    ensure_segments(scene, splats, TrainConfig(data=tiny_scene, out=tmp_path / "run", ray="local", progress=False), by_ray)
    ensure_segments(scene, splats, TrainConfig(data=tiny_scene, out=tmp_path / "run", progress=False), local)
    names = sorted(p.name for p in local.glob("*.npz"))
    assert names == sorted(p.name for p in by_ray.glob("*.npz")) and len(names) == len(scene.cameras)
    for name in names:
        a, b = np.load(local / name), np.load(by_ray / name)
        assert sorted(a.files) == sorted(b.files), name
        for key in a.files:
            assert a[key].dtype == b[key].dtype, (name, key)
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")


def test_ray_flag_alone_means_local():
    assert ray_flag_value(["train", "--out", "r", "--ray"]) == ["train", "--out", "r", "--ray", "local"]
    assert ray_flag_value(["train", "--ray", "--out", "r"]) == ["train", "--ray", "local", "--out", "r"]
    assert ray_flag_value(["train", "--ray", "auto"]) == ["train", "--ray", "auto"]
    assert ray_flag_value(["segment", "--ray"]) == ["segment", "--ray"]
    cmd = parse(ray_flag_value(["train", "--data", "scene", "--out", "run", "--ray"]), command_defaults(["train"]))
    assert cmd.ray == "local"


def test_splatseg_never_imports_ray():
    code = "import sys, splatseg.cli, splatseg.train, splatseg.train.trainer; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
