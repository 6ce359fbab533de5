"""Exports from splats files the project did not write (issue 12): another property order, no
normals, a float64 column and an integer column. A `.ply` export must copy the selected rows as
they are stored (same properties, order, types and bytes), never re-encode them through the
writer's own layout; other formats must carry the same values. Checked value by value, and with
PlayCanvas splat-transform reading every column back."""

from __future__ import annotations

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from splatseg.export import ExportError, ExportSource, export_ply, export_selection
from splatseg.io.formats import read_splats
from splatseg.io.ply import read_ply, read_vertex_table
from test_export import splat_transform_rows

N = 200
FOREIGN = [("opacity", "<f4"), ("rot_0", "<f4"), ("rot_1", "<f4"), ("rot_2", "<f4"), ("rot_3", "<f4"),
           ("scale_0", "<f4"), ("scale_1", "<f4"), ("scale_2", "<f4"), ("f_dc_0", "<f4"), ("f_dc_1", "<f4"), ("f_dc_2", "<f4"),
           ("x", "<f8"), ("y", "<f4"), ("z", "<f4"), ("segment", "<u2")]
"""A trainer's own layout: opacity and rotation first, float64 x, a uint16 label, no normals, no f_rest."""


def foreign_table(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.empty(N, dtype=np.dtype(FOREIGN))
    for name, dt in FOREIGN:
        if name == "segment":
            t[name] = rng.integers(0, 60000, N)
        elif name == "x":
            t[name] = rng.normal(size=N) + 1e-9 * rng.normal(size=N)  # digits a float32 cannot hold
        elif name.startswith("scale"):
            t[name] = rng.uniform(-5, -2, N)
        else:
            t[name] = rng.normal(size=N)
    return t


@pytest.fixture
def foreign(tmp_path):
    path = tmp_path / "foreign.ply"
    table = foreign_table()
    PlyData([PlyElement.describe(table, "vertex")], text=False, byte_order="<").write(str(path))
    return path, table


def test_ply_export_of_a_foreign_layout_copies_the_stored_rows(foreign, tmp_path):
    path, table = foreign
    mask = np.random.default_rng(1).uniform(size=N) < 0.4
    out = tmp_path / "sel.ply"
    assert export_ply(path, mask, out) == mask.sum()
    back = read_vertex_table(out)
    assert back.dtype == table.dtype  # same properties, same order, same types (float64 x, uint16 label)
    assert back.tobytes() == table[mask].tobytes()
    raw = PlyData.read(str(out))["vertex"]
    assert [p.name for p in raw.properties] == [n for n, _ in FOREIGN]
    assert "nx" not in back.dtype.names
    for name, _ in FOREIGN:  # value by value, as an independent reader sees them
        np.testing.assert_array_equal(raw[name], table[name][mask], err_msg=name)


def test_ply_export_of_a_foreign_layout_appends_extras_after_its_own_properties(foreign, tmp_path):
    path, table = foreign
    mask = np.arange(N) % 5 == 0
    out = tmp_path / "sel.ply"
    export_ply(path, mask, out, extra={"object_id": np.arange(N, dtype=np.int32)})
    back = read_vertex_table(out)
    assert back.dtype.names == tuple(n for n, _ in FOREIGN) + ("object_id",)
    for name, _ in FOREIGN:
        np.testing.assert_array_equal(back[name], table[name][mask], err_msg=name)
        assert back.dtype.fields[name][0] == table.dtype.fields[name][0]
    assert back["object_id"].tolist() == np.flatnonzero(mask).tolist()


@pytest.mark.parametrize("suffix, atol", [(".splat", 5e-3), (".spz", 5e-3), (".compressed.ply", 5e-3)])
def test_other_formats_from_a_foreign_layout_keep_each_rows_values(foreign, tmp_path, suffix, atol):
    path, table = foreign
    mask = np.arange(N) % 3 != 0
    out = tmp_path / f"sel{suffix}"
    export_selection(path, mask, out)
    back = read_splats(out)
    assert len(back) == mask.sum()
    np.testing.assert_allclose(back.means[:, 0], table["x"][mask], atol=atol)  # rows in order, x from the float64 column
    np.testing.assert_allclose(back.means[:, 1], table["y"][mask], atol=atol)
    want = read_ply(path).subset(mask)
    np.testing.assert_allclose(back.means, want.means, atol=atol)
    np.testing.assert_allclose(back.opacities, want.opacities, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("mask", [np.ones(N, np.int64), np.ones(N, np.uint8), np.ones(N, np.float32), np.ones(N - 1, bool)])
def test_a_selection_that_is_not_bool_of_the_right_length_is_refused(foreign, tmp_path, mask):
    path, _ = foreign
    out = tmp_path / "sel.ply"
    with pytest.raises(ExportError, match="selection mask must be bool"):
        ExportSource(path).export(mask, out)
    assert not out.exists()


def test_an_integer_index_list_is_not_taken_for_a_mask(foreign, tmp_path):
    path, _ = foreign
    with pytest.raises(ExportError, match="must be bool"):
        export_ply(path, np.array([1, 0] * (N // 2)), tmp_path / "sel.ply")


def test_splat_transform_reads_every_column_of_a_foreign_export(foreign, tmp_path):
    path, table = foreign
    mask = np.random.default_rng(3).uniform(size=N) < 0.5
    out = tmp_path / "sel.ply"
    export_ply(path, mask, out)
    rows = splat_transform_rows(out, tmp_path)
    assert len(rows) == mask.sum()
    assert set(rows[0]) == {n for n, _ in FOREIGN}
    for name, dt in FOREIGN:
        got = np.array([float(r[name]) for r in rows])
        want = table[name][mask].astype(np.float64)
        if name == "x":  # splat-transform holds columns as float32
            np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32), err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


# ----------------------------------------------------------------------------- export-all folders


def test_export_all_replaces_its_previous_folder_whole_and_leaves_nothing_beside_it(foreign, tmp_path):
    import json
    import os

    from splatseg.export import export_objects, read_index

    path, table = foreign
    out = tmp_path / "deep" / "objs"  # the parent does not exist yet
    export_objects(path, [("a", np.arange(N) < 10), ("b", np.arange(N) >= 150)], out)
    assert sorted(p.name for p in out.iterdir()) == ["a.ply", "b.ply", "index.json"]
    index = export_objects(path, [("c", np.arange(N) % 2 == 0)], out)  # a second run replaces the first
    assert sorted(p.name for p in out.iterdir()) == ["c.ply", "index.json"]
    assert os.listdir(out.parent) == ["objs"]  # no staging or old folder left beside it
    meta = json.loads(index.read_text())
    assert meta["source"] == str(path.resolve())
    assert read_index(index) == [{"file": "c.ply", "name": "c", "gaussians": N // 2}]
    assert read_vertex_table(out / "c.ply").tobytes() == table[::2].tobytes()
    assert (out.stat().st_mode & 0o777) == (0o777 & ~_umask())  # an ordinary folder, not mkdtemp's 0700


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("names", [["a", "a"], [""], ["x/y"], [".hidden"]])
def test_export_all_refuses_names_that_are_not_plain_unique_stems(foreign, tmp_path, names):
    from splatseg.export import export_objects

    path, _ = foreign
    with pytest.raises(ExportError, match="unique plain file stems"):
        export_objects(path, [(n, np.ones(N, bool)) for n in names], tmp_path / "objs")
    assert not (tmp_path / "objs").exists()


def test_export_all_refuses_a_file_a_link_or_a_foreign_folder(foreign, tmp_path):
    from splatseg.export import export_objects

    path, _ = foreign
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    for target, message in [("file", "not a folder"), ("link", "not a folder"), ("full", "neither empty nor")]:
        with pytest.raises(ExportError, match=message):
            export_objects(path, [("a", np.ones(N, bool))], tmp_path / target)
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"
    (tmp_path / "empty").mkdir()
    export_objects(path, [("a", np.ones(N, bool))], tmp_path / "empty")  # an empty folder is fine
    assert (tmp_path / "empty" / "a.ply").exists()
