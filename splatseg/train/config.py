"""Configuration of `splatseg train` (tyro turns the field docstrings into `--help`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import tyro

from splatseg.presets import apply_config_file, preset_path, read_config_file

from splatseg.data.virtual_views import VirtualViewsConfig


@dataclass
class TrainConfig:
    """Train per-Gaussian mask features and K queries against a scene's 2D segments (geometry frozen).
    Without --data, the splat file alone: views are made from the splats (RUN/views/)."""

    data: Path | None = None
    """Scene directory (transforms.json or COLMAP sparse/0 + images/). May be left out when --splats
    names a trainer's output folder whose scene is on this machine (that scene is used, and said);
    without a scene, the run is made from the splat file alone: virtual views are rendered from the
    splats into RUN/views/."""
    out: Path = tyro.MISSING
    """Run directory to write (see README: run directory). A checkpoint of the same splats and
    settings is resumed; another run's files are refused (see --overwrite)."""
    splats: Path | None = None
    """Trained splats aligned with the scene's cameras: a file (reference or compressed PLY, .splat,
    .spz) or a trainer's output folder (INRIA, gsplat, nerfstudio: its newest splat file). Default:
    DATA/splats.ply."""
    preset: str = "none"
    """Starting values of the other flags, from configs/train/NAME.yml: "cpu" (the built-in
    defaults), "gpu" (gsplat feature maps, more steps and pixels), "quality" (more steps on larger
    maps, any device), or "auto" ("gpu" when CUDA is available, else "cpu"; the command line's
    default). --config and flags override it. ("none": built in Python without `train_defaults`.)"""
    config: Path | None = None
    """A YAML file of settings (e.g. a run's config.yml) applied over the preset; flags override it."""
    splats_transform: Path | None = None
    """JSON similarity from the splat file's frame to the cameras' (world_from_splats): nerfstudio's
    dataparser_transforms.json (for ns-export splats; undone as nerfstudio applies it), a 4x4 matrix,
    or {"rotation", "translation", "scale"}. The run records it; exports still copy the file's rows."""
    skip_alignment_check: bool = False
    """Skip comparing renders of the splats with the photos before training (the check refuses
    splats in another frame in one line, before segments and training start)."""

    undistorted_dir: Path | None = None
    """Where undistorted copies of the images go when the cameras declare lens distortion
    (default: OUT/undistorted; reused when the sources are unchanged)."""
    virtual: VirtualViewsConfig = field(default_factory=VirtualViewsConfig)
    """How the views are made when there is no scene (ignored with --data)."""

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
    sam_input: Literal["rgb", "depth", "both"] = "rgb"
    """What SAM segments (with --mask-source sam): the photo ('rgb'), the splats' rendered depth
    colour-mapped as Segment-Any-RGBD does ('depth': geometry, not texture, decides segments), or
    'both' merged into the levels (depth masks become the wholes, colour masks their parts)."""
    clip_model: str = "ViT-B-16"
    """open_clip architecture for per-segment embeddings (text prompts)."""
    clip_pretrained: str | None = None
    """open_clip weights tag (e.g. laion2b_s34b_b88k, fetched by open_clip) or a local checkpoint.
    Without it no embeddings are computed and text prompts are refused."""
    ray: str | None = None
    """Compute the missing segments as Ray tasks, one per image (needs the `ray` extra; workers need
    splatseg installed): 'local' (what `--ray` alone means) starts a Ray instance on this machine;
    any other value is ray.init's address ('auto': the cluster this node belongs to,
    'ray://HEAD:10001': a remote one). The cache written is the same as without it. Ray's services
    listen on this machine's network address, not loopback (Ray resolves localhost to it), and Ray
    has no authentication: use it on a trusted network only."""
    clipseg: str | None = None
    """CLIPSeg weights for text prompts (transformers CLIPSegForImageSegmentation): a local folder
    (save_pretrained layout) or a hub name such as CIDAS/clipseg-rd64-refined when online. Its
    image side runs once per training view and is cached in RUN/clipseg.npz; `segment --text` and
    the viewer's text box then run only its text encoder and decoder."""
    clipseg_lift_side: int = 64
    """Longest side of the views through whose blend weights CLIPSeg's relevancy is lifted (stored in
    RUN/clipseg.npz; CLIPSeg itself sees 22 x 22 patches, so 64 px loses little)."""
    segment_max_side: int = 512
    """Longest image side at which segments are computed (images are downscaled to it)."""

    feature_dim: int = 16
    """D: feature channels per Gaussian."""
    num_queries: int = 128
    """K: learned queries; must comfortably exceed the segments per view."""
    iterations: Annotated[int, tyro.conf.arg(aliases=("--steps",))] = 800
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
    holdout_every: Annotated[int, tyro.conf.arg(aliases=("--test-every",))] = 0
    """Hold views out of training (for evaluation): views sorted by image name, every n-th
    (index % n == 0) held out, as recon does; when the splats come from a recon folder its
    split.json is used instead. 0 trains on all views."""
    fill_unseen_neighbours: int = 8
    """Gaussians no training view sees take the mean score of this many nearest seen ones (0: off)."""
    xray_weight: float = 0.01
    """Weight of the X-ray votes (each view's mask under a Gaussian's projected centre, occluded or
    not) against the blend-weighted evidence, as a fraction of a typical Gaussian's evidence; they
    decide the Gaussians no view sees well (undersides, hidden faces). 0: blend evidence alone."""
    surface_smoothing: float = 1.0
    """Weight of a Gaussian's neighbours on the same surface against its own evidence when scores
    are propagated after lifting (splatseg.train.refine); 0: no propagation."""
    checkpoint_every: Annotated[int, tyro.conf.arg(aliases=("--ckpt-every",))] = 500
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
    overwrite: bool = False
    """Replace a run of other splats or settings in --out (and ignore its ckpt.pt) instead of
    refusing; the old run stays until the new one is completely written."""

    @property
    def splats_path(self) -> Path:
        """--splats as given (a file or a folder), else DATA/splats.ply."""
        if self.splats is None and self.data is None:
            raise ValueError("give --data SCENE (posed photos), or --splats FILE alone to train on a splat file without photos")
        return self.splats if self.splats is not None else Path(self.data) / "splats.ply"

    def as_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def resolve_train_preset(name: str) -> str:
    """A shipped train preset's name; "auto" is "gpu" with CUDA, else "cpu"; "none" (the built-in
    defaults, what a run built in Python records) stays. ValueError for an unknown name."""
    if name == "none":
        return name
    if name == "auto":
        import torch

        name = "gpu" if torch.cuda.is_available() else "cpu"
    preset_path("train", name)
    return name


def train_defaults(preset_name: str | None = None, config: Path | None = None) -> TrainConfig:
    """What `splatseg train` starts from before its flags: the built-in defaults with the preset
    (`preset_name`, else the config file's own `preset`, else "auto") and then the config file applied
    (data and out stay required unless the file sets them)."""
    values = read_config_file(config, TrainConfig, "train") if config is not None else {}
    name = resolve_train_preset(preset_name or values.pop("preset", None) or "auto")
    values.pop("preset", None)
    values.pop("config", None)
    base = TrainConfig(data=None, out=tyro.MISSING)
    if name != "none":
        base = apply_config_file(base, preset_path("train", name), "train")
    return replace(base, **values, preset=name, config=config)

