"""Selection -> splat file, in the format the output's suffix names (`io.formats.output_format`).

- `.ply` (the default): when the run's splats file is a reference PLY, the selected rows of that
  file are copied as they are (every property, same order, bit for bit); when it is another format
  (compressed PLY, `.splat`, `.spz`), the decoded rows are written in the reference layout.
- `.compressed.ply`, `.splat`, `.spz`: the selected rows through `io.formats.write_splats`
  (the codec's precision; what the format cannot hold is reported in `ExportResult.notes`).
Extra properties are appended only when asked for (`extra`), e.g. `object_id` (uint32) or
`feat_0..feat_{D-1}` (float32), and only a `.ply` can hold them. Files are written atomically as
binary_little_endian, the only PLY encoding splat editors read reliably; an unknown suffix, an empty
selection or a wrong mask is refused before anything is written; an export never writes over its
source. `export_objects` (export-all) writes its whole set or nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splatseg.io.atomic import process_umask, same_file
from splatseg.io.formats import detect_format, output_format, read_splats, write_splats
from splatseg.io.ply import read_vertex_table, splats_from_table, table_from_splats, write_vertex_table
from splatseg.run import write_json

INDEX_NAME = "index.json"


class ExportError(ValueError):
    """An export that cannot be written (empty selection, wrong mask length, extras in a format
    without properties)."""


@dataclass
class ExportResult:
    """What one export wrote: `count` rows to `path` in `format`; `notes` on what it dropped."""

    path: Path
    count: int
    format: str
    notes: list[str] = field(default_factory=list)


class ExportSource:
    """The run's splats file, read once for any number of exports. A reference PLY is kept as its
    raw vertex table (for bit-exact row copies), any other format as decoded `Splats`."""

    def __init__(self, src: Path):
        self.path = Path(src)
        self.format = detect_format(self.path)
        self.table = read_vertex_table(self.path) if self.format == "ply" else None
        self.splats = read_splats(self.path) if self.table is None else None

    def __len__(self) -> int:
        return len(self.table) if self.table is not None else len(self.splats)

    def export(self, mask: np.ndarray, out: Path, extra: dict[str, np.ndarray] | None = None) -> ExportResult:
        """Writes rows `mask` [N] bool to `out` (format by suffix); `extra` maps new property names
        to [N] arrays appended after the file's own properties (`.ply` only)."""
        out = Path(out)
        if same_file(out, self.path):
            raise ExportError(f"--out {out} is the splats file the selection is taken from: refusing to write over it")
        fmt = output_format(out)
        n = len(self)
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (n,):
            raise ExportError(f"selection mask must be bool [{n}] for {self.path}, got {mask.dtype} {list(mask.shape)}")
        count = int(mask.sum())
        if count == 0:
            raise ExportError("the selection is empty: nothing to export (lower --threshold or click elsewhere)")
        if extra and fmt != "ply":
            raise ExportError(f"{out}: extra properties ({', '.join(extra)}) need a .ply output; {fmt} has no room for them")
        for name, values in (extra or {}).items():
            if len(values) != n:
                raise ExportError(f"extra property {name!r} has {len(values)} values for {n} rows")
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "ply":
            rows = self.table[mask] if self.table is not None else table_from_splats(self.splats.subset(mask))
            write_vertex_table(out, _append(rows, extra, mask, self.path) if extra else rows)
            notes = []
        else:
            rows = splats_from_table(self.table[mask]) if self.table is not None else self.splats.subset(mask)
            notes = write_splats(out, rows)
        return ExportResult(out, count, fmt, notes)


def _append(rows: np.ndarray, extra: dict[str, np.ndarray], mask: np.ndarray, src: Path) -> np.ndarray:
    for name in extra:
        if name in rows.dtype.names:
            raise ExportError(f"property {name!r} already exists in {src}")
    dtype = rows.dtype.descr + [(name, np.asarray(v).dtype.newbyteorder("<").str) for name, v in extra.items()]
    merged = np.empty(len(rows), dtype=dtype)
    for name in rows.dtype.names:
        merged[name] = rows[name]
    for name, values in extra.items():
        merged[name] = np.asarray(values)[mask]
    return merged


def export_selection(src: Path, mask: np.ndarray, out: Path, extra: dict[str, np.ndarray] | None = None) -> ExportResult:
    """Writes rows `mask` [N] bool of the splats file `src` to `out`, in the format of `out`'s
    suffix (module docstring)."""
    return ExportSource(src).export(mask, out, extra)


def export_ply(src: Path, mask: np.ndarray, out: Path, extra: dict[str, np.ndarray] | None = None) -> int:
    """`export_selection`, returning the number of rows written (kept for existing callers)."""
    return export_selection(src, mask, out, extra).count


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


def export_objects(src: Path, objects: list[tuple[str, np.ndarray]], out_dir: Path, labels: list[str | None] | None = None,
                   suffix: str = ".ply") -> Path:
    """One file per object (`<name><suffix>`, format by suffix) plus `index.json`
    ([{file, name, gaussians, label}]); returns its path.

    `objects`: [(name, mask [N] bool)], masks need not be disjoint; names become file stems.
    All or nothing: the files are written into a temporary folder beside `out_dir`, which is
    renamed into place only when every file is written; a previous export-all folder at `out_dir`
    is replaced whole (no old PLY stays beside the new index), any other non-empty folder is
    refused (`check_export_folder`). On failure `out_dir` is left as it was.
    """
    out_dir = Path(out_dir)
    output_format(f"object{suffix}")  # an unknown suffix is refused before anything is written
    check_export_folder(out_dir)
    names = [name for name, _ in objects]
    if len(set(names)) != len(names) or any(not n or "/" in n or n.startswith(".") for n in names):
        raise ExportError(f"object names must be unique plain file stems, got {names}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    source = ExportSource(src)
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        entries = []
        for i, (name, mask) in enumerate(objects):
            file = f"{name}{suffix}"
            count = source.export(mask, staged / file).count
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


def read_index(path: Path) -> list[dict]:
    """The object list of an export-all index.json."""
    return json.loads(Path(path).read_text())["objects"]
