"""Splat PLY I/O: bit-exact round trips, the reference layout, foreign encodings, errors, atomicity."""

from __future__ import annotations

import os

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from splatseg.io import ply as plymod
from splatseg.io.ply import (
    PlyFormatError,
    read_ply,
    read_vertex_table,
    splats_from_table,
    standard_property_names,
    table_from_splats,
    write_ply,
    write_vertex_table,
)
from splatseg.types import Splats


def odd_float32(rng: np.random.Generator, shape) -> np.ndarray:
    """Random float32 with -0.0, denormals, huge and tiny magnitudes mixed in (all finite)."""
    x = rng.normal(size=shape).astype(np.float32)
    flat = x.reshape(-1)
    specials = np.array([-0.0, 0.0, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, 1e-30, 7e37],
                        dtype=np.float32)
    idx = rng.choice(flat.size, size=min(flat.size, 3 * len(specials)), replace=False)
    flat[idx] = np.resize(specials, idx.size)
    # Random bit patterns that are finite floats (exponent not all ones).
    bits = rng.integers(0, 2**32, size=flat.size // 4, dtype=np.uint64).astype(np.uint32)
    bits &= ~np.uint32(0x7F800000) | np.uint32(0x3F800000)
    flat[rng.choice(flat.size, size=bits.size, replace=False)] = bits.view(np.float32)
    return x


def random_splats(n: int, degree: int, seed: int = 0, normals: bool = True) -> Splats:
    rng = np.random.default_rng(seed)
    quats = odd_float32(rng, (n, 4))
    quats[:, 0] = np.where(quats[:, 0] == 0, 1.0, quats[:, 0])  # no all-zero rows
    return Splats(
        means=odd_float32(rng, (n, 3)),
        quats=quats,
        log_scales=odd_float32(rng, (n, 3)),
        opacity_logits=odd_float32(rng, (n,)),
        sh0=odd_float32(rng, (n, 1, 3)),
        shN=odd_float32(rng, (n, (degree + 1) ** 2 - 1, 3)),
        normals=odd_float32(rng, (n, 3)) if normals else None,
    )


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_splats_bit_equal(a: Splats, b: Splats) -> None:
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and y.dtype == np.float32, name
        np.testing.assert_array_equal(bits(x), bits(y), err_msg=name)
    if a.normals is None:
        assert b.normals is not None and not b.normals.any()
    else:
        np.testing.assert_array_equal(bits(a.normals), bits(b.normals))


def write_raw(path, table: np.ndarray, fmt: str = "<", extra_elements=()) -> None:
    """Write with plyfile directly: fmt "<" / ">" binary, "ascii" text."""
    elements = [PlyElement.describe(table, "vertex"), *extra_elements]
    if fmt == "ascii":
        PlyData(elements, text=True).write(str(path))
    else:
        PlyData(elements, byte_order=fmt).write(str(path))


def header_of(path) -> list[str]:
    data = open(path, "rb").read()
    return data[: data.index(b"end_header")].decode("ascii").splitlines()


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_bit_exact(tmp_path, degree):
    splats = random_splats(257, degree, seed=degree)
    path = tmp_path / "s.ply"
    write_ply(path, splats)
    back = read_ply(path)
    assert back.sh_degree == degree and len(back) == 257
    assert_splats_bit_equal(splats, back)
    # Writing what was read gives the same bytes.
    write_ply(tmp_path / "again.ply", back)
    assert (tmp_path / "again.ply").read_bytes() == path.read_bytes()


def test_nan_payload_in_sh_survives(tmp_path):
    splats = random_splats(8, 1)
    splats.shN[3, 1, 2] = np.array([0x7FC12345], dtype=np.uint32).view(np.float32)[0]
    write_ply(tmp_path / "s.ply", splats)
    assert bits(read_ply(tmp_path / "s.ply").shN)[3, 1, 2] == 0x7FC12345


def test_reference_layout_and_channel_major_f_rest(tmp_path):
    n, degree = 5, 2
    B = (degree + 1) ** 2
    splats = random_splats(n, degree, normals=False)
    # shN[i, k, c] = 1000*i + 10*k + c identifies every coefficient.
    i, k, c = np.meshgrid(np.arange(n), np.arange(B - 1), np.arange(3), indexing="ij")
    splats.shN = (1000 * i + 10 * k + c).astype(np.float32)
    path = tmp_path / "s.ply"
    write_ply(path, splats)
    header = header_of(path)
    assert header[1] == "format binary_little_endian 1.0"
    assert header[2] == f"element vertex {n}"
    props = [line.split()[-1] for line in header if line.startswith("property")]
    assert all(line.startswith("property float ") for line in header if line.startswith("property"))
    f_rest = [f"f_rest_{j}" for j in range(3 * (B - 1))]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *f_rest,
                "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert props == expected
    table = read_vertex_table(path)
    assert standard_property_names(table) == expected
    for cc in range(3):
        for kk in range(B - 1):
            np.testing.assert_array_equal(table[f"f_rest_{cc * (B - 1) + kk}"], 1000 * np.arange(n) + 10 * kk + cc)
    # Normals None are written as zeros; the property block is exactly 4 bytes per property.
    assert not table["nx"].any() and not table["nz"].any()
    assert os.path.getsize(path) == len(open(path, "rb").read().split(b"end_header\n")[0]) + 11 + 4 * n * len(expected)


def test_missing_normals_read_as_none_and_extras_kept(tmp_path):
    splats = random_splats(10, 1)
    table = table_from_splats(splats)
    keep = [n for n in table.dtype.names if n not in ("nx", "ny", "nz")]
    rng = np.random.default_rng(3)
    out = np.empty(10, dtype=[*[(n, "<f4") for n in keep], ("object_id", "<u4"), ("label", "u1"),
                              ("weight", "<f8"), ("code", "<i2")])
    for name in keep:
        out[name] = table[name]
    out["object_id"] = rng.integers(0, 2**32, 10, dtype=np.uint64)
    out["label"] = rng.integers(0, 256, 10)
    out["weight"] = rng.normal(size=10)
    out["code"] = rng.integers(-30000, 30000, 10)
    write_raw(tmp_path / "in.ply", out)
    back = read_ply(tmp_path / "in.ply")
    assert back.normals is None
    assert list(back.extra) == ["object_id", "label", "weight", "code"]
    for name in back.extra:
        assert back.extra[name].dtype == out.dtype[name]
        np.testing.assert_array_equal(back.extra[name], out[name])
    # Written back: standard properties first, then the extras in order with their types.
    write_ply(tmp_path / "out.ply", back)
    header = header_of(tmp_path / "out.ply")
    props = [line.split()[1:] for line in header if line.startswith("property")]
    assert props[-4:] == [["uint", "object_id"], ["uchar", "label"], ["double", "weight"], ["short", "code"]]
    assert props[3] == ["float", "nx"]
    again = read_ply(tmp_path / "out.ply")
    for name in out.dtype.names[len(keep):]:
        np.testing.assert_array_equal(again.extra[name], out[name])
    assert not again.normals.any()


@pytest.mark.parametrize("fmt", [">", "ascii"])
def test_big_endian_and_ascii_inputs(tmp_path, fmt):
    splats = random_splats(20, 3, seed=7)
    table = table_from_splats(splats)
    if fmt == "ascii":  # decimal text cannot carry every float32 bit pattern exactly: use simple values
        for name in table.dtype.names:
            table[name] = np.round(np.random.default_rng(1).normal(size=20), 3) + 0.5
    write_raw(tmp_path / "in.ply", table, fmt)
    raw = read_vertex_table(tmp_path / "in.ply")
    if fmt == ">":
        assert raw.dtype["x"].byteorder == ">"  # raw table is exactly as stored
    for name in table.dtype.names:
        np.testing.assert_array_equal(bits(raw[name]), bits(table[name]), err_msg=name)
    assert_splats_bit_equal(splats_from_table(table), read_ply(tmp_path / "in.ply"))
    # Re-written as little-endian binary with identical values.
    write_vertex_table(tmp_path / "out.ply", raw)
    assert header_of(tmp_path / "out.ply")[1] == "format binary_little_endian 1.0"
    out = read_vertex_table(tmp_path / "out.ply")
    assert out.dtype["x"] == np.dtype("<f4")
    for name in table.dtype.names:
        np.testing.assert_array_equal(bits(out[name]), bits(table[name]), err_msg=name)


def test_float64_properties_and_extra_elements(tmp_path):
    splats = random_splats(12, 0, seed=2)
    t32 = table_from_splats(splats)
    t64 = t32.astype([(n, "<f8") for n in t32.dtype.names])
    t64["x"] = np.linspace(0.1, 1.3, 12)  # not representable in float32
    face = np.empty(2, dtype=[("vertex_indices", "O")])
    face["vertex_indices"] = [np.array([0, 1, 2], np.int32), np.array([2, 3, 4], np.int32)]
    path = tmp_path / "in.ply"
    write_raw(path, t64, "<", [PlyElement.describe(face, "face")])
    raw = read_vertex_table(path)
    assert raw.dtype["x"] == np.dtype("<f8")
    np.testing.assert_array_equal(raw["x"], t64["x"])  # raw table keeps the doubles
    s = read_ply(path)
    assert s.means.dtype == np.float32
    np.testing.assert_array_equal(s.means[:, 0], t64["x"].astype(np.float32))
    np.testing.assert_array_equal(bits(s.quats), bits(splats.quats))
    # The raw writer keeps doubles as doubles, in the original property order.
    write_vertex_table(tmp_path / "out.ply", raw)
    assert "property double x" in header_of(tmp_path / "out.ply")
    np.testing.assert_array_equal(read_vertex_table(tmp_path / "out.ply")["x"], t64["x"])


def test_raw_table_preserves_order_and_subset_rows(tmp_path):
    splats = random_splats(30, 1, seed=4)
    table = table_from_splats(splats)
    names = list(table.dtype.names)
    shuffled = names[::-1]  # a writer with its own property order
    t = np.empty(30, dtype=[(n, "<f4") for n in shuffled])
    for n in shuffled:
        t[n] = table[n]
    write_raw(tmp_path / "in.ply", t)
    raw = read_vertex_table(tmp_path / "in.ply")
    assert list(raw.dtype.names) == shuffled
    rows = np.array([3, 0, 29, 7])
    write_vertex_table(tmp_path / "sel.ply", raw[rows])
    sel = read_vertex_table(tmp_path / "sel.ply")
    assert list(sel.dtype.names) == shuffled
    assert sel.tobytes() == t[rows].tobytes()
    assert_splats_bit_equal(splats.subset(rows), read_ply(tmp_path / "sel.ply"))


def test_empty_file_is_readable(tmp_path):
    splats = random_splats(0, 3)
    write_ply(tmp_path / "e.ply", splats)
    back = read_ply(tmp_path / "e.ply")
    assert len(back) == 0 and back.shN.shape == (0, 15, 3) and back.sh_degree == 3


def good_table(n=6, degree=1):
    return table_from_splats(random_splats(n, degree, seed=11))


def drop(table, name):
    keep = [n for n in table.dtype.names if n != name]
    out = np.empty(len(table), dtype=[(n, table.dtype[n]) for n in keep])
    for n in keep:
        out[n] = table[n]
    return out


def expect_error(path, *fragments):
    with pytest.raises(PlyFormatError) as info:
        read_ply(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_malformed_files_give_one_line_errors(tmp_path):
    p = tmp_path / "notply.ply"
    p.write_bytes(b"\x89PNG\r\n\x1a\nnot a ply at all")
    expect_error(p, "not a PLY")
    expect_error(tmp_path / "missing.ply", "no such file")

    p = tmp_path / "noverts.ply"
    PlyData([PlyElement.describe(np.zeros(3, dtype=[("a", "f4")]), "face")]).write(str(p))
    expect_error(p, "no 'vertex' element")

    p = tmp_path / "noscale.ply"
    write_raw(p, drop(good_table(), "scale_1"))
    expect_error(p, "missing required property 'scale_1'")

    p = tmp_path / "frest.ply"
    write_raw(p, drop(good_table(), "f_rest_8"))
    expect_error(p, "8 f_rest properties", "SH degree")
    p = tmp_path / "gap.ply"
    write_raw(p, drop(good_table(), "f_rest_3"))
    expect_error(p, "missing f_rest_3")

    p = tmp_path / "trunc.ply"
    write_ply(p, random_splats(50, 3))
    data = p.read_bytes()
    p.write_bytes(data[:-100])
    expect_error(p, "truncated")

    t = good_table()
    t["scale_1"][[1, 4]] = np.nan
    t["x"][0] = np.inf
    p = tmp_path / "nan.ply"
    write_raw(p, t)
    expect_error(p, "x (1)", "scale_1 (2)")

    t = good_table()
    for name in ("rot_0", "rot_1", "rot_2", "rot_3"):
        t[name][[2, 5]] = 0.0
    p = tmp_path / "zeroq.ply"
    write_raw(p, t)
    expect_error(p, "2 rows", "all-zero quaternion", "row 2")


def test_write_refuses_invalid_and_bad_extras(tmp_path):
    t = good_table()
    t["opacity"][0] = np.nan
    with pytest.raises(PlyFormatError, match="opacity"):
        write_vertex_table(tmp_path / "bad.ply", t)
    s = random_splats(4, 0)
    s.extra = {"x": np.zeros(4, np.float32)}
    with pytest.raises(PlyFormatError, match="clashes"):
        write_ply(tmp_path / "bad.ply", s)
    s.extra = {"id": np.zeros(4, np.int64)}  # PLY has no 64-bit integers
    with pytest.raises(PlyFormatError, match="'id'"):
        write_ply(tmp_path / "bad.ply", s)
    assert list(tmp_path.iterdir()) == []


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "s.ply"
    write_ply(path, random_splats(10, 0))
    before = path.read_bytes()

    def exploding_write(self, stream):
        stream.write(b"ply\nformat binary_little_endian 1.0\n")  # partial output, then failure
        raise RuntimeError("disk full")

    monkeypatch.setattr(plymod.PlyData, "write", exploding_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_ply(path, random_splats(20, 1))
    with pytest.raises(RuntimeError):
        write_ply(tmp_path / "new.ply", random_splats(20, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ply"]  # no temporary left, no new file
    assert path.read_bytes() == before


def test_vertex_list_property_is_dropped_with_warning(tmp_path):
    table = good_table(3)
    lists = np.empty(3, dtype=[("neighbours", "O")])
    lists["neighbours"] = [np.array([1, 2], np.int32), np.array([], np.int32), np.array([0], np.int32)]
    merged = np.empty(3, dtype=table.dtype.descr + [("neighbours", "O")])
    for name in table.dtype.names:
        merged[name] = table[name]
    merged["neighbours"] = lists["neighbours"]
    write_raw(tmp_path / "l.ply", merged)
    with pytest.warns(UserWarning, match="neighbours"):
        raw = read_vertex_table(tmp_path / "l.ply")
    assert raw.dtype.names == table.dtype.names
    assert raw.tobytes() == table.tobytes()
