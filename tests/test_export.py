"""Export: selected rows copied bit for bit, extras only when asked, read by a real splat editor."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import require_tool
from splatseg.export import ExportError, export_objects, export_ply, read_index
from splatseg.io.ply import read_ply, read_vertex_table, write_ply
from splatseg.types import Splats

REPO = Path(__file__).resolve().parents[1]
SPLAT_TRANSFORM = REPO / "node_modules" / ".bin" / "splat-transform"


def random_splats(n: int, degree: int, seed: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    b = (degree + 1) ** 2
    return Splats(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=rng.uniform(-5, -2, (n, 3)).astype(np.float32),
        opacity_logits=rng.normal(size=n).astype(np.float32),
        sh0=rng.normal(size=(n, 1, 3)).astype(np.float32),
        shN=rng.normal(size=(n, b - 1, 3)).astype(np.float32) * 0.1,
        normals=np.zeros((n, 3), np.float32),
        extra={"confidence": rng.uniform(size=n).astype(np.float32)},
    )


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "scene.ply"
    write_ply(path, random_splats(500, 3))
    return path


def test_export_copies_selected_rows_bit_for_bit(src, tmp_path):
    mask = np.random.default_rng(1).uniform(size=500) < 0.3
    out = tmp_path / "sel.ply"
    assert export_ply(src, mask, out) == mask.sum()
    a, b = read_vertex_table(src), read_vertex_table(out)
    assert b.dtype.names == a.dtype.names  # same properties, same order, nothing added
    assert a[mask].tobytes() == b.tobytes()
    assert b"binary_little_endian" in out.read_bytes()[:200]


def test_export_appends_requested_extras(src, tmp_path):
    mask = np.zeros(500, bool)
    mask[[3, 7, 9]] = True
    ids = np.arange(500, dtype=np.uint32)
    out = tmp_path / "sel.ply"
    export_ply(src, mask, out, extra={"object_id": ids})
    b = read_vertex_table(out)
    assert b.dtype.names[-1] == "object_id" and b["object_id"].dtype == np.dtype("<u4")
    assert list(b["object_id"]) == [3, 7, 9]
    assert read_ply(out).extra["object_id"].tolist() == [3, 7, 9]


def test_export_errors_leave_nothing_behind(src, tmp_path):
    out = tmp_path / "sel.ply"
    with pytest.raises(ExportError, match="empty"):
        export_ply(src, np.zeros(500, bool), out)
    with pytest.raises(ExportError, match=r"bool \[500\]"):
        export_ply(src, np.ones(499, bool), out)
    with pytest.raises(ExportError, match="already exists"):
        export_ply(src, np.ones(500, bool), out, extra={"x": np.zeros(500, np.float32)})
    assert list(tmp_path.iterdir()) == [src]


def test_export_objects_writes_index(src, tmp_path):
    masks = [np.arange(500) < 100, np.arange(500) >= 400]
    index = export_objects(src, [("a", masks[0]), ("b", masks[1])], tmp_path / "objs", labels=["mug", None])
    entries = read_index(index)
    assert [(e["file"], e["gaussians"]) for e in entries] == [("a.ply", 100), ("b.ply", 100)]
    assert entries[0]["label"] == "mug" and "label" not in entries[1]


def splat_transform_rows(path: Path, tmp_path: Path) -> list[dict]:
    """Reads a PLY with PlayCanvas splat-transform and returns its rows as dicts (via CSV)."""
    require_tool(SPLAT_TRANSFORM.exists() and shutil.which("node") is not None,
                 "splat-transform not installed (npm install) or node missing")
    out_csv = tmp_path / f"{path.stem}.csv"
    proc = subprocess.run([str(SPLAT_TRANSFORM), "-q", "-w", str(path), str(out_csv)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with open(out_csv) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("degree", [0, 3])
def test_splat_transform_reads_exports(tmp_path, degree):
    src = tmp_path / "scene.ply"
    splats = random_splats(300, degree, seed=degree)
    write_ply(src, splats)
    mask = np.random.default_rng(2).uniform(size=300) < 0.4
    out = tmp_path / "sel.ply"
    export_ply(src, mask, out, extra={"object_id": np.full(300, 7, np.uint32)})
    rows = splat_transform_rows(out, tmp_path)
    assert len(rows) == mask.sum()
    xs = np.array([float(r["x"]) for r in rows], np.float32)
    assert np.allclose(xs, splats.means[mask, 0], atol=1e-6)
    if degree == 3:
        assert "f_rest_44" in rows[0]
    assert {float(r["object_id"]) for r in rows} == {7.0}
