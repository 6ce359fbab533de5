"""The one function through which the PLY-only path and 3D point prompts read a splat file.

Today it reads the reference 3DGS PLY (`splatseg.io.ply.read_ply`). When the shared loader for every
accepted format (`splatseg.io.formats.read_splats`: compressed PLY, .splat, .spz, trainer folders)
lands, swapping it in here makes `train --splats FILE` without `--data` and `segment --point`
accept all of them.
"""

from __future__ import annotations

import os

from splatseg.io.ply import read_ply
from splatseg.types import Splats


def load_splats(path: str | os.PathLike) -> Splats:
    """Raw-valued `Splats` of a splat file; one-line ValueError subclass when it cannot be read."""
    return read_ply(path)
