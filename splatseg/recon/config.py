"""`ReconConfig`: every knob of `splatseg recon`, and its presets (configs/recon/*.yml: cpu, gpu, quality).

Units: learning rates are per Adam step; `means_lr` is multiplied by the scene extent (world
units: 1.1 x the largest camera-centre distance from their mean, as in the reference 3DGS);
the densification thresholds `grow_scale3d` and `prune_scale3d` are fractions of that extent;
`grow_grad2d` is the mean norm of the means2d gradient in normalised [-1, 1] screen units.
Derived values are properties; nothing here mutates itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

import tyro

from splatseg.presets import apply_config_file, preset_names, preset_path, read_config_file


@dataclass
class ReconConfig:
    """RGB 3D Gaussian splatting optimisation from posed photos."""

    data: Path = tyro.MISSING
    """Scene directory (transforms.json or COLMAP layout, see docs/FORMATS.md)."""
    out: Path = tyro.MISSING
    """Output directory: splats.ply, recon.json, split.json, config.yml and the checkpoint ckpt.pt are written here."""
    preset: str = "auto"
    """Starting values of every other flag, from configs/recon/NAME.yml: "cpu" (downscaled images,
    3,000 steps, capped Gaussian count: minutes on a laptop), "gpu" (the reference 30,000-step
    schedule with gsplat), "quality" (full resolution, more steps and Gaussians: hours on a CPU), or
    "auto" ("gpu" when CUDA is available, else "cpu"). --config and flags override it. In Python,
    build the config with `preset(name, **overrides)`."""
    config: Path | None = None
    """A YAML file of settings (e.g. a run's config.yml) applied over the preset; flags override it."""

    # --- run control -------------------------------------------------------------------------
    steps: Annotated[int, tyro.conf.arg(aliases=("--iterations",))] = 30_000
    """Number of optimisation steps (one training view per step)."""
    device: str = "auto"
    """Torch device: "auto" picks "cuda" when available, else "cpu"."""
    threads: int = 0
    """CPU threads for torch (0 keeps torch's default)."""
    seed: int = 0
    """Random seed for initialisation, view order and densification."""
    resume: bool = False
    """Continue from OUT/ckpt.pt (must have been made for the same scene and image size)."""
    ckpt_every: Annotated[int, tyro.conf.arg(aliases=("--checkpoint-every",))] = 1000
    """Write OUT/ckpt.pt every this many steps (0: only at the end)."""
    eval_every: int = 0
    """Evaluate PSNR/SSIM on the held-out views every this many steps (0: only at the end)."""
    progress: bool = True
    """Show a tqdm progress bar with loss and Gaussian count (evaluation lines and the final summary
    are printed either way)."""

    # --- data --------------------------------------------------------------------------------
    downscale: float = 1.0
    """Divide image width and height by this factor before training (and evaluation)."""
    undistorted_dir: Path | None = None
    """Where undistorted copies of the images go when the cameras declare lens distortion
    (default: OUT/undistorted; reused when the sources are unchanged)."""
    test_every: Annotated[int, tyro.conf.arg(aliases=("--holdout-every",))] = 8
    """Hold views out for evaluation: sorted by image name, every this-th one (index % n == 0, the
    INRIA / gsplat convention; written to OUT/split.json, which train reads); 0 trains on all views."""
    background: Literal["learned", "black", "white", "random"] = "learned"
    """Colour behind the splats: one learned RGB colour (initialised from the image borders),
    a fixed black or white, or a random colour per step (forces opaque geometry)."""

    # --- initialisation ----------------------------------------------------------------------
    init: Literal["auto", "points", "random"] = "auto"
    """Start from the scene's sparse points ("points", e.g. COLMAP), random points in the volume
    the cameras see ("random"), or the points when the scene has them ("auto")."""
    init_num_points: int = 20_000
    """Number of random initial points (random init only)."""
    init_far_fraction: float = 0.2
    """Fraction of the random points placed behind the common view volume, seen by fewer cameras,
    to cover a real background."""
    init_min_views: float = 0.5
    """A random point belongs to the common view volume when at least this fraction of the
    cameras see it."""
    init_opacity: float = 0.1
    """Initial opacity of every Gaussian."""
    init_scale: float = 1.0
    """Multiplier on the initial scales (mean distance to the 3 nearest neighbours)."""

    # --- model -------------------------------------------------------------------------------
    sh_degree: int = 3
    """Maximum spherical-harmonics degree (0..3)."""
    sh_degree_interval: int = 1000
    """Raise the active SH degree by one every this many steps."""

    # --- loss and optimiser ------------------------------------------------------------------
    ssim_lambda: float = 0.2
    """Weight of (1 - SSIM) in the loss; L1 gets 1 - ssim_lambda."""
    means_lr: float = 1.6e-4
    """Initial learning rate of the means, times the scene extent."""
    means_lr_final: float = 1.6e-6
    """Final learning rate of the means (exponential decay over `steps`), times the extent."""
    scales_lr: float = 5e-3
    """Learning rate of the log-scales."""
    quats_lr: float = 1e-3
    """Learning rate of the quaternions."""
    opacities_lr: float = 5e-2
    """Learning rate of the opacity logits."""
    sh0_lr: float = 2.5e-3
    """Learning rate of the DC SH coefficients."""
    shN_lr: float = 2.5e-3 / 20
    """Learning rate of the higher-order SH coefficients."""
    background_lr: float = 1e-2
    """Learning rate of the learned background colour (logit space)."""

    # --- densification -----------------------------------------------------------------------
    strategy: Literal["auto", "own", "gsplat"] = "auto"
    """Densification: our clone/split/prune schedule ("own", any device), gsplat's
    DefaultStrategy ("gsplat", CUDA only), or "auto" (gsplat on CUDA, own on CPU)."""
    refine_start: int = 500
    """First step at which Gaussians are cloned, split and pruned."""
    refine_stop: int = 15_000
    """No cloning or splitting from this step on."""
    refine_every: int = 100
    """Clone/split/prune every this many steps."""
    reset_every: int = 3000
    """Reset opacities to 2 x prune_opacity every this many steps (0: never)."""
    grow_grad2d: float = 2e-4
    """Clone or split Gaussians whose mean screen-space gradient exceeds this."""
    grow_scale3d: float = 0.01
    """Clone (small) vs split (large) boundary on the largest scale, as a fraction of the extent."""
    prune_opacity: float = 0.005
    """Remove Gaussians below this opacity."""
    prune_scale3d: float = 0.1
    """Remove Gaussians larger than this fraction of the extent (after the first opacity reset)."""
    max_gaussians: int = 0
    """Cap on the number of Gaussians (0: no cap); growth keeps the highest-gradient candidates."""

    @property
    def undistorted_path(self) -> Path:
        """The folder for undistorted images: --undistorted-dir, or OUT/undistorted."""
        return Path(self.undistorted_dir) if self.undistorted_dir is not None else Path(self.out) / "undistorted"

    @property
    def ssim_weight(self) -> float:
        return self.ssim_lambda

    @property
    def l1_weight(self) -> float:
        return 1.0 - self.ssim_lambda


class _Presets(Mapping):
    """name -> ReconConfig of the shipped preset files (configs/recon/*.yml), read when asked for."""

    def __getitem__(self, name: str) -> ReconConfig:
        if name not in preset_names("recon"):
            raise KeyError(name)
        return replace(apply_config_file(ReconConfig(), preset_path("recon", name), "recon"), preset=name)

    def __iter__(self):
        return iter(preset_names("recon"))

    def __len__(self) -> int:
        return len(preset_names("recon"))


PRESETS: Mapping[str, ReconConfig] = _Presets()
"""Named starting points (configs/recon/NAME.yml); the CLI overrides their fields with flags."""


def resolve_preset_name(name: str) -> str:
    """A shipped preset's name; "auto" asks torch whether CUDA is available ("gpu", else "cpu").
    ValueError naming the choices for an unknown name."""
    if name == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    preset_path("recon", name)  # raises for an unknown name
    return name


def preset(name: str, **overrides) -> ReconConfig:
    """A copy of PRESETS[name] ("auto" resolved) with the given fields replaced; ValueError naming
    the choices."""
    resolved = resolve_preset_name(name)
    return replace(PRESETS[resolved], preset=resolved, **overrides)


def recon_defaults(preset_name: str | None = None, config: Path | None = None) -> ReconConfig:
    """What `splatseg recon` starts from before its flags: the preset (`preset_name`, else the config
    file's own `preset`, else "auto") with the config file applied over it."""
    values = read_config_file(config, ReconConfig, "recon") if config is not None else {}
    name = preset_name or values.pop("preset", None) or "auto"
    values.pop("preset", None)
    values.pop("config", None)
    return replace(preset(name), **values, config=config)
