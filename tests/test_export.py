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
    table = read_vertex_table(src)[mask]
    assert list(rows[0]) == list(table.dtype.names) + ["object_id"]  # every column, in the file's order
    for name in table.dtype.names:  # the oracle reads each stored float32 value back exactly
        got = np.array([float(r[name]) for r in rows], np.float32)
        np.testing.assert_array_equal(got, table[name], err_msg=name)
    if degree == 3:
        assert "f_rest_44" in rows[0]
    assert {float(r["object_id"]) for r in rows} == {7.0}


# --------------------------------------------------------------------------------------------
# Formats by suffix
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, fmt", [(".compressed.ply", "compressed_ply"), (".splat", "splat"), (".spz", "spz")])
def test_export_format_follows_the_suffix(src, tmp_path, suffix, fmt):
    from splatseg.export import export_selection
    from splatseg.io.formats import detect_format, read_splats

    mask = np.arange(500) % 3 == 0
    result = export_selection(src, mask, tmp_path / f"sel{suffix}")
    assert result.count == mask.sum() and result.format == fmt
    assert detect_format(tmp_path / f"sel{suffix}") == fmt
    back = read_splats(tmp_path / f"sel{suffix}")
    want = read_ply(src).subset(mask)
    assert len(back) == mask.sum()
    assert np.abs(back.means - want.means).max() < 5e-3  # rows in order, within the codecs' precision
    assert any("confidence" in note for note in result.notes)  # the extra property could not go along


def test_ply_export_from_a_compressed_source_writes_the_reference_layout(tmp_path):
    from splatseg.io.formats import read_splats, write_splats
    from splatseg.io.ply import standard_property_names

    source = tmp_path / "scene.spz"
    write_splats(source, random_splats(300, 2, seed=5))
    decoded = read_splats(source)
    mask = np.arange(300) < 120
    assert export_ply(source, mask, tmp_path / "sel.ply") == 120
    table = read_vertex_table(tmp_path / "sel.ply")
    assert list(table.dtype.names) == standard_property_names(table)  # x y z nx ny nz f_dc f_rest(24) opacity scale rot
    assert len([n for n in table.dtype.names if n.startswith("f_rest_")]) == 24
    back = read_ply(tmp_path / "sel.ply")
    np.testing.assert_array_equal(back.means, decoded.means[:120])  # the decoded rows, exactly
    np.testing.assert_array_equal(back.shN, decoded.shN[:120])


def test_unknown_suffix_and_extras_in_compressed_formats_are_refused(src, tmp_path):
    from splatseg.io.formats import SplatFormatError

    with pytest.raises(SplatFormatError, match="unknown splat file suffix '.obj'"):
        export_ply(src, np.ones(500, bool), tmp_path / "out" / "sel.obj")
    with pytest.raises(ExportError, match="need a .ply output"):
        export_ply(src, np.ones(500, bool), tmp_path / "out" / "sel.spz", extra={"object_id": np.zeros(500, np.uint32)})
    assert list(tmp_path.iterdir()) == [src]


def test_export_objects_in_another_format(src, tmp_path):
    from splatseg.io.formats import detect_format

    index = export_objects(src, [("a", np.arange(500) < 100)], tmp_path / "objs", suffix=".splat")
    entries = read_index(index)
    assert entries[0]["file"] == "a.splat" and detect_format(tmp_path / "objs" / "a.splat") == "splat"
    assert (tmp_path / "objs" / "a.splat").stat().st_size == 100 * 32
