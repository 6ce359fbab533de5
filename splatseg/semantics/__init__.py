"""Semantics: CLIP encoders for segments and text (open_clip; optional transformers backend) and
LERF-style relevancy. Embeddings are float32 [*, E], L2-normalised."""

from splatseg.semantics.clip import (
    CANONICAL_NEGATIVES,
    ClipConfig,
    ClipEncoder,
    HFClipEncoder,
    SemanticsError,
    relevancy,
    require_weights,
)

__all__ = ["CANONICAL_NEGATIVES", "ClipConfig", "ClipEncoder", "HFClipEncoder", "SemanticsError", "relevancy", "require_weights"]
