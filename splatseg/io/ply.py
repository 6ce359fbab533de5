"""Reference 3DGS splat PLY <-> `Splats`, raw vertex tables, and atomic file writes.

File layout (docs/FORMATS.md): one `vertex` element with the float32 properties
`x y z nx ny nz f_dc_0..2 f_rest_0..R opacity scale_0..2 rot_0..3`, where the R+1 `f_rest_*` values
are channel-major (all coefficients of red, then green, then blue) and R+1 = 3*((d+1)^2-1) for SH
degree d in 0..3. Values are raw (logit opacity, log scales, un-normalised w x y z quaternion);
activations live in `splatseg.types.Splats`.

Reading accepts ascii, big- and little-endian files, any numeric property type and extra elements
(ignored). Writing always produces `binary_little_endian`, atomically (temporary file + os.replace).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.recfunctions import structured_to_unstructured
from plyfile import PlyData, PlyElement, PlyParseError

from splatseg.io.atomic import atomic_write  # noqa: F401 - re-exported for older imports
from splatseg.types import Splats, num_sh_bases

__all__ = [
    "PlyFormatError",
    "atomic_write",
    "read_ply",
    "write_ply",
    "read_vertex_table",
    "write_vertex_table",
    "validate_vertex_table",
    "splats_from_table",
    "table_from_splats",
    "standard_property_names",
    "PlyHeader",
    "read_ply_header",
    "read_point_cloud",
]


class PlyFormatError(ValueError):
    """A splat PLY that cannot be read (or a table that cannot be written); one-line message."""


MEANS = ("x", "y", "z")
NORMALS = ("nx", "ny", "nz")
F_DC = ("f_dc_0", "f_dc_1", "f_dc_2")
OPACITY = "opacity"
SCALES = ("scale_0", "scale_1", "scale_2")
ROTS = ("rot_0", "rot_1", "rot_2", "rot_3")
REQUIRED = (*MEANS, *F_DC, OPACITY, *SCALES, *ROTS)
FINITE_CHECKED = (*MEANS, OPACITY, *SCALES, *ROTS)
_F_REST_RE = re.compile(r"f_rest_(\d+)$")
_VALID_F_REST = {3 * (num_sh_bases(d) - 1): d for d in range(4)}  # {0: 0, 9: 1, 24: 2, 45: 3}
# Scalar types a PLY file can hold (numpy kind + itemsize), i.e. plyfile's type table.
_PLY_SCALAR = {("i", 1), ("u", 1), ("i", 2), ("u", 2), ("i", 4), ("u", 4), ("f", 4), ("f", 8)}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _f_rest_names(names: list[str], where: str) -> list[str]:
    """The `f_rest_*` names among `names` in index order; checks they are f_rest_0..R (R+1 = 0, 9,
    24 or 45, i.e. SH degree 0..3) with no gap or duplicate index."""
    by_index: dict[int, str] = {}
    for name in names:
        if m := _F_REST_RE.match(name):
            i = int(m.group(1))
            if i in by_index:
                raise PlyFormatError(f"{where}: duplicate f_rest index {i} ({by_index[i]!r}, {name!r})")
            by_index[i] = name
    for i in range(len(by_index)):
        if i not in by_index:
            raise PlyFormatError(f"{where}: f_rest properties are not contiguous (missing f_rest_{i})")
    if len(by_index) not in _VALID_F_REST:
        raise PlyFormatError(
            f"{where}: {len(by_index)} f_rest properties match no SH degree 0..3 (expected 0, 9, 24 or 45)"
        )
    return [by_index[i] for i in range(len(by_index))]


def standard_property_names(table: np.ndarray) -> list[str]:
    """Names of the reference-layout properties present in `table`, in reference order
    (`x y z [nx ny nz] f_dc_0..2 f_rest_0..R opacity scale_0..2 rot_0..3`)."""
    names = list(table.dtype.names or ())
    normals = list(NORMALS) if all(n in names for n in NORMALS) else []
    return [*MEANS, *normals, *F_DC, *_f_rest_names(names, "table"), OPACITY, *SCALES, *ROTS]


def validate_vertex_table(table: np.ndarray, where: str = "vertex table") -> None:
    """Check that `table` (a 1-D structured array) is a valid splat vertex table: every required
    property present as a numeric scalar, a valid f_rest count, finite means/scales/opacity/rot and no
    all-zero quaternion. Raises PlyFormatError naming `where` and the problem."""
    if not isinstance(table, np.ndarray) or table.dtype.names is None or table.ndim != 1:
        raise PlyFormatError(f"{where}: expected a 1-D numpy structured array")
    names = list(table.dtype.names)
    for name in names:
        dt = table.dtype.fields[name][0]
        if dt.shape != () or (dt.kind, dt.itemsize) not in _PLY_SCALAR:
            raise PlyFormatError(f"{where}: property {name!r} has type {dt} which a PLY scalar cannot hold")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise PlyFormatError(f"{where}: missing required property {missing[0]!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    _f_rest_names(names, where)
    bad = []
    for name in FINITE_CHECKED:
        col = table[name]
        if col.dtype.kind == "f":
            n_bad = int(np.count_nonzero(~np.isfinite(col)))
            if n_bad:
                bad.append(f"{name} ({n_bad})")
    if bad:
        raise PlyFormatError(f"{where}: NaN/inf values in {', '.join(bad)}")
    zero = np.ones(len(table), dtype=bool)
    for name in ROTS:
        zero &= table[name] == 0
    if zero.any():
        rows = np.flatnonzero(zero)
        raise PlyFormatError(f"{where}: {len(rows)} rows have an all-zero quaternion rot_0..3 (first: row {rows[0]})")


# --------------------------------------------------------------------------------------------
# Header (read by hand so that sizes can be checked before plyfile allocates anything)
# --------------------------------------------------------------------------------------------

_PLY_TYPE_SIZES = {
    "char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
    "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8,
}
_MAX_HEADER_BYTES = 1 << 20


@dataclass
class PlyHeader:
    """A PLY header as written: `format` ("ascii", "binary_little_endian", "binary_big_endian"),
    `elements` [(name, count, [(property, type)])] in file order (a list property's type is
    "list <count type> <item type>"), `comments`, and `data_offset` (bytes before the data)."""

    format: str
    elements: list[tuple[str, int, list[tuple[str, str]]]]
    comments: list[str]
    data_offset: int

    def element(self, name: str) -> tuple[str, int, list[tuple[str, str]]] | None:
        return next((e for e in self.elements if e[0] == name), None)


def read_ply_header(path: str | os.PathLike) -> PlyHeader:
    """Parse the header of the PLY file `path` and check that the data the header announces fits in
    the file (binary: exact row sizes; ascii: at least two bytes per value), so that no reader
    allocates rows the file cannot hold. Raises PlyFormatError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise PlyFormatError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER_BYTES)
    if head[:4] not in (b"ply\n", b"ply\r"):
        raise PlyFormatError(f"{path}: not a PLY file (no 'ply' magic line)")
    end = re.search(rb"end_header\r?\n", head)
    if end is None:
        raise PlyFormatError(f"{path}: no end_header within the first {_MAX_HEADER_BYTES} bytes")
    try:
        lines = head[: end.start()].decode("ascii").splitlines()[1:]
    except UnicodeDecodeError:
        raise PlyFormatError(f"{path}: the PLY header is not ASCII text") from None
    fmt, elements, comments = None, [], []
    for number, line in enumerate(lines, start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            if words:
                comments.append(line.split(None, 1)[1] if len(words) > 1 else "")
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                count = int(words[2])
                if count < 0:
                    raise ValueError
                elements.append((words[1], count, []))
            elif words[0] == "property" and elements:
                kind = " ".join(words[1:4]) if words[1] == "list" else words[1]
                name = words[4] if words[1] == "list" else words[2]
                elements[-1][2].append((name, kind))
            else:
                raise ValueError
        except (IndexError, ValueError):
            raise PlyFormatError(f"{path}: malformed PLY header line {number}: {line.strip()!r}") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PlyFormatError(f"{path}: unknown PLY format {fmt!r}")
    header = PlyHeader(fmt, elements, comments, end.end())
    available = path.stat().st_size - header.data_offset
    needed = -1 if fmt == "ascii" else 0  # the last ASCII line may lack its newline
    for name, count, props in elements:
        row = 0
        for prop, kind in props:
            base = kind.split()[1] if kind.startswith("list ") else kind
            if base not in _PLY_TYPE_SIZES:
                raise PlyFormatError(f"{path}: property {prop!r} of element {name!r} has unknown type {base!r}")
            row += 2 if fmt == "ascii" else _PLY_TYPE_SIZES[base]
        needed += count * row
        if needed > available:
            raise PlyFormatError(f"{path}: the header announces {count} {name!r} rows, more than the "
                                 f"{available} bytes of data in the file can hold (truncated or corrupt file)")
    return header


# --------------------------------------------------------------------------------------------
# Raw vertex tables
# --------------------------------------------------------------------------------------------


def read_vertex_table(path: str | os.PathLike) -> np.ndarray:
    """The `vertex` element of a splat PLY as a structured array [N], values and dtypes exactly as
    stored (ascii input parsed to native dtypes; big-endian dtypes kept), validated with
    `validate_vertex_table`. Vertex list properties (not part of any splat layout) are dropped with a
    warning; other elements are ignored. Raises PlyFormatError."""
    path = Path(path)
    read_ply_header(path)  # refuses files whose header announces more rows than they hold
    try:
        with open(path, "rb") as f:
            ply = PlyData.read(f, mmap="c")
            if "vertex" not in ply:
                names = [e.name for e in ply.elements]
                raise PlyFormatError(f"{path}: no 'vertex' element (elements: {names or 'none'})")
            element = ply["vertex"]
            data = element.data
            scalar = [n for n in data.dtype.names if data.dtype.fields[n][0].kind != "O"]
            dropped = [n for n in data.dtype.names if n not in scalar]
            # Copy into a packed, ordinary ndarray so nothing refers to the memory map.
            packed = np.dtype([(n, data.dtype.fields[n][0]) for n in scalar])
            out = np.array(data, dtype=packed) if data.dtype == packed else _copy_fields(data, packed)
            del data, element, ply
    except PlyFormatError:
        raise
    except PlyParseError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "expected 'ply'" in msg:
            raise PlyFormatError(f"{path}: not a PLY file") from None
        if "early end-of-file" in msg or "early end-of-line" in msg:
            raise PlyFormatError(f"{path}: truncated data ({msg})") from None
        raise PlyFormatError(f"{path}: malformed PLY ({msg})") from None
    except (ValueError, UnicodeDecodeError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PlyFormatError(f"{path}: unreadable PLY ({reason})") from None
    if dropped:
        warnings.warn(f"{path}: ignoring vertex list properties {dropped}", stacklevel=2)
    validate_vertex_table(out, str(path))
    return out


def _little_endian(dtype: np.dtype) -> np.dtype:
    """The same scalar type in little-endian byte order."""
    return dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype


def write_vertex_table(path: str | os.PathLike, table: np.ndarray, comments: list[str] | None = None) -> None:
    """Write `table` (a validated splat vertex table [N]) as a binary_little_endian PLY with a single
    `vertex` element whose properties are the table's fields, in their order and with their value
    types (big-endian fields are byte-swapped, values unchanged). Atomic."""
    path = Path(path)
    validate_vertex_table(table, f"{path} (table to write)")
    le = np.dtype([(n, _little_endian(table.dtype.fields[n][0])) for n in table.dtype.names])
    data = table if table.dtype == le else _copy_fields(table, le)
    element = PlyElement.describe(data, "vertex")
    ply = PlyData([element], text=False, byte_order="<", comments=list(comments or []))
    with atomic_write(path) as f:
        ply.write(f)


def _copy_fields(table: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Field-by-field copy of `table` into a packed array of `dtype` (value-preserving casts)."""
    out = np.empty(len(table), dtype=dtype)
    for n in dtype.names:
        out[n] = table[n]
    return out


# --------------------------------------------------------------------------------------------
# Splats <-> table
# --------------------------------------------------------------------------------------------


def _stack(table: np.ndarray, names) -> np.ndarray:
    """float32 [N, len(names)] of the named columns (bit-exact for float32 columns)."""
    return np.ascontiguousarray(structured_to_unstructured(table[list(names)], dtype=np.float32))


def splats_from_table(table: np.ndarray) -> Splats:
    """`Splats` (float32 raw values) from a validated vertex table. f_rest (channel-major
    [N, 3*(B-1)]) becomes shN [N, B-1, 3]; `nx ny nz` become normals (None if absent); every other
    property goes to `extra` in native byte order with its stored type."""
    f_rest = _f_rest_names(list(table.dtype.names), "table")
    n = len(table)
    rest = _stack(table, f_rest).reshape(n, 3, len(f_rest) // 3).transpose(0, 2, 1)
    names = set(table.dtype.names)
    has_normals = all(k in names for k in NORMALS)
    standard = set(REQUIRED) | set(f_rest) | (set(NORMALS) if has_normals else set())
    extra = {}
    for name in table.dtype.names:
        if name not in standard:
            col = table[name]
            extra[name] = np.ascontiguousarray(col, dtype=col.dtype.newbyteorder("="))
    return Splats(
        means=_stack(table, MEANS),
        quats=_stack(table, ROTS),
        log_scales=_stack(table, SCALES),
        opacity_logits=np.ascontiguousarray(table[OPACITY], dtype=np.float32),
        sh0=_stack(table, F_DC)[:, None, :],
        shN=np.ascontiguousarray(rest),
        normals=_stack(table, NORMALS) if has_normals else None,
        extra=extra,
    )


def table_from_splats(splats: Splats) -> np.ndarray:
    """Structured array [N] in the reference layout (little-endian float32 standard properties,
    normals zeros when `splats.normals` is None), followed by `splats.extra` in insertion order
    with their own types. Raises PlyFormatError on shape mismatches or clashing names."""
    n = len(splats)
    degree = splats.sh_degree
    if degree > 3:
        raise PlyFormatError(f"SH degree {degree} is not supported by the reference layout (0..3)")
    rest_count = 3 * (num_sh_bases(degree) - 1)
    f_rest = [f"f_rest_{i}" for i in range(rest_count)]
    expected = {
        "means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,),
        "sh0": (n, 1, 3), "shN": (n, rest_count // 3, 3),
    }
    for attr, shape in expected.items():
        if getattr(splats, attr).shape != shape:
            raise PlyFormatError(f"Splats.{attr} has shape {getattr(splats, attr).shape}, expected {shape}")
    if splats.normals is not None and splats.normals.shape != (n, 3):
        raise PlyFormatError(f"Splats.normals has shape {splats.normals.shape}, expected {(n, 3)}")
    standard = [*MEANS, *NORMALS, *F_DC, *f_rest, OPACITY, *SCALES, *ROTS]
    fields = [(name, "<f4") for name in standard]
    for name, col in splats.extra.items():
        if name in standard:
            raise PlyFormatError(f"Splats.extra property {name!r} clashes with a standard property")
        col = np.asarray(col)
        if col.shape != (n,):
            raise PlyFormatError(f"Splats.extra[{name!r}] has shape {col.shape}, expected {(n,)}")
        fields.append((name, _little_endian(col.dtype)))
    table = np.empty(n, dtype=fields)

    def put(names, values: np.ndarray) -> None:
        for i, name in enumerate(names):
            table[name] = values[:, i]

    put(MEANS, splats.means)
    put(NORMALS, np.zeros((n, 3), np.float32) if splats.normals is None else splats.normals)
    put(F_DC, splats.sh0[:, 0, :])
    put(f_rest, np.asarray(splats.shN).transpose(0, 2, 1).reshape(n, rest_count))
    table[OPACITY] = splats.opacity_logits
    put(SCALES, splats.log_scales)
    put(ROTS, splats.quats)
    for name, col in splats.extra.items():
        table[name] = col
    return table


def read_ply(path: str | os.PathLike) -> Splats:
    """Read a splat PLY (reference layout, SH degree 0..3) into raw-valued float32 `Splats`.
    Raises PlyFormatError with a one-line message naming the file and the problem."""
    return splats_from_table(read_vertex_table(path))


def write_ply(path: str | os.PathLike, splats: Splats) -> None:
    """Write `splats` as a binary_little_endian reference-layout PLY (extras after the standard
    properties), atomically. Bit-exact round trip with `read_ply` for float32 inputs."""
    write_vertex_table(path, table_from_splats(splats))


def read_point_cloud(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """A point-cloud PLY (e.g. nerfstudio's sparse_pc.ply, COLMAP's export): float32 [P, 3] `x y z`
    and uint8 [P, 3] `red green blue` (None when absent; float colours in [0, 1] are scaled).
    Raises PlyFormatError in one line."""
    path = Path(path)
    read_ply_header(path)
    try:
        with open(path, "rb") as f:
            ply = PlyData.read(f, mmap="c")
            if "vertex" not in ply:
                raise PlyFormatError(f"{path}: no 'vertex' element")
            data = ply["vertex"].data
            names = data.dtype.names or ()
            if not all(k in names for k in MEANS):
                raise PlyFormatError(f"{path}: a point cloud needs x, y, z properties")
            points = np.ascontiguousarray(structured_to_unstructured(data[list(MEANS)], dtype=np.float32))
            colors = None
            if all(k in names for k in ("red", "green", "blue")):
                rgb = structured_to_unstructured(data[["red", "green", "blue"]], dtype=np.float64)
                if data.dtype.fields["red"][0].kind == "f":
                    rgb = rgb * 255.0
                colors = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
            del data, ply
    except PlyFormatError:
        raise
    except (PlyParseError, ValueError, OSError) as e:
        raise PlyFormatError(f"{path}: unreadable point cloud ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not np.isfinite(points).all():
        raise PlyFormatError(f"{path}: NaN/inf point coordinates")
    return points, colors
