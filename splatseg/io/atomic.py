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



@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary binary file beside `path`; on clean exit fsync it and `os.replace` it onto
    `path` (mode 0666 & ~umask). On any exception the temporary file is removed and `path` is left
    untouched. The parent directory must exist."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
