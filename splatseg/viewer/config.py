"""Configuration of `splatseg view` (tyro turns the field docstrings into `--help`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro


@dataclass
class ViewerConfig:
    """Browser viewer: click or type to select an object of a trained run, export it as a PLY."""

    run: Path
    """Run directory written by `splatseg train`."""
    host: str = "127.0.0.1"
    """Address to bind; 127.0.0.1 serves this machine only, 0.0.0.0 every network interface (a
    warning says what that exposes; browsers then also need --allow-origin)."""
    port: int = 8080
    """Port to serve on, 1-65535 (the next free one is taken when it is busy)."""
    allow_origin: Annotated[list[str], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="ORIGIN")] = field(default_factory=list)
    """Also let browsers in from this origin (e.g. http://myhost:8080 when serving on 0.0.0.0, or a
    reverse proxy's https://viewer.example.com). Repeatable. By default only pages served from
    http://127.0.0.1:PORT, http://localhost:PORT and http://[::1]:PORT may connect: every other
    Origin or Host gets HTTP 403, so no other web page can read the scene or drive the viewer."""
    torch_threads: int = 1
    """Torch CPU threads while the viewer runs (picking, overlays). 1 keeps a click's latency steady
    when the cores are shared (the browser's software WebGL, other jobs); 0 leaves torch's setting."""
    overlay_max_side: int = 320
    """Longest side, in pixels, of the server-side overlay renders (selection mask / feature PCA)."""
