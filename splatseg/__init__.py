"""splatseg: make 3D Gaussian splatting scenes selectable."""

__version__ = "0.1.0"
