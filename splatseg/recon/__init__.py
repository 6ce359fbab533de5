"""`splatseg recon`: RGB 3D Gaussian splatting optimisation from posed photos.

Public API:
    ReconConfig                 every knob (a tyro dataclass; each field's docstring is its --help)
    PRESETS["cpu" | "gpu"]      named starting configurations; `preset(name, **overrides)`
    run_recon(cfg) -> Path      reconstruct cfg.data into cfg.out; returns OUT/splats.ply
    ReconError                  one-line bad-input error (a ValueError)

Modules: config (settings), losses (L1 / SSIM / PSNR), init (initial Gaussians), densify
(clone / split / prune), model (parameters, optimisers, rendering), views (images and the
train / held-out split), checkpoint (ckpt.pt), trainer (the loop and the outputs).
"""

from splatseg.recon.config import PRESETS, ReconConfig, preset
from splatseg.recon.trainer import run_recon
from splatseg.recon.views import ReconError

__all__ = ["PRESETS", "ReconConfig", "ReconError", "preset", "run_recon"]
