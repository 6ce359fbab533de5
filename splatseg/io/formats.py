"""Every splat file format splatseg reads and writes, behind one loader: `read_splats`, `write_splats`.

| format id        | files                                  | codec                                      |
| ---------------- | -------------------------------------- | ------------------------------------------ |
| `ply`            | the reference 3DGS PLY (FORMATS.md)    | `io/ply.py` (plyfile): bit-exact           |
| `compressed_ply` | SuperSplat / PlayCanvas compressed PLY | gsply (`compress_to_bytes` / `decompress_from_bytes`) |
| `splat`          | antimatter15 / Luma `.splat`           | numpy, by hand: no kept Python library reads or writes it |
| `spz`            | Niantic `.spz`, versions 2, 3 (gzip), 4 (zstd) | gsply (`read_spz` / `write_spz`), plus the RUB <-> RDF flip |

Formats are recognised by their content (`detect_format`): a PLY header with a `chunk` element and
`packed_*` vertex properties is a compressed PLY whatever its name; gzip'd or raw `NGSP` magic is SPZ;
`.splat` has no header, so it is recognised by its suffix and a size that is a multiple of 32 bytes.
Output formats are chosen by suffix (`output_format`): `.compressed.ply`, `.ply`, `.splat`, `.spz`.

What each codec keeps (the tolerances the tests hold it to):
- compressed PLY: chunks of 256 splats; position and log-scale 11/10/11 bits of the chunk's range,
  colour (sh0 as rgb) and opacity 8 bits, rotation smallest-three 2+10+10+10 bits, SH 8 bits in
  [-4, 4]; normals and extra properties are not stored.
- `.splat`: position and scale float32 (scale linear), rgb and opacity 8 bits, each quaternion
  component 8 bits ((q / |q|) * 128 + 128); SH degree 0 only; no normals, no extras.
- SPZ: position 24-bit fixed point (12 fractional bits, fewer for scenes wider than +-2048 units),
  log-scale 8 bits in [-10, 6), sh0 8 bits in [-3.3, 3.3], opacity 8 bits, rotation smallest-three
  (v3+) or 8-bit xyz (v2), SH 8 bits in [-1, 1). The spec stores splats in a right-up-back (RUB) frame,
  PLY in right-down-front (RDF); like Niantic's loader with `to=RDF` and splat-transform, positions,
  rotations and SH are flipped on the way in and out, so a PLY -> SPZ -> PLY trip keeps the frame.

Bad input raises `SplatFormatError` (a ValueError) with one line naming the file and the problem;
a header that announces more rows than the file could hold is refused before anything is allocated.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from splatseg.io.atomic import atomic_write
from splatseg.io.ply import PlyFormatError, PlyHeader, read_ply, read_ply_header, write_ply
from splatseg.types import SH_C0, Splats

__all__ = [
    "FORMATS",
    "OUTPUT_SUFFIXES",
    "SplatFormatError",
    "detect_format",
    "output_format",
    "read_splats",
    "write_splats",
]

FORMATS = ("ply", "compressed_ply", "splat", "spz")
"""Format ids `detect_format` returns."""

OUTPUT_SUFFIXES = {".ply": "ply", ".compressed.ply": "compressed_ply", ".splat": "splat", ".spz": "spz"}
"""Output file suffix -> format id (`.compressed.ply` is matched before `.ply`)."""


class SplatFormatError(PlyFormatError):
    """A splat file that cannot be read or written; one-line message naming the file and problem.
    (A PlyFormatError, hence a ValueError, so every caller's existing error handling applies.)"""


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_NGSP_MAGIC = b"NGSP"
_SPLAT_ROW_BYTES = 32
_UNSUPPORTED = {
    ".ksplat": "a .ksplat (mkkellogg) file",
    ".sog": "a SOG file",
    ".lcc": "an LCC file",
    ".glb": "a glTF file",
}


def _is_compressed_header(header: PlyHeader) -> bool:
    vertex = header.element("vertex")
    return header.element("chunk") is not None and vertex is not None and any(
        name.startswith("packed_") for name, _ in vertex[2])


def output_format(path: str | os.PathLike) -> str:
    """Format id for writing to `path`, from its suffix; SplatFormatError for any other suffix."""
    name = Path(path).name.lower()
    for suffix in sorted(OUTPUT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return OUTPUT_SUFFIXES[suffix]
    raise SplatFormatError(f"{path}: unknown splat file suffix {Path(path).suffix or '(none)'!r} "
                           f"(write .ply, .compressed.ply, .splat or .spz)")


def detect_format(path: str | os.PathLike) -> str:
    """The format id (`FORMATS`) of the splat file `path`, from its content (and, for headerless
    `.splat`, its suffix and size). SplatFormatError in one line for anything else."""
    path = Path(path)
    if not path.exists():
        raise SplatFormatError(f"{path}: no such file")
    if path.is_dir():
        raise SplatFormatError(f"{path}: is a folder, not a splat file")
    if not path.is_file():
        raise SplatFormatError(f"{path}: not a regular file")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] in (b"ply\n", b"ply\r"):
        return "compressed_ply" if _is_compressed_header(read_ply_header(path)) else "ply"
    if head[:2] == _GZIP_MAGIC:
        if _gunzip_prefix(path.read_bytes(), 4) == _NGSP_MAGIC:
            return "spz"
        raise SplatFormatError(f"{path}: a gzip file that is not SPZ (no NGSP magic inside)")
    if head[:4] == _NGSP_MAGIC:
        return "spz"
    suffix = path.suffix.lower()
    if suffix == ".splat":
        size = path.stat().st_size
        if size == 0 or size % _SPLAT_ROW_BYTES:
            raise SplatFormatError(f"{path}: a .splat file must hold a whole number of 32-byte rows, this one has {size} bytes")
        return "splat"
    if suffix in _UNSUPPORTED or head[:2] == b"PK":
        what = _UNSUPPORTED.get(suffix, "a zip archive (SOG?)")
        raise SplatFormatError(f"{path}: {what}, which splatseg does not read; convert it first, e.g. "
                               f"`splat-transform {path.name} scene.ply`")
    raise SplatFormatError(f"{path}: not a splat file splatseg reads (reference or compressed PLY, .splat, .spz)")


def _gunzip_prefix(raw: bytes, size: int) -> bytes:
    """The first `size` decompressed bytes of gzip data (nothing more is inflated)."""
    try:
        return zlib.decompressobj(wbits=31).decompress(raw, size)
    except zlib.error:
        return b""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_splats(path: str | os.PathLike) -> Splats:
    """Read any splat file splatseg accepts into raw-valued float32 `Splats` (see `types.Splats`).
    Reference PLYs keep every value bit for bit and their extra properties; the other formats
    give the values their codec stores (module docstring). SplatFormatError / PlyFormatError."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "ply":
        splats = read_ply(path)
    elif fmt == "compressed_ply":
        splats = _read_compressed_ply(path)
    elif fmt == "splat":
        splats = _read_splat(path)
    else:
        splats = _read_spz(path)
    if fmt != "ply":
        _check_decoded(splats, path)
    return splats


def _check_decoded(splats: Splats, path: Path) -> None:
    for name in ("means", "log_scales", "opacity_logits", "quats"):
        bad = int(np.count_nonzero(~np.isfinite(getattr(splats, name)).reshape(len(splats), -1).all(axis=1)))
        if bad:
            raise SplatFormatError(f"{path}: {bad} rows decode to NaN/inf {name}")


_CHUNK_PROPS = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
                "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z")
_CHUNK_COLOUR_PROPS = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
_PACKED_PROPS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
_CHUNK_SIZE = 256


def _read_compressed_ply(path: Path) -> Splats:
    """PlayCanvas compressed PLY: the layout is checked here (PlayCanvas' own reader accepts 12 or
    18 chunk properties; gsply only 18), then the rows are decoded by gsply."""
    import gsply

    header = read_ply_header(path)
    if header.format != "binary_little_endian":
        raise SplatFormatError(f"{path}: a compressed PLY must be binary_little_endian, not {header.format}")
    names = [e[0] for e in header.elements]
    if names not in (["chunk", "vertex"], ["chunk", "vertex", "sh"]):
        raise SplatFormatError(f"{path}: compressed PLY elements must be chunk, vertex[, sh]; found {names}")
    _, num_chunks, chunk_props = header.element("chunk")
    _, n, vertex_props = header.element("vertex")
    chunk_names = tuple(p for p, _ in chunk_props)
    if chunk_names not in (_CHUNK_PROPS, _CHUNK_PROPS + _CHUNK_COLOUR_PROPS) or any(t not in ("float", "float32") for _, t in chunk_props):
        raise SplatFormatError(f"{path}: unexpected compressed PLY chunk properties {list(chunk_names)}")
    if tuple(p for p, _ in vertex_props) != _PACKED_PROPS or any(t not in ("uint", "uint32") for _, t in vertex_props):
        raise SplatFormatError(f"{path}: compressed PLY vertex properties must be uint {', '.join(_PACKED_PROPS)}")
    if num_chunks != math.ceil(n / _CHUNK_SIZE):
        raise SplatFormatError(f"{path}: {num_chunks} chunks for {n} splats (expected {math.ceil(n / _CHUNK_SIZE)})")
    sh_props: list[tuple[str, str]] = []
    if "sh" in names:
        _, sh_rows, sh_props = header.element("sh")
        expected = [f"f_rest_{i}" for i in range(len(sh_props))]
        if (sh_rows != n or len(sh_props) not in (9, 24, 45) or [p for p, _ in sh_props] != expected
                or any(t not in ("uchar", "uint8") for _, t in sh_props)):
            raise SplatFormatError(f"{path}: compressed PLY sh element must hold {n} rows of uchar f_rest_0..8/23/44")
    with open(path, "rb") as f:
        f.seek(header.data_offset)
        chunks = np.fromfile(f, dtype="<f4", count=num_chunks * len(chunk_names)).reshape(num_chunks, len(chunk_names))
        packed = np.fromfile(f, dtype="<u4", count=n * 4).reshape(n, 4)
        sh = np.fromfile(f, dtype=np.uint8, count=n * len(sh_props)).reshape(n, len(sh_props))
    if len(chunk_names) == len(_CHUNK_PROPS):  # colours stored as plain 8-bit rgb: bounds 0..1
        chunks = np.concatenate([chunks, np.zeros((num_chunks, 3), np.float32), np.ones((num_chunks, 3), np.float32)], axis=1)
    if n == 0:
        return _empty_splats(len(sh_props) // 3)
    # gsply decodes a canonical (18-property) file held in memory.
    lines = ["ply", "format binary_little_endian 1.0", f"element chunk {num_chunks}",
             *(f"property float {p}" for p in _CHUNK_PROPS + _CHUNK_COLOUR_PROPS),
             f"element vertex {n}", *(f"property uint {p}" for p in _PACKED_PROPS)]
    if sh_props:
        lines += [f"element sh {n}", *(f"property uchar f_rest_{i}" for i in range(len(sh_props)))]
    blob = ("\n".join(lines) + "\nend_header\n").encode() + chunks.astype("<f4").tobytes() + packed.tobytes() + sh.tobytes()
    try:
        data = gsply.decompress_from_bytes(blob)
    except (ValueError, IndexError) as e:
        raise SplatFormatError(f"{path}: cannot decode compressed PLY ({_first_line(e)})") from None
    shN = np.zeros((n, 0, 3), np.float32) if not sh_props else data.shN
    return _splats(data.means, data.quats, data.scales, data.opacities, data.sh0, shN)


_SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
assert _SPLAT_DTYPE.itemsize == _SPLAT_ROW_BYTES
_OPACITY_EPS = 1e-6


def _read_splat(path: Path) -> Splats:
    """antimatter15 `.splat`: 32-byte rows (position f32x3, linear scale f32x3, rgba u8x4,
    quaternion w x y z as u8x4 = q * 128 + 128), no header."""
    rows = np.fromfile(path, dtype=_SPLAT_DTYPE)
    scale = rows["scale"].astype(np.float64)
    bad = int(np.count_nonzero(~(np.isfinite(scale) & (scale > 0)).all(axis=1)))
    if bad:
        raise SplatFormatError(f"{path}: {bad} rows have a scale that is not a positive finite number")
    rgba = rows["rgba"].astype(np.float64) / 255.0
    alpha = np.clip(rgba[:, 3], _OPACITY_EPS, 1.0 - _OPACITY_EPS)
    quats = (rows["rot"].astype(np.float64) - 128.0) / 128.0
    zero = ~quats.any(axis=1)
    quats[zero] = (1.0, 0.0, 0.0, 0.0)
    return _splats(rows["position"], quats, np.log(scale), np.log(alpha / (1.0 - alpha)),
                   (rgba[:, :3] - 0.5) / SH_C0, np.zeros((len(rows), 0, 3)))


_MAX_INFLATE_RATIO = 1032
"""Deflate cannot expand input more than ~1032:1; a header claiming a payload beyond that ratio
(of the file's size) cannot be real and is refused before decompression. The same bound is applied
to SPZ v4's zstd streams: quantised splat data never compresses anywhere near that well."""
_SPZ_SH_DIM = {0: 0, 1: 3, 2: 8, 3: 15}
# RUB <-> RDF (its own inverse): x kept, y and z negated. Niantic's coordinateConverter gives the
# sign of each SH coefficient (degree 1..3, in spz / gsplat coefficient order) under that flip.
_FLIP_POSITION = np.array([1.0, -1.0, -1.0], np.float32)
_FLIP_QUAT_WXYZ = np.array([1.0, 1.0, -1.0, -1.0], np.float32)
_FLIP_SH = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], np.float32)


def _spz_header(path: Path, raw: bytes) -> tuple[int, int, int, int]:
    """(version, num_points, sh_degree, payload bytes) from an SPZ file's header, checked."""
    if raw[:2] == _GZIP_MAGIC:
        head = _gunzip_prefix(raw, 16)
        if len(head) < 16:
            raise SplatFormatError(f"{path}: truncated SPZ header")
        magic, version, n, degree, _frac, _flags, _ = struct.unpack("<4sIIBBBB", head)
    else:
        if len(raw) < 32:
            raise SplatFormatError(f"{path}: truncated SPZ header")
        magic, version, n, degree = struct.unpack_from("<4sIIB", raw)
    if magic != _NGSP_MAGIC:
        raise SplatFormatError(f"{path}: not an SPZ file (no NGSP magic)")
    if version == 1:
        raise SplatFormatError(f"{path}: SPZ version 1 (float16 positions) is not supported; re-save it with a current SPZ writer")
    if version not in (2, 3, 4) or (version == 4) == (raw[:2] == _GZIP_MAGIC):
        raise SplatFormatError(f"{path}: unsupported SPZ version {version}")
    if degree not in _SPZ_SH_DIM:
        raise SplatFormatError(f"{path}: SPZ SH degree {degree} is not 0..3")
    rot = 3 if version == 2 else 4
    payload = n * (9 + 1 + 3 + 3 + rot + 3 * _SPZ_SH_DIM[degree])
    if payload > _MAX_INFLATE_RATIO * len(raw) + 4096:
        raise SplatFormatError(f"{path}: the SPZ header announces {n} splats, more than a {len(raw)}-byte file can hold")
    return version, n, degree, payload


def _read_spz(path: Path) -> Splats:
    import gsply

    raw = path.read_bytes()
    _version, n, degree, _ = _spz_header(path, raw)
    if n == 0:
        return _empty_splats(_SPZ_SH_DIM[degree])
    try:
        data = gsply.read_spz(path)
    except (ValueError, OSError, EOFError, zlib.error) as e:
        raise SplatFormatError(f"{path}: cannot decode SPZ ({_first_line(e)})") from None
    shN = np.zeros((n, 0, 3), np.float32) if data.shN is None else np.asarray(data.shN)
    means = data.means * _FLIP_POSITION
    quats = data.quats * _FLIP_QUAT_WXYZ
    shN = shN * _FLIP_SH[: shN.shape[1], None]
    return _splats(means, quats, data.scales, data.opacities, data.sh0, shN)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_splats(path: str | os.PathLike, splats: Splats) -> list[str]:
    """Write `splats` to `path` in the format its suffix names (`output_format`), atomically
    (nothing is left at `path` on failure; the parent folder must exist). Returns notes on what
    the format could not keep (e.g. SH above degree 0 in `.splat`), empty for `.ply`."""
    path = Path(path)
    fmt = output_format(path)
    if fmt == "ply":
        write_ply(path, splats)
        return []
    notes = _lost_in(fmt, splats)
    if fmt == "compressed_ply":
        blob = _encode_compressed_ply(splats)
    elif fmt == "splat":
        blob = _encode_splat(splats)
    else:
        blob = _encode_spz(splats)
    with atomic_write(path) as f:
        f.write(blob)
    return notes


def _lost_in(fmt: str, splats: Splats) -> list[str]:
    notes = []
    if fmt == "splat" and splats.sh_degree > 0:
        notes.append(f".splat keeps SH degree 0 only (the source has degree {splats.sh_degree})")
    if splats.extra:
        names = list(splats.extra)
        notes.append(f"{fmt} has no room for extra properties ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''} dropped)")
    if splats.normals is not None and np.any(splats.normals):
        notes.append(f"{fmt} does not store normals (dropped)")
    return notes


def _encode_compressed_ply(splats: Splats) -> bytes:
    import gsply

    if len(splats) == 0:
        raise SplatFormatError("cannot write an empty compressed PLY (no splats)")
    shN = splats.shN if splats.shN.shape[1] else None
    return gsply.compress_to_bytes(splats.means, splats.log_scales, splats.unit_quats, splats.opacity_logits,
                                   splats.sh0[:, 0, :], shN)


def _encode_splat(splats: Splats) -> bytes:
    rows = np.empty(len(splats), dtype=_SPLAT_DTYPE)
    rows["position"] = splats.means
    rows["scale"] = splats.scales
    rgb = np.round(splats.sh0[:, 0, :].astype(np.float64) * SH_C0 * 255.0 + 127.5)
    alpha = np.round(splats.opacities.astype(np.float64) * 255.0)
    rows["rgba"] = np.clip(np.concatenate([rgb, alpha[:, None]], axis=1), 0, 255).astype(np.uint8)
    rows["rot"] = np.clip(np.round(splats.unit_quats.astype(np.float64) * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return rows.tobytes()


_SPZ_MAX_FRACTIONAL_BITS = 12


def _encode_spz(splats: Splats) -> bytes:
    """SPZ version 3 (gzip, smallest-three quaternions: what Niantic's and PlayCanvas' readers all
    read) through gsply, after the RDF -> RUB flip; fewer fractional position bits when the scene
    is wider than the 24-bit fixed point allows at 12."""
    import gsply

    if len(splats) == 0:
        raise SplatFormatError("cannot write an empty SPZ file (no splats)")
    extent = float(np.abs(splats.means).max())
    bits = _SPZ_MAX_FRACTIONAL_BITS
    while bits > 1 and extent * (1 << bits) >= (1 << 23) - 1:
        bits -= 1
    if extent * (1 << bits) >= (1 << 23) - 1:
        raise SplatFormatError(f"positions up to {extent:g} units do not fit SPZ's 24-bit fixed point")
    shN = splats.shN * _FLIP_SH[: splats.shN.shape[1], None]
    data = gsply.GSData(means=splats.means * _FLIP_POSITION, scales=splats.log_scales,
                        quats=splats.unit_quats * _FLIP_QUAT_WXYZ, opacities=splats.opacity_logits,
                        sh0=np.ascontiguousarray(splats.sh0[:, 0, :]), shN=shN if shN.shape[1] else None)
    with tempfile.TemporaryDirectory(prefix="splatseg-spz-") as tmp:
        out = Path(tmp) / "out.spz"
        gsply.write_spz(out, data, version=3, fractional_bits=bits)
        return out.read_bytes()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _splats(means, quats, log_scales, opacity_logits, sh0, shN) -> Splats:
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    sh0 = f32(sh0)
    return Splats(means=f32(means), quats=f32(quats), log_scales=f32(log_scales),
                  opacity_logits=f32(np.reshape(opacity_logits, -1)),
                  sh0=sh0.reshape(-1, 1, 3), shN=f32(shN))


def _empty_splats(sh_coeffs: int) -> Splats:
    """Zero splats with `sh_coeffs` higher-order SH coefficients per channel (0, 3, 8 or 15)."""
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    return Splats(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, 1, 3), z(0, sh_coeffs, 3))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
