"""Selection -> PLY: the selected rows of the input file, standard properties copied bit for bit.

Extra properties are appended only when asked for (`extra`), e.g. `object_id` (uint32) or
`feat_0..feat_{D-1}` (float32). The file is written atomically (temp file + rename) as
binary_little_endian, the only encoding splat editors read reliably; an export never writes over
its source. `export_objects` (export-all) writes its whole set or nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from splatseg.io.atomic import process_umask
from splatseg.io.ply import read_vertex_table, write_vertex_table
from splatseg.run import write_json

INDEX_NAME = "index.json"


class ExportError(ValueError):
    """An export that cannot be written (empty selection, wrong mask length)."""


def export_ply(src: Path, mask: np.ndarray, out: Path, extra: dict[str, np.ndarray] | None = None) -> int:
    """Writes rows `mask` [N] bool of the PLY `src` to `out`; returns the number of rows written.

    `extra` maps new property names to [N] arrays (taken at the same rows) appended after the
    file's own properties.
    """
    if _same_file(out, src):
        raise ExportError(f"--out {out} is the splats file the selection is taken from: refusing to write over it")
    table = read_vertex_table(src)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (len(table),):
        raise ExportError(f"selection mask must be bool [{len(table)}] for {src}, got {mask.dtype} {list(mask.shape)}")
    count = int(mask.sum())
    if count == 0:
        raise ExportError("the selection is empty: nothing to export (lower --threshold or click elsewhere)")
    rows = table[mask]
    if extra:
        for name, values in extra.items():
            if name in rows.dtype.names:
                raise ExportError(f"property {name!r} already exists in {src}")
            if len(values) != len(table):
                raise ExportError(f"extra property {name!r} has {len(values)} values for {len(table)} rows")
        dtype = rows.dtype.descr + [(name, np.asarray(v).dtype.newbyteorder("<").str) for name, v in extra.items()]
        merged = np.empty(count, dtype=dtype)
        for name in rows.dtype.names:
            merged[name] = rows[name]
        for name, values in extra.items():
            merged[name] = np.asarray(values)[mask]
        rows = merged
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_vertex_table(out, rows)
    return count


def feature_properties(features: np.ndarray) -> dict[str, np.ndarray]:
    """[N, D] features -> {"feat_0": [N], ...} float32 extra properties."""
    return {f"feat_{d}": features[:, d].astype(np.float32) for d in range(features.shape[1])}


def check_export_folder(out_dir: Path) -> None:
    """ExportError unless `out_dir` may receive an export-all set: absent, an empty folder, or a
    folder holding a previous export-all output (its index.json), which is replaced whole."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ExportError(f"--out {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / INDEX_NAME).is_file():
        raise ExportError(f"--out {out_dir} is a folder that is neither empty nor a previous export-all output "
                          f"(no {INDEX_NAME}); choose an empty or new folder")


def _replace_folder(staged: Path, out_dir: Path) -> None:
    """Moves the complete `staged` folder to `out_dir`, replacing a previous one."""
    if not out_dir.exists():
        os.rename(staged, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rename(out_dir, old / out_dir.name)  # out_dir is absent only between these two renames
    try:
        os.rename(staged, out_dir)
    except BaseException:
        os.rename(old / out_dir.name, out_dir)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def export_objects(src: Path, objects: list[tuple[str, np.ndarray]], out_dir: Path, labels: list[str | None] | None = None) -> Path:
    """One PLY per object plus `index.json` ([{file, name, gaussians, label}]); returns its path.

    `objects`: [(name, mask [N] bool)], masks need not be disjoint; names become file stems.
    All or nothing: the files are written into a temporary folder beside `out_dir`, which is
    renamed into place only when every file is written; a previous export-all folder at `out_dir`
    is replaced whole (no old PLY stays beside the new index), any other non-empty folder is
    refused (`check_export_folder`). On failure `out_dir` is left as it was.
    """
    out_dir = Path(out_dir)
    check_export_folder(out_dir)
    names = [name for name, _ in objects]
    if len(set(names)) != len(names) or any(not n or "/" in n or n.startswith(".") for n in names):
        raise ExportError(f"object names must be unique plain file stems, got {names}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        entries = []
        for i, (name, mask) in enumerate(objects):
            file = f"{name}.ply"
            count = export_ply(src, mask, staged / file)
            entry = {"file": file, "name": name, "gaussians": count}
            if labels is not None and labels[i] is not None:
                entry["label"] = labels[i]
            entries.append(entry)
        write_json(staged / INDEX_NAME, {"source": str(Path(src).resolve()), "objects": entries})
        os.chmod(staged, 0o777 & ~process_umask())  # mkdtemp made it 0700
        _replace_folder(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return out_dir / INDEX_NAME


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def read_index(path: Path) -> list[dict]:
    """The object list of an export-all index.json."""
    return json.loads(Path(path).read_text())["objects"]
