"""Configuration of `splatseg train` (tyro turns the field docstrings into `--help`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from splatseg.data.virtual_views import VirtualViewsConfig


@dataclass
class TrainConfig:
    """Train per-Gaussian mask features and K queries against a scene's 2D segments (geometry frozen).
    Without --data, the splat file alone: views are made from the splats (RUN/views/)."""

    out: Path
    """Run directory to write (see README: run directory). An existing run is resumed when it matches."""
    data: Path | None = None
    """Scene directory (transforms.json or COLMAP sparse/0 + images/). Leave it out to train on a
    splat file alone (--splats FILE): virtual views are rendered from the splats into RUN/views/."""
    splats: Path | None = None
    """Trained 3DGS PLY aligned with the scene's cameras (default: DATA/splats.ply); without --data,
    the splat file to make selectable."""
    virtual: VirtualViewsConfig = field(default_factory=VirtualViewsConfig)
    """How the views are made when no --data is given (ignored with --data)."""

    segments: Path | None = None
    """Folder of 2D segments (<stem>.npz) to read, and to write missing ones into
    (default: DATA/segments; point it elsewhere when DATA is read-only)."""
    mask_source: Literal["felzenszwalb", "sam"] = "felzenszwalb"
    """Producer of 2D segments when DATA/segments/ lacks them: 'felzenszwalb' is weights-free
    (multi-scale graph segmentation of colour and the splats' rendered depth/normals, no download);
    'sam' is Segment Anything's automatic masks (needs a checkpoint or a download)."""
    sam_model: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"
    """SAM backbone (with --mask-source sam)."""
    sam_checkpoint: Path | None = None
    """Local SAM checkpoint; without it the official one is fetched into ~/.cache/splatseg/sam."""
    clip_model: str = "ViT-B-16"
    """open_clip architecture for per-segment embeddings (text prompts)."""
    clip_pretrained: str | None = None
    """open_clip weights tag (e.g. laion2b_s34b_b88k, fetched by open_clip) or a local checkpoint.
    Without it no embeddings are computed and text prompts are refused."""
    segment_max_side: int = 512
    """Longest image side at which segments are computed (images are downscaled to it)."""

    feature_dim: int = 16
    """D: feature channels per Gaussian."""
    num_queries: int = 128
    """K: learned queries; must comfortably exceed the segments per view."""
    iterations: int = 800
    """Optimisation steps (one view each)."""
    lr: float = 0.01
    """Adam learning rate (decays exponentially to lr * lr_final_ratio)."""
    lr_final_ratio: float = 0.1
    """Final learning rate as a fraction of --lr."""
    train_max_side: int = 128
    """Longest side of the feature maps trained on (views are downscaled to it)."""
    pixels_per_step: int = 2048
    """Pixels sampled per step for the mask losses (0: every pixel of the view)."""
    min_segment_pixels: int = 12
    """Segments smaller than this at training resolution are ignored."""
    focal_weight: float = 20.0
    """Weight of the sigmoid focal loss (matched masks, and unmatched masks pushed to zero)."""
    dice_weight: float = 1.0
    """Weight of the Dice loss on matched masks."""
    clip_weight: float = 1.0
    """Weight of 1 - cosine between a query's CLIP vector and its matched segment's embedding."""
    holdout_every: int = 0
    """Hold every n-th view out of training (for evaluation); 0 trains on all views."""
    fill_unseen_neighbours: int = 8
    """Gaussians no training view sees take the mean score of this many nearest seen ones (0: off)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (ckpt.pt) for resuming."""
    seed: int = 0
    """Random seed for initialisation and view order."""
    feature_renderer: Literal["auto", "cached", "raster"] = "auto"
    """How feature maps are made with the geometry frozen: 'cached' blend weights (fast on CPU),
    'raster' (rasterise every step: gsplat on CUDA), 'auto' picks cached on CPU, raster on CUDA."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda'."""
    progress: bool = True
    """Show progress bars."""

    @property
    def ply_only(self) -> bool:
        """True when no photos are given: the views are made from the splats."""
        return self.data is None

    @property
    def splats_path(self) -> Path:
        if self.splats is not None:
            return self.splats
        if self.data is None:
            raise ValueError("give --data SCENE (posed photos), or --splats FILE alone to train on a splat file without photos")
        return Path(self.data) / "splats.ply"

    def as_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def holdout_split(num_views: int, every: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): every `every`-th view (starting at every-1) held out."""
    if every <= 0:
        return list(range(num_views)), []
    held = [i for i in range(num_views) if i % every == every - 1]
    return [i for i in range(num_views) if i not in held], held
