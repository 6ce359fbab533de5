"""2D segments: mask sources (weights-free felzenszwalb on colour + rendered geometry, SAM), the
`<scene>/segments/<stem>.npz` cache, and a simulator of SAM's failure modes for tests/benchmarks.

Modules are imported lazily by their users (SAM / torch only load when the SAM source is used).
"""

from splatseg.segments.cache import SegmentsError, read_segments, segments_dir, write_segments
from splatseg.segments.geometry import Geometry

__all__ = ["Geometry", "SegmentsError", "read_segments", "segments_dir", "write_segments"]
