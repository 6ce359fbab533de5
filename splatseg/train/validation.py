"""`validate_train_config`: one-line errors for `splatseg train` settings no run can use.

Checked before anything is read or written, so a bad flag costs nothing and leaves no files:
`--feature-dim 0` or `--num-queries 0` used to crash deep in torch, `--iterations 0` wrote a run of
untrained features that every click then failed on. (An empty `--out ''` is refused by the CLI,
before tyro turns it into Path('.'), the current directory.)
"""

from __future__ import annotations

import math
from pathlib import Path

from splatseg.train.config import TrainConfig


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_train_config(cfg: TrainConfig) -> None:
    """Raises ValueError naming the flag and the value when a setting is out of range."""
    for name in ("data", "out"):
        value = getattr(cfg, name)
        if (value is None and name == "out") or (value is not None and str(value).strip() == ""):
            raise ValueError(f"{_flag(name)} must name a directory (got {str(value)!r})")  # --data may be left out
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if cfg.sam_input != "rgb" and cfg.mask_source != "sam":
        raise ValueError(f"--sam-input {cfg.sam_input} applies to SAM's masks; add --mask-source sam (or leave --sam-input out)")
    if cfg.clipseg is not None and str(cfg.clipseg).strip() == "":
        raise ValueError("--clipseg must name a CLIPSeg folder or hub name (got '')")
    at_least_one = ("feature_dim", "clipseg_lift_side", "num_queries", "iterations", "train_max_side", "segment_max_side", "checkpoint_every")
    for name in at_least_one:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{_flag(name)} must be an integer >= 1, got {value!r}")
    at_least_zero = ("pixels_per_step", "min_segment_pixels", "holdout_every", "fill_unseen_neighbours")
    for name in at_least_zero:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{_flag(name)} must be an integer >= 0, got {value!r}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"--lr must be a positive number, got {cfg.lr}")
    if not (math.isfinite(cfg.lr_final_ratio) and 0 < cfg.lr_final_ratio <= 1):
        raise ValueError(f"--lr-final-ratio must lie in (0, 1], got {cfg.lr_final_ratio}")
    for name in ("focal_weight", "dice_weight", "clip_weight", "xray_weight", "surface_smoothing"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{_flag(name)} must be a finite number >= 0, got {value}")
    if cfg.focal_weight == 0 and cfg.dice_weight == 0:
        raise ValueError("--focal-weight and --dice-weight are both 0: nothing would be trained")
