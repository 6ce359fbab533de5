"""Configuration of `splatseg imitate` and `splatseg decode` (tyro turns the field docstrings into `--help`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

ClickArg = Annotated[list[tuple[str, float, float]], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="STEM X Y")]
BoxArg = Annotated[tuple[str, float, float, float, float] | None, tyro.conf.arg(metavar="STEM X0 Y0 X1 Y1")]


@dataclass
class ImitateConfig:
    """Feature imitation (SA-NeRF style): per-Gaussian features whose rendering, through a small head,
    reproduces SAM's image embedding in any view, so SAM's decoder runs without its encoder.
    Geometry stays frozen; writes RUN/imitation.npz beside the MaskField field."""

    run: Path
    """Run directory written by `splatseg train` (its scene, splats and training views are used)."""
    sam_model: Literal["vit_b", "vit_l", "vit_h"] = "vit_b"
    """SAM backbone (the teacher) from segment-anything's model registry."""
    sam_checkpoint: Path | None = None
    """Local SAM checkpoint (.pth). Default: the official checkpoint, cached in ~/.cache/splatseg/sam
    (downloaded on first use; refused in one line when offline)."""
    sam_random_init: int | None = None
    """Build the SAM architecture with its default random initialisation under this seed instead of
    loading weights. For benchmarks and tests only: a random teacher's masks mean nothing."""
    feature_dim: int = 32
    """d: feature channels per Gaussian."""
    hidden: int = 256
    """Hidden channels of the head (per-cell MLP d -> hidden -> 256)."""
    supersample: int = 2
    """Rendered pixels per embedding cell along each axis (averaged into the cell)."""
    steps: int = 1500
    """Optimisation steps."""
    batch_size: int = 4
    """Views per step."""
    cells_per_view: int = 1024
    """Embedding cells (of the g x g = 4096) in each view's loss, drawn at random every step; the
    head acts per cell, so this is an unbiased estimate of the whole-grid loss at a quarter of the
    head's cost. 0: every cell."""
    lr: float = 0.01
    """Adam learning rate of the per-Gaussian features (and background / pad features)."""
    head_lr: float = 0.001
    """Adam learning rate of the head."""
    new_fraction: float = 0.25
    """Share of a batch that is a new augmented view (interpolated between training poses, the
    teacher run on the splats rendered there) on the steps that get one; the rest is drawn from
    the cached targets."""
    augment_targets: int = 16
    """New augmented teacher targets over the whole run, spread evenly over the steps (0: none).
    Each costs one encoder pass (tens of seconds for vit_b on a CPU, milliseconds on a GPU):
    steps * batch_size * new_fraction gives SA-NeRF's schedule of new targets at every step."""
    fifo_size: int = 256
    """Capacity of the FIFO of augmented targets (oldest dropped first); training photos'
    targets are always kept."""
    teacher_views: int = 0
    """Use this many training views (evenly spaced) as teacher targets; 0: every training view."""
    teacher_cache: Path | None = None
    """Folder of cached teacher embeddings of photos (default RUN/teacher_cache); entries are
    reused only for the same teacher and the same pixels."""
    augment_max_side: int = 0
    """Long side in pixels at which augmented views are rendered for the teacher; 0: the training
    camera's own size, like the photos (SAM's preprocessing resizes either to its 1024 input)."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda'."""
    seed: int = 0
    """Random seed of the initialisation, the view order and the augmented cameras."""
    progress: bool = True
    """Show progress bars."""

    def as_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class DecodeConfig:
    """SAM's decoder on the rendered embedding: clicks or a box in any scene view -> a 2D mask (PNG),
    and with --out the object in 3D (decoder masks from many views lifted onto the Gaussians)."""

    run: Path
    """Run directory holding imitation.npz (`splatseg imitate`)."""
    click: ClickArg = field(default_factory=list)
    """Positive click: STEM X Y in pixels of that image (origin top-left, x right, y down). Repeatable;
    clicks in other views are carried over through their 3D points."""
    negative: ClickArg = field(default_factory=list)
    """Negative click (STEM X Y): what to leave out. Repeatable."""
    box: BoxArg = None
    """A box prompt: STEM X0 Y0 X1 Y1 (corners in pixels)."""
    view: str | None = None
    """View (stem) whose 2D mask is made: any scene view, held-out ones included
    (default: the view of the first positive click, or of the box)."""
    mask_index: int = -1
    """Which of SAM's three masks: 0, 1, 2 (small to large in SAM's training), -1: the highest score."""
    mask_out: Path | None = None
    """Write the 2D mask here (PNG, 0/255, the view's full resolution)."""
    out: Path | None = None
    """Also select the object in 3D and export it as a PLY here."""
    threshold: float = 0.5
    """Lifted score in [0, 1] above which a Gaussian is selected (with --out)."""
    refine: bool = False
    """Refine the 3D selection with the ray-pair RGB loss (SANeRF-HQ): nearby rays of similar colour
    share a label."""
    invert: bool = False
    """Export everything except the selection."""
    max_views: int = 0
    """Views the decoder is prompted in for 3D (evenly spaced training views); 0: all of them."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda'."""
    progress: bool = True
    """Show progress bars."""
