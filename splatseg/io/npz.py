"""Reading `.npz` files that cannot exhaust memory or run code.

`np.load` allocates every member at the shape its `.npy` header declares before reading any data,
so a 10 KB file declaring a [2e9] int64 array asks for 16 GB. `check_npz` reads only the zip
directory and each member's header and refuses, in one line naming the file and the member:
- a member whose declared array is larger than the member's uncompressed size (truncated or
  crafted), or whose uncompressed size is more than deflate can produce from its compressed bytes
  (deflate's ceiling is about 1032:1; numpy writes only stored or deflated members);
- object arrays (they need pickle, which splatseg never enables).
`open_npz` runs that check, then `np.load(allow_pickle=False)`.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["NpzError", "check_npz", "open_npz", "DEFLATE_MAX_RATIO"]

DEFLATE_MAX_RATIO = 1032
"""Largest uncompressed / compressed size ratio a deflate stream can reach (RFC 1951 block limits)."""
_HEADER_SLACK = 4096  # bytes: the zip local header and the npy header around a tiny payload


class NpzError(ValueError):
    """An .npz file that is unreadable, or declares more memory than its bytes can hold; one line."""


def _read_header(f) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # (3, 0): utf-8 header, only reachable through numpy's private reader
        shape, _, dtype = np.lib.format._read_array_header(f, version)
    return tuple(int(s) for s in shape), np.dtype(dtype)


def check_npz(path: str | os.PathLike, what: str = "file") -> None:
    """Refuses (NpzError) an .npz whose members declare more bytes than they can hold; reads no
    array data."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise NpzError(f"{path}: not a readable .npz {what} ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            member = info.filename[:-4]
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise NpzError(f"{path}: member {member!r} uses zip compression method {info.compress_type}; "
                               "numpy writes only stored or deflated members")
            ceiling = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO) + _HEADER_SLACK
            if info.file_size > ceiling:
                raise NpzError(f"{path}: member {member!r} claims {info.file_size} bytes from {info.compress_size} "
                               "compressed bytes, more than deflate can produce (corrupt or crafted file)")
            try:
                with zf.open(info) as f:
                    shape, dtype = _read_header(f)
            except Exception as e:  # noqa: BLE001 - any malformed header is the same one-line refusal
                raise NpzError(f"{path}: member {member!r} has no valid .npy header ({' '.join(str(e).split())[:160]})") from None
            if dtype.hasobject:
                raise NpzError(f"{path}: member {member!r} is an object array, which needs pickle to load (refused)")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > info.file_size:
                raise NpzError(f"{path}: member {member!r} declares shape {list(shape)} {dtype} ({nbytes} bytes) "
                               f"but holds {info.file_size} bytes (truncated or crafted file)")


def open_npz(path: str | os.PathLike, what: str = "file"):
    """`check_npz`, then `np.load(path, allow_pickle=False)` (an NpzFile: use it as a context manager)."""
    check_npz(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise NpzError(f"{path}: not a readable .npz {what} ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
