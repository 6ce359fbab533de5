"""The one function through which the PLY-only path and 3D point prompts read a splat file.

It reads every accepted splat format (`splatseg.io.formats.read_splats`: reference and compressed
PLY, .splat, .spz), so `train --splats FILE` without `--data` and `segment --point` accept them all.
"""

from __future__ import annotations

import os

from splatseg.io.formats import read_splats
from splatseg.types import Splats


def load_splats(path: str | os.PathLike) -> Splats:
    """Raw-valued `Splats` of a splat file; one-line ValueError subclass when it cannot be read."""
    return read_splats(path)
