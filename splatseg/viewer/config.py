"""Configuration of `splatseg view` (tyro turns the field docstrings into `--help`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ViewerConfig:
    """Browser viewer: click or type to select an object of a trained run, export it as a PLY."""

    run: Path
    """Run directory written by `splatseg train`."""
    host: str = "127.0.0.1"
    """Address to bind; 127.0.0.1 serves this machine only, 0.0.0.0 every network interface."""
    port: int = 8080
    """Port to serve on (the next free one is taken when it is busy)."""
    torch_threads: int = 1
    """Torch CPU threads while the viewer runs (picking, overlays). 1 keeps a click's latency steady
    when the cores are shared (the browser's software WebGL, other jobs); 0 leaves torch's setting."""
    overlay_max_side: int = 320
    """Longest side, in pixels, of the server-side overlay renders (selection mask / feature PCA)."""
