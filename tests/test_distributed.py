"""`splatseg train` under torchrun: 2 CPU ranks (gloo) on the tiny scene against one process.

(a) the same trained features (a finished run's checkpoint, resumed at its last step) lifted over
sharded views give the single-process lifted scores within 1/255 and the same feature maps;
(b) sharded training reaches the single-process one-click quality within 0.01 3D IoU.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from splatseg.demo import DEFAULT_THRESHOLD
from splatseg.evaluate import evaluate_one_click_per_object

ROOT = Path(__file__).resolve().parents[1]
RANK_TIMEOUT_S = 240

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_train(args: list[str], ranks: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node ranks -m splatseg.cli train ARGS` on loopback, one thread per rank."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", "-m", "splatseg.cli", "train", *args, "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RANK_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def same_settings(run: Path) -> list[str]:
    """The flags that repeat `run`'s training (its config.yml; scene and splats as it recorded them)."""
    info = json.loads((run / "run.json").read_text())
    return ["--config", str(run / "config.yml"), "--data", info["scene"], "--splats", info["splats"]]


def test_sharded_lifting_matches_one_process(tiny_run, tmp_path):
    out = tmp_path / "lifted_on_two_ranks"
    out.mkdir()
    shutil.copy(tiny_run / "ckpt.pt", out / "ckpt.pt")  # the trained field, at its last step: lifting only
    torchrun_train([*same_settings(tiny_run), "--out", str(out)])
    one, two = np.load(tiny_run / "field.npz"), np.load(out / "field.npz")
    np.testing.assert_array_equal(one["features"], two["features"])
    diff = np.abs(one["lifted"].astype(np.int16) - two["lifted"].astype(np.int16))
    assert diff.max() <= 1, f"lifted scores differ by up to {diff.max()}/255"
    np.testing.assert_array_equal(np.load(tiny_run / "views.npz")["maps"], np.load(out / "views.npz")["maps"])
    info = json.loads((out / "run.json").read_text())
    assert info["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert not list(out.glob(".staging*")), "rank 0 alone writes, and leaves no staging folder"


@pytest.mark.slow
def test_sharded_training_reaches_one_process_quality(tiny_run, tmp_path):
    info = json.loads((tiny_run / "run.json").read_text())
    out = tmp_path / "trained_on_two_ranks"
    torchrun_train([*same_settings(tiny_run), "--out", str(out)])
    scene = Path(info["scene"])
    single = np.mean([r.iou_3d for r in evaluate_one_click_per_object(scene, tiny_run, DEFAULT_THRESHOLD).results])
    sharded = np.mean([r.iou_3d for r in evaluate_one_click_per_object(scene, out, DEFAULT_THRESHOLD).results])
    assert sharded >= single - 0.01, f"2 ranks: mean 3D IoU {sharded:.3f} against {single:.3f} on one process"
