"""Atomic file writes: a temporary file beside the target, fsynced, then renamed into place.

Every file splatseg writes goes through `atomic_write`, so an interrupted or failed write never
leaves a half-written file at the target path.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


def process_umask() -> int:
    """The process umask, read once at import (reading it again means setting it, racing threads)."""
    return _UMASK


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when `a` and `b` name one file: the same inode (hard or symbolic links) or, when either
    does not exist yet, the same resolved path."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _naming(e: OSError, path: Path) -> OSError:
    """`e` with `path` as its filename when it names none (a failed write() or fsync names no file),
    so the one-line error says which file could not be written."""
    if e.filename is not None and not str(e.filename).startswith(str(path.parent / f".{path.name}.")):
        return e
    named = OSError(e.errno, e.strerror or str(e), str(path))  # OSError(errno, ...) picks the subclass
    named.__cause__ = e
    return named


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary binary file beside `path`; on clean exit fsync it and `os.replace` it onto
    `path` (mode 0666 & ~umask). On any exception the temporary file is removed and `path` is left
    untouched; OSErrors (disk full, file too large, permission) name `path`. The parent directory
    must exist."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise
