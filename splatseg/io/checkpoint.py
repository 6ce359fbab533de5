"""Torch checkpoints that cannot run code: `save_state` / `load_state` for every `ckpt.pt`.

A checkpoint holds tensors and plain containers only (dict, list, tuple, str, int, float, bool,
None, torch.Size, generator states as uint8 tensors). It is read with
`torch.load(..., weights_only=True)`: torch's restricted unpickler, which refuses any other global
(a class, a function such as `os.system`) *before* calling it, so a crafted file cannot execute
code. Such a file, a corrupt or a truncated one, is one `CheckpointError` line naming the file.

Writing goes through `io/atomic.py`. torch's zip writer swallows some exceptions raised by a
Python file object's `write` and reports "unexpected pos" RuntimeErrors instead, so the sink below
remembers the first OSError (disk full, file too large) and re-raises that one.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import IO

import torch

from splatseg.io.atomic import atomic_write

__all__ = ["CheckpointError", "save_state", "load_state"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (unsafe, corrupt, truncated, not a dict); one line."""


class _RecordingSink:
    """A write-only file object over `f` that keeps the first OSError its writes raised."""

    def __init__(self, f: IO[bytes]):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            if self.error is None:
                self.error = e
            raise

    def flush(self) -> None:
        self._f.flush()


def save_state(path: str | os.PathLike, state: dict) -> None:
    """Atomically writes `state` (tensors and plain containers only) to `path` with torch.save.
    OSErrors (ENOSPC, EFBIG, EACCES) come out as OSError naming `path`."""
    with atomic_write(path) as f:
        sink = _RecordingSink(f)
        try:
            torch.save(state, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None
            raise


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(e).__name__)


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu", what: str = "checkpoint",
               remedy: str = "delete it to start over") -> dict:
    """The dict stored in `path`, read with `torch.load(weights_only=True)`.

    Raises CheckpointError (one line naming the file) when the file is missing, needs more than
    tensors and plain containers to load (it could run code: refused, nothing of it is executed),
    is corrupt or truncated, or does not hold a dict. `remedy` ends the message (what to do).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file" if not path.exists() else f"{path}: not a regular file")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # a class or function to call: what a code-running payload needs
            raise CheckpointError(
                f"{path}: refused: this {what} needs more than tensors and plain containers to load "
                f"(it could run code), and splatseg never unpickles such files; {remedy}"
            ) from None
        detail = next((ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln), _reason(e))
        raise CheckpointError(f"{path}: corrupt {what}, or one that does not load safely ({detail}); {remedy}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({type(e).__name__}: {_reason(e)}); {remedy}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a splatseg {what} (holds a {type(state).__name__}, expected a dict)")
    return state
