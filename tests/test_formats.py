"""Splat formats in and out: compressed PLY, .splat, .spz, read and written by splatseg and by
splat-transform (the oracle), compared value by value within each codec's stated precision."""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from conftest import require_tool
from splatseg.io.formats import SplatFormatError, detect_format, output_format, read_splats, write_splats
from splatseg.io.ply import PlyFormatError, read_ply, write_ply
from splatseg.types import SH_C0, Splats

REPO = Path(__file__).resolve().parents[1]
SPLAT_TRANSFORM = REPO / "node_modules" / ".bin" / "splat-transform"


def codec_splats(n: int = 600, degree: int = 3, seed: int = 0) -> Splats:
    """Splats whose values lie inside every codec's range (SPZ: log-scale in [-10, 6), sh0 within
    +-3.3, SH within [-1, 1); no opacity so close to 1 that splat-transform decodes it to inf), on a
    jittered 0.5-unit grid so rows can be matched by position after a writer reorders them."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(10),) * 3, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[rng.permutation(len(grid))[:n]] * 0.5
    return Splats(
        means=(grid + rng.uniform(-0.05, 0.05, (n, 3))).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=rng.uniform(-7, -1, (n, 3)).astype(np.float32),
        opacity_logits=np.clip(rng.normal(0, 2, n), -5, 5).astype(np.float32),
        sh0=rng.uniform(-1.5, 1.5, (n, 1, 3)).astype(np.float32),
        shN=rng.uniform(-0.9, 0.9, (n, (degree + 1) ** 2 - 1, 3)).astype(np.float32),
    )


# Largest error each codec may make per column (module docstring of splatseg.io.formats).
# Compressed PLY: 11/10/11 bits of a chunk's range (ranges here are at most 4.6 units, 6 log-units).
COMPRESSED = {"means": 4.6 / 1023 / 2 + 1e-5, "log_scales": 6.0 / 1023 / 2 + 1e-5, "opacities": 0.5 / 255 + 1e-5,
              "sh0": 3.0 * SH_C0 / 255 / 2 / SH_C0 + 1e-5, "shN": 1 / 64 + 1e-5, "rotation": 1e-4}
SPLAT = {"means": 0.0, "log_scales": 1e-6, "opacities": 0.5 / 255 + 1e-6, "sh0": 0.5 / 255 / SH_C0 + 1e-5,
         "rotation": 2e-4}
SPZ = {"means": 0.5 / 4096 + 1e-6, "log_scales": 0.5 / 16 + 1e-6, "opacities": 0.5 / 255 + 1e-6,
       "sh0": 0.5 / (0.15 * 255) + 1e-5, "shN": 0.5 / 128 + 1e-6, "rotation": 1e-4}
# splat-transform writes SPZ SH degree 1 with 5 bits and higher degrees with 4 bits.
SPZ_SPLAT_TRANSFORM = {**SPZ, "shN": 8.5 / 128}
SPZ_V2 = {**SPZ, "rotation": 1e-2}
# v2 stores x, y, z in 8 bits and rebuilds w = sqrt(1 - x^2 - y^2 - z^2): near w = 0 an 8-bit step of
# 1/255 in x, y, z moves w by up to ~0.09, i.e. 1 - |q.q'| up to ~0.004.


def match_rows(decoded: Splats, source: Splats) -> Splats:
    """`decoded` reordered to `source`'s rows by nearest position (writers may reorder rows)."""
    assert len(decoded) == len(source)
    idx = cKDTree(decoded.means).query(source.means)[1]
    assert len(np.unique(idx)) == len(source), "rows could not be matched one to one"
    return decoded.subset(idx)


def assert_close(decoded: Splats, source: Splats, tol: dict, sh_degree: int) -> None:
    """Every column within the codec's precision: positions, log-scales, opacity (as opacity),
    rotation (as the unit quaternion, sign-free), sh0 and the SH the format keeps."""
    b = match_rows(decoded, source)
    assert b.sh_degree == sh_degree
    for name in ("means", "log_scales", "opacities", "sh0"):
        err = float(np.abs(getattr(b, name) - getattr(source, name)).max())
        assert err <= tol[name], f"{name}: max error {err:.3g} > {tol[name]:.3g}"
    dot = np.abs((b.unit_quats.astype(np.float64) * source.unit_quats).sum(axis=1))
    assert 1 - dot.min() <= tol["rotation"], f"rotation: 1 - |q.q'| = {1 - dot.min():.3g}"
    if sh_degree:
        k = b.shN.shape[1]
        err = float(np.abs(b.shN - source.shN[:, :k]).max())
        assert err <= tol["shN"], f"shN: max error {err:.3g} > {tol['shN']:.3g}"


def splat_transform(*args) -> None:
    require_tool(SPLAT_TRANSFORM.exists(), "splat-transform (npm @playcanvas/splat-transform) not installed")
    r = subprocess.run([str(SPLAT_TRANSFORM), "-w", "-q", *map(str, args)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-500:]


# --------------------------------------------------------------------------------------------
# splatseg writes, splatseg and splat-transform read
# --------------------------------------------------------------------------------------------

CASES = [(".compressed.ply", COMPRESSED, 3, 3), (".compressed.ply", COMPRESSED, 1, 1), (".compressed.ply", COMPRESSED, 0, 0),
         (".splat", SPLAT, 3, 0), (".spz", SPZ, 3, 3), (".spz", SPZ, 2, 2), (".spz", SPZ, 0, 0)]


@pytest.mark.parametrize("suffix, tol, degree, kept", CASES)
def test_written_files_read_back_both_ways(tmp_path, suffix, tol, degree, kept):
    source = codec_splats(degree=degree, seed=degree)
    out = tmp_path / f"scene{suffix}"
    notes = write_splats(out, source)
    assert (notes != []) == (kept != degree)
    assert detect_format(out) == output_format(out)
    assert_close(read_splats(out), source, tol, kept)
    # The oracle: splat-transform decodes our file to a reference PLY.
    as_ply = tmp_path / "by_splat_transform.ply"
    splat_transform(out, as_ply)
    assert_close(read_ply(as_ply), source, tol, kept)


# --------------------------------------------------------------------------------------------
# splat-transform writes, splatseg reads
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, args, tol", [
    (".compressed.ply", [], COMPRESSED),
    (".spz", ["--spz-version", "3"], SPZ_SPLAT_TRANSFORM),
    (".spz", ["--spz-version", "4"], SPZ_SPLAT_TRANSFORM),
])
@pytest.mark.parametrize("degree", [0, 3])
def test_splat_transform_files_are_read(tmp_path, suffix, args, tol, degree):
    source = codec_splats(degree=degree, seed=10 + degree)
    write_ply(tmp_path / "src.ply", source)
    out = tmp_path / f"by_splat_transform{suffix}"
    splat_transform(tmp_path / "src.ply", out, *args)
    assert detect_format(out) == output_format(out)
    assert_close(read_splats(out), source, tol, degree)


def test_splat_transform_reads_our_splat_file_rows_in_order(tmp_path):
    """.splat has no header: a wrong field order or offset would scramble every column."""
    source = codec_splats(degree=0, seed=4)
    write_splats(tmp_path / "s.splat", source)
    splat_transform(tmp_path / "s.splat", tmp_path / "s.ply")
    back = read_ply(tmp_path / "s.ply")
    np.testing.assert_array_equal(back.means, source.means)  # float32 positions, same order


# --------------------------------------------------------------------------------------------
# SPZ version 2, made here by an encoder independent of the one under test
# --------------------------------------------------------------------------------------------


def encode_spz_v2(s: Splats, fractional_bits: int = 12) -> bytes:
    """SPZ v2 as Niantic's writer lays it out (RUB frame, 8-bit x y z quaternion with w >= 0)."""
    flip = np.array([1, -1, -1])
    means = s.means * flip
    q = s.unit_quats.astype(np.float64) * np.array([1, 1, -1, -1])
    q *= np.where(q[:, :1] < 0, -1, 1)
    fixed = np.round(means * (1 << fractional_bits)).astype(np.int64) & 0xFFFFFF
    pos = np.stack([(fixed >> (8 * k)) & 0xFF for k in range(3)], -1).astype(np.uint8).reshape(len(s), 9)
    alpha = np.round(s.opacities.astype(np.float64) * 255).clip(0, 255).astype(np.uint8)
    color = np.round(s.sh0[:, 0].astype(np.float64) * 0.15 * 255 + 127.5).clip(0, 255).astype(np.uint8)
    scale = np.round((s.log_scales.astype(np.float64) + 10) * 16).clip(0, 255).astype(np.uint8)
    rot = np.round((q[:, 1:] + 1) * 127.5).clip(0, 255).astype(np.uint8)
    sh_sign = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1])[: s.shN.shape[1], None]
    sh = np.round(s.shN.astype(np.float64) * sh_sign * 128 + 128).clip(0, 255).astype(np.uint8).reshape(len(s), -1)
    header = struct.pack("<4sIIBBBB", b"NGSP", 2, len(s), s.sh_degree, fractional_bits, 0, 0)
    return gzip.compress(header + b"".join(a.tobytes() for a in (pos, alpha, color, scale, rot, sh)))


@pytest.mark.parametrize("degree", [0, 3])
def test_spz_version_2_is_read(tmp_path, degree):
    source = codec_splats(degree=degree, seed=20 + degree)
    (tmp_path / "v2.spz").write_bytes(encode_spz_v2(source))
    assert detect_format(tmp_path / "v2.spz") == "spz"
    assert_close(read_splats(tmp_path / "v2.spz"), source, SPZ_V2, degree)


# --------------------------------------------------------------------------------------------
# Detection, suffixes, refusals
# --------------------------------------------------------------------------------------------


def test_formats_are_detected_by_content_not_name(tmp_path):
    source = codec_splats(n=300, degree=1)
    write_splats(tmp_path / "a.compressed.ply", source)
    (tmp_path / "a.compressed.ply").rename(tmp_path / "plain_name.ply")
    assert detect_format(tmp_path / "plain_name.ply") == "compressed_ply"
    write_splats(tmp_path / "b.spz", source)
    (tmp_path / "b.spz").rename(tmp_path / "b.bin")
    assert detect_format(tmp_path / "b.bin") == "spz"
    write_ply(tmp_path / "c.ply", source)
    assert detect_format(tmp_path / "c.ply") == "ply"
    assert_close(read_splats(tmp_path / "plain_name.ply"), source, COMPRESSED, 1)


def test_reference_ply_through_the_loader_is_bit_exact(tmp_path):
    source = codec_splats(n=200, degree=2)
    source.extra["confidence"] = np.linspace(0, 1, 200, dtype=np.float32)
    write_ply(tmp_path / "s.ply", source)
    back = read_splats(tmp_path / "s.ply")
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN"):
        np.testing.assert_array_equal(getattr(back, name).view(np.uint32), getattr(source, name).view(np.uint32))
    np.testing.assert_array_equal(back.extra["confidence"], source.extra["confidence"])


@pytest.mark.parametrize("name, expected", [
    ("a.ply", "ply"), ("a.compressed.ply", "compressed_ply"), ("A.COMPRESSED.PLY", "compressed_ply"),
    ("a.splat", "splat"), ("a.spz", "spz"),
])
def test_output_format_by_suffix(name, expected):
    assert output_format(name) == expected


@pytest.mark.parametrize("name", ["a.txt", "a", "a.ksplat", "a.compressed", ".ply"])
def test_unknown_output_suffix_is_refused_and_nothing_written(tmp_path, name):
    with pytest.raises(SplatFormatError, match="unknown splat file suffix"):
        write_splats(tmp_path / name, codec_splats(n=10))
    assert list(tmp_path.iterdir()) == []


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name, content, message", [
    ("junk.bin", b"hello world, not a splat", "not a splat file splatseg reads"),
    ("odd.splat", b"\0" * 33, "whole number of 32-byte rows"),
    ("empty.splat", b"", "whole number of 32-byte rows"),
    ("x.ksplat", b"\0" * 64, "does not read; convert it first"),
    ("z.gz", gzip.compress(b"just some text", mtime=0), "not SPZ"),
    ("v1.spz", gzip.compress(struct.pack("<4sIIBBBB", b"NGSP", 1, 1, 0, 12, 0, 0) + b"\0" * 20, mtime=0), "version 1"),
    ("v9.spz", gzip.compress(struct.pack("<4sIIBBBB", b"NGSP", 9, 1, 0, 12, 0, 0) + b"\0" * 20, mtime=0), "unsupported SPZ version 9"),
    ("short.spz", gzip.compress(struct.pack("<4sIIBBBB", b"NGSP", 3, 100, 0, 12, 0, 0) + b"\0" * 20, mtime=0), "cannot decode SPZ"),
])
def test_unreadable_files_are_one_line_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(PlyFormatError) as exc:
        read_splats(tmp_path / name)
    assert message in one_line(exc)


def test_folder_and_missing_file_are_refused(tmp_path):
    with pytest.raises(SplatFormatError, match="is a folder"):
        detect_format(tmp_path)
    with pytest.raises(SplatFormatError, match="no such file"):
        read_splats(tmp_path / "nope.spz")


# A header claiming more rows than the file can hold is refused before anything is allocated:
# each claims ~4e12 bytes of splats; a reader that trusted it would raise MemoryError (or be killed).
HUGE = 100_000_000_000


def test_ply_headers_claiming_more_rows_than_the_file_holds(tmp_path):
    props = "".join(f"property float {p}\n" for p in "x y z f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3".split())
    for fmt in ("binary_little_endian", "ascii"):
        path = tmp_path / f"{fmt}.ply"
        path.write_bytes(f"ply\nformat {fmt} 1.0\nelement vertex {HUGE}\n{props}end_header\n".encode() + b"0 " * 200)
        with pytest.raises(PlyFormatError, match="more than the .* bytes of data in the file can hold"):
            read_splats(path)
    chunk = "".join(f"property float {p}\n" for p in
                    "min_x min_y min_z max_x max_y max_z min_scale_x min_scale_y min_scale_z max_scale_x max_scale_y max_scale_z".split())
    packed = "".join(f"property uint {p}\n" for p in ("packed_position", "packed_rotation", "packed_scale", "packed_color"))
    path = tmp_path / "c.compressed.ply"
    path.write_bytes(f"ply\nformat binary_little_endian 1.0\nelement chunk {HUGE // 256}\n{chunk}element vertex {HUGE}\n{packed}end_header\n".encode()
                     + b"\0" * 1000)
    with pytest.raises(PlyFormatError, match="can hold"):
        read_splats(path)


def test_spz_headers_claiming_more_splats_than_the_file_holds(tmp_path):
    gz = tmp_path / "gz.spz"
    gz.write_bytes(gzip.compress(struct.pack("<4sIIBBBB", b"NGSP", 3, 4_000_000_000, 3, 12, 0, 0)))
    v4 = tmp_path / "v4.spz"
    v4.write_bytes(struct.pack("<4sIIBBBBI", b"NGSP", 4, 4_000_000_000, 3, 12, 0, 6, 32) + b"\0" * 12 + b"\0" * 96)
    for path in (gz, v4):
        with pytest.raises(SplatFormatError, match="more than a .*-byte file can hold"):
            read_splats(path)


def test_malformed_compressed_ply_layouts(tmp_path):
    source = codec_splats(n=300, degree=0)
    write_splats(tmp_path / "ok.compressed.ply", source)
    data = (tmp_path / "ok.compressed.ply").read_bytes()
    bad = tmp_path / "bad.compressed.ply"
    bad.write_bytes(data.replace(b"element chunk 2", b"element chunk 1", 1))
    with pytest.raises(SplatFormatError, match="1 chunks for 300 splats"):
        read_splats(bad)
    bad.write_bytes(data.replace(b"property uint packed_scale", b"property uint packed_scalx", 1))
    with pytest.raises(SplatFormatError, match="vertex properties"):
        read_splats(bad)


def test_old_twelve_property_chunks_are_read(tmp_path):
    """PlayCanvas' first compressed layout had no colour bounds: rgb bytes map to 0..1 directly."""
    source = codec_splats(n=300, degree=0)
    write_splats(tmp_path / "new.compressed.ply", source)
    data = (tmp_path / "new.compressed.ply").read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode()
    chunks = np.frombuffer(data[end:end + 2 * 72], "<f4").reshape(2, 18)
    rest = data[end + 2 * 72:]
    # Re-quantise the colours against 0..1, as the old writer did.
    packed = np.frombuffer(rest[:300 * 16], "<u4").reshape(300, 4).copy()
    rgb = np.clip(source.sh0[:, 0].astype(np.float64) * SH_C0 + 0.5, 0, 1)
    bytes_rgb = np.round(rgb * 255).astype(np.uint32)
    packed[:, 3] = (bytes_rgb[:, 0] << 24) | (bytes_rgb[:, 1] << 16) | (bytes_rgb[:, 2] << 8) | (packed[:, 3] & 0xFF)
    for p in ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b"):
        header = header.replace(f"property float {p}\n", "")
    old = tmp_path / "old.compressed.ply"
    old.write_bytes(header.encode() + chunks[:, :12].astype("<f4").tobytes() + packed.tobytes() + rest[300 * 16:])
    assert_close(read_splats(old), source, {**COMPRESSED, "sh0": 0.5 / 255 / SH_C0 + 1e-5}, 0)
    splat_transform(old, tmp_path / "old_by_st.ply")  # the oracle reads the same file the same way
    assert_close(read_ply(tmp_path / "old_by_st.ply"), source, {**COMPRESSED, "sh0": 0.5 / 255 / SH_C0 + 1e-5}, 0)


def test_wide_scenes_keep_positions_in_spz(tmp_path):
    """Beyond +-2048 units 12 fractional bits overflow SPZ's 24-bit positions: fewer bits are used."""
    source = codec_splats(n=100, degree=0)
    source.means[:, 0] *= 2000.0  # up to 9000 units
    write_splats(tmp_path / "wide.spz", source)
    back = read_splats(tmp_path / "wide.spz")
    assert np.abs(back.means - source.means).max() < 0.01


def test_lossy_formats_report_what_they_drop(tmp_path):
    source = codec_splats(n=50, degree=3)
    source.normals = np.ones((50, 3), np.float32)
    source.extra["object_id"] = np.arange(50, dtype=np.uint32)
    notes = write_splats(tmp_path / "s.splat", source)
    assert any("SH degree 0 only" in n for n in notes) and any("object_id" in n for n in notes)
    assert any("normals" in n for n in notes)
    assert write_splats(tmp_path / "s.ply", source) == []
