"""Export edges: what `ExportResult` says, one-row selections, missing parent folders, a `.splat`
source (decoded rows, no raw table), `feature_properties`, and export-all's all-or-nothing
folder handling (staging beside the target, rollback when a file or the final rename fails, a
previous set left exactly as it was)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import splatseg.export as export
from splatseg.export import ExportError, ExportSource, export_objects, export_selection, feature_properties, read_index
from splatseg.io.formats import read_splats, write_splats
from splatseg.io.ply import read_ply, read_vertex_table, standard_property_names, write_ply
from test_export import random_splats

N = 60


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "scene.ply"
    write_ply(path, random_splats(N, 1, seed=11))
    return path


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `folder`."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- single exports


def test_export_result_reports_path_count_format_and_an_empty_note_list(src, tmp_path):
    """A .ply export's result: the path written, the row count, "ply", and notes == [] (a list)."""
    mask = np.arange(N) % 4 == 1
    out = tmp_path / "sel.ply"
    result = ExportSource(src).export(mask, out)
    assert result.path == out and result.count == 15 and result.format == "ply"
    assert result.notes == [] and isinstance(result.notes, list)
    assert len(read_vertex_table(result.path)) == 15


def test_export_result_notes_say_what_a_splat_file_dropped(src, tmp_path):
    """A .splat export of an SH-degree-1 source with an extra property notes both losses."""
    result = export_selection(src, np.ones(N, bool), tmp_path / "sel.splat")
    assert result.format == "splat" and result.count == N and result.path == tmp_path / "sel.splat"
    assert any("SH degree 0" in n for n in result.notes) and any("confidence" in n for n in result.notes)


def test_a_one_row_selection_is_exported(src, tmp_path):
    """A selection of exactly one row is not empty: that row is written."""
    mask = np.zeros(N, bool)
    mask[17] = True
    result = export_selection(src, mask, tmp_path / "one.ply")
    assert result.count == 1
    assert read_vertex_table(tmp_path / "one.ply").tobytes() == read_vertex_table(src)[17:18].tobytes()


def test_an_export_creates_missing_parent_folders(src, tmp_path):
    """--out two folders below anything that exists: the folders are made and the file written."""
    out = tmp_path / "a" / "b" / "sel.ply"
    assert export_selection(src, np.ones(N, bool), out).count == N
    assert out.is_file()


def test_an_export_never_writes_over_its_source(src, tmp_path):
    """--out naming the source (directly or through a link) is refused and the source is untouched."""
    before = src.read_bytes()
    (tmp_path / "link.ply").symlink_to(src)
    for out in (src, tmp_path / "link.ply", tmp_path / "." / "scene.ply"):
        with pytest.raises(ExportError, match="refusing to write over it"):
            export_selection(src, np.ones(N, bool), out)
    assert src.read_bytes() == before


def test_a_clashing_extra_property_names_the_source(src, tmp_path):
    """An extra named like one of the file's properties is refused, naming the property and the file."""
    with pytest.raises(ExportError) as info:
        export_selection(src, np.ones(N, bool), tmp_path / "sel.ply", extra={"opacity": np.zeros(N, np.float32)})
    assert "'opacity'" in str(info.value) and str(src) in str(info.value)
    assert not (tmp_path / "sel.ply").exists()


def test_an_extra_of_the_wrong_length_is_refused(src, tmp_path):
    """Extra values must be one per source row (not per selected row)."""
    mask = np.arange(N) < 10
    with pytest.raises(ExportError, match=r"extra property 'object_id' has 10 values for 60 rows"):
        export_selection(src, mask, tmp_path / "sel.ply", extra={"object_id": np.zeros(10, np.uint32)})
    assert not (tmp_path / "sel.ply").exists()


@pytest.fixture
def splat_source(tmp_path) -> Path:
    """A `.splat` file (decoded by numpy alone): the source kind without a raw vertex table."""
    path = tmp_path / "scene.splat"
    write_splats(path, random_splats(N, 0, seed=12))
    return path


def test_a_splat_source_is_decoded_and_its_length_is_its_row_count(splat_source):
    """A non-PLY source keeps decoded splats (no table) and its length is their count."""
    source = ExportSource(splat_source)
    assert source.format == "splat" and source.table is None and source.splats is not None
    assert len(source) == N


def test_ply_export_of_a_splat_source_writes_the_selected_decoded_rows(splat_source, tmp_path):
    """.splat -> .ply: the selected decoded rows, in order, in the reference layout; extras appended."""
    decoded = read_splats(splat_source)
    mask = np.arange(N) % 3 == 2
    out = tmp_path / "sel.ply"
    result = export_selection(splat_source, mask, out, extra={"object_id": np.arange(N, dtype=np.uint32)})
    assert result.count == mask.sum() and result.notes == []
    table = read_vertex_table(out)
    assert list(table.dtype.names) == standard_property_names(table) + ["object_id"]
    back = read_ply(out)
    np.testing.assert_array_equal(back.means, decoded.means[mask])
    np.testing.assert_array_equal(back.opacity_logits, decoded.opacity_logits[mask])
    assert table["object_id"].tolist() == np.flatnonzero(mask).tolist()


def test_splat_export_of_a_splat_source_keeps_the_selected_rows(splat_source, tmp_path):
    """.splat -> .splat: the selected rows, in order: positions, colours and rotations unchanged,
    scales within a float32 rounding (they pass through log and exp)."""
    mask = np.arange(N) >= 45
    out = tmp_path / "sel.splat"
    assert export_selection(splat_source, mask, out).count == 15
    rows = np.fromfile(splat_source, np.uint8).reshape(N, 32)[mask]
    back = np.fromfile(out, np.uint8).reshape(15, 32)
    np.testing.assert_array_equal(back[:, :12], rows[:, :12])  # position f32x3
    np.testing.assert_array_equal(back[:, 24:], rows[:, 24:])  # rgba, quaternion
    np.testing.assert_allclose(back[:, 12:24].copy().view(np.float32), rows[:, 12:24].copy().view(np.float32), rtol=1e-6)


def test_splat_export_of_a_ply_source_keeps_each_selected_rows_position(src, tmp_path):
    """.ply -> .splat: rows decoded from the selected table rows, in order."""
    mask = np.arange(N) % 2 == 0
    export_selection(src, mask, tmp_path / "sel.splat")
    np.testing.assert_array_equal(read_splats(tmp_path / "sel.splat").means, read_ply(src).means[mask])


# ----------------------------------------------------------------------------- feature_properties


def test_feature_properties_names_each_column_in_order_as_float32():
    """[N, D] features -> feat_0..feat_{D-1}, each the matching column as float32."""
    features = np.random.default_rng(4).normal(size=(7, 3))
    props = feature_properties(features)
    assert list(props) == ["feat_0", "feat_1", "feat_2"]
    for d in range(3):
        assert props[f"feat_{d}"].dtype == np.float32
        np.testing.assert_array_equal(props[f"feat_{d}"], features[:, d].astype(np.float32))


def test_feature_properties_of_zero_columns_is_empty():
    """No feature columns, no properties."""
    assert feature_properties(np.zeros((5, 0), np.float32)) == {}


def test_feature_properties_go_into_a_ply_export(src, tmp_path):
    """Features exported as extras come back as float32 columns of the selected rows, after the file's own."""
    features = np.random.default_rng(5).normal(size=(N, 4)).astype(np.float32)
    mask = np.arange(N) % 5 == 0
    export_selection(src, mask, tmp_path / "sel.ply", extra=feature_properties(features))
    table = read_vertex_table(tmp_path / "sel.ply")
    assert table.dtype.names[-4:] == ("feat_0", "feat_1", "feat_2", "feat_3")
    assert table.dtype.names[:-4] == read_vertex_table(src).dtype.names
    np.testing.assert_array_equal(np.stack([table[f"feat_{d}"] for d in range(4)], 1), features[mask])


# ----------------------------------------------------------------------------- export-all folders


def two_objects() -> list[tuple[str, np.ndarray]]:
    return [("a", np.arange(N) < 20), ("b", np.arange(N) >= 40)]


def test_export_all_creates_missing_parent_folders(src, tmp_path):
    """An export-all folder two levels below anything that exists is made, with its files."""
    index = export_objects(src, two_objects(), tmp_path / "x" / "y" / "objs")
    assert index == tmp_path / "x" / "y" / "objs" / "index.json"
    assert [e["gaussians"] for e in read_index(index)] == [20, 20]


def test_export_all_overlapping_masks_and_labels(src, tmp_path):
    """Masks may overlap; each file holds its own rows; labels go only where given."""
    objects = [("a", np.arange(N) < 30), ("b", np.arange(N) >= 10)]
    index = export_objects(src, objects, tmp_path / "objs", labels=[None, "cup"])
    assert read_index(index) == [{"file": "a.ply", "name": "a", "gaussians": 30},
                                 {"file": "b.ply", "name": "b", "gaussians": 50, "label": "cup"}]
    table = read_vertex_table(src)
    assert read_vertex_table(tmp_path / "objs" / "b.ply").tobytes() == table[10:].tobytes()


def test_a_failing_object_leaves_no_folder_and_no_staging_behind(src, tmp_path):
    """The second object's mask is wrong: ExportError, no target folder, nothing beside it (the
    first object's file, already written to the staging folder, is gone too)."""
    objects = [("a", np.arange(N) < 20), ("b", np.ones(N - 1, bool))]
    with pytest.raises(ExportError, match="selection mask must be bool"):
        export_objects(src, objects, tmp_path / "out" / "objs")
    assert os.listdir(tmp_path / "out") == []


def test_a_failing_object_leaves_the_previous_set_exactly_as_it_was(src, tmp_path):
    """Re-exporting over an earlier export-all fails on its last object: the earlier files and index
    are all still there, byte for byte, with nothing of the new set mixed in."""
    out = tmp_path / "objs"
    export_objects(src, two_objects(), out, labels=["mug", None])
    before = tree(out)
    objects = [("a", np.arange(N) % 2 == 0), ("c", np.arange(N) < 5), ("d", np.zeros(N, bool))]  # "d" is empty
    with pytest.raises(ExportError, match="empty"):
        export_objects(src, objects, out)
    assert tree(out) == before
    assert sorted(os.listdir(tmp_path)) == ["objs", "scene.ply"]


def test_a_failed_rename_into_place_restores_the_previous_set(src, tmp_path, monkeypatch):
    """When the completed staging folder cannot be renamed onto the target, the previous set is
    moved back, the error is raised, and no staging or old folder is left."""
    out = tmp_path / "objs"
    export_objects(src, two_objects(), out)
    before = tree(out)
    real_rename = os.rename

    def rename(a, b):
        if Path(b) == out and Path(a).name.startswith(".objs.tmp-"):
            raise OSError("simulated: rename into place failed")
        real_rename(a, b)

    monkeypatch.setattr(export.os, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        export_objects(src, [("c", np.ones(N, bool))], out)
    monkeypatch.undo()
    assert tree(out) == before
    assert sorted(os.listdir(tmp_path)) == ["objs", "scene.ply"]


def test_a_failure_to_delete_the_old_copy_does_not_fail_a_finished_export(src, tmp_path, monkeypatch):
    """The new set is in place before the old copy is deleted: an error while deleting it (a file
    held open, say) is ignored and the new set stands."""
    out = tmp_path / "objs"
    export_objects(src, two_objects(), out)
    real_rmtree = shutil.rmtree

    def rmtree(path, ignore_errors=False, **kw):
        if not ignore_errors:
            raise OSError("simulated: cannot delete")
        real_rmtree(path, ignore_errors=True, **kw)

    monkeypatch.setattr(export.shutil, "rmtree", rmtree)
    index = export_objects(src, [("c", np.ones(N, bool))], out)
    monkeypatch.undo()
    assert read_index(index) == [{"file": "c.ply", "name": "c", "gaussians": N}]
    assert sorted(p.name for p in out.iterdir()) == ["c.ply", "index.json"]


def test_export_all_stages_and_moves_aside_in_hidden_folders_beside_the_target(src, tmp_path, monkeypatch):
    """Every rename stays inside the target's parent folder (same filesystem, so each is atomic),
    through hidden `.objs.tmp-*` (the new set) and `.objs.old-*` (the previous one) folders."""
    out = tmp_path / "objs"
    export_objects(src, two_objects(), out)
    renames = []
    real_rename = os.rename

    def rename(a, b):
        renames.append((Path(a), Path(b)))
        real_rename(a, b)

    monkeypatch.setattr(export.os, "rename", rename)
    export_objects(src, [("c", np.ones(N, bool))], out)
    monkeypatch.undo()
    (aside_from, aside_to), (staged, target) = renames
    assert aside_from == out and aside_to.name == "objs" and aside_to.parent.parent == tmp_path
    assert aside_to.parent.name.startswith(".objs.old-")
    assert staged.parent == tmp_path and staged.name.startswith(".objs.tmp-") and target == out
    assert sorted(os.listdir(tmp_path)) == ["objs", "scene.ply"]


def test_export_all_into_a_new_folder_renames_its_staging_folder_from_beside_it(src, tmp_path, monkeypatch):
    """With no previous set the staging folder, a hidden sibling of the target, is renamed onto it."""
    renames = []
    real_rename = os.rename
    monkeypatch.setattr(export.os, "rename", lambda a, b: (renames.append((Path(a), Path(b))), real_rename(a, b)))
    export_objects(src, two_objects(), tmp_path / "objs")
    monkeypatch.undo()
    [(staged, target)] = renames
    assert staged.parent == tmp_path and staged.name.startswith(".objs.tmp-") and target == tmp_path / "objs"
