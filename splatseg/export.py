"""Selection -> PLY: the selected rows of the input file, standard properties copied bit for bit.

Extra properties are appended only when asked for (`extra`), e.g. `object_id` (uint32) or
`feat_0..feat_{D-1}` (float32). The file is written atomically (temp file + rename) as
binary_little_endian, the only encoding splat editors read reliably.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from splatseg.io.ply import read_vertex_table, write_vertex_table
from splatseg.run import write_json


class ExportError(ValueError):
    """An export that cannot be written (empty selection, wrong mask length)."""


def export_ply(src: Path, mask: np.ndarray, out: Path, extra: dict[str, np.ndarray] | None = None) -> int:
    """Writes rows `mask` [N] bool of the PLY `src` to `out`; returns the number of rows written.

    `extra` maps new property names to [N] arrays (taken at the same rows) appended after the
    file's own properties.
    """
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


def export_objects(src: Path, objects: list[tuple[str, np.ndarray]], out_dir: Path, labels: list[str | None] | None = None) -> Path:
    """One PLY per object plus `index.json` ([{file, name, gaussians, label}]); returns its path.

    `objects`: [(name, mask [N] bool)], masks need not be disjoint; names become file stems.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (name, mask) in enumerate(objects):
        file = f"{name}.ply"
        count = export_ply(src, mask, out_dir / file)
        entry = {"file": file, "name": name, "gaussians": count}
        if labels is not None and labels[i] is not None:
            entry["label"] = labels[i]
        entries.append(entry)
    index = out_dir / "index.json"
    write_json(index, {"source": str(Path(src).resolve()), "objects": entries})
    return index


def read_index(path: Path) -> list[dict]:
    """The object list of an export-all index.json."""
    return json.loads(Path(path).read_text())["objects"]
