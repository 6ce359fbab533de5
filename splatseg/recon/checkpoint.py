"""`OUT/ckpt.pt`: everything needed to continue a reconstruction exactly where it stopped.

Contents (a `torch.save` dict, written atomically): `version`; `step` (number of completed
steps); `params` (name -> raw tensor, see recon.model); `optimizers` (name -> Adam state_dict);
`background` ([3] logit) and its optimiser state; `strategy` (densification state); `history`
(periodic evaluations); `seconds` / `cpu_seconds` (accumulated wall-clock / process CPU time);
`strategy_kind` (the densification class); `fingerprint` (what the run was made
for: view names, training image sizes, camera poses, train/test split, SH degree, background
mode). A checkpoint is only resumed when its fingerprint equals the current one. It is read with
`torch.load(weights_only=True)` (`splatseg.io.checkpoint`): tensors and plain containers only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from splatseg.io.checkpoint import CheckpointError, load_state, save_state
from splatseg.recon.views import ReconError
from splatseg.types import Cameras

CHECKPOINT_NAME = "ckpt.pt"
CHECKPOINT_VERSION = 1


def fingerprint(cameras: Cameras, train: list[int], test: list[int], sh_degree: int, background: str) -> dict:
    """What a checkpoint must agree with to be resumed (JSON-like dict)."""
    poses = np.round(cameras.viewmats.astype(np.float64), 5).tobytes() + np.round(cameras.Ks.astype(np.float64), 3).tobytes()
    return {
        "names": list(cameras.names),
        "sizes": [[int(w), int(h)] for w, h in zip(cameras.widths, cameras.heights)],
        "cameras_sha1": hashlib.sha1(poses).hexdigest(),
        "train": list(train),
        "test": list(test),
        "sh_degree": int(sh_degree),
        "background": background,
    }


def _first_difference(saved: dict, current: dict) -> str:
    if saved.get("names") != current["names"]:
        return f"views differ ({len(saved.get('names', []))} saved vs {len(current['names'])} in the scene)"
    if saved.get("sizes") != current["sizes"]:
        s, c = saved["sizes"][0], current["sizes"][0]
        return f"image size differs ({s[0]}x{s[1]} saved vs {c[0]}x{c[1]} now; same --downscale?)"
    if saved.get("cameras_sha1") != current["cameras_sha1"]:
        return "camera poses or intrinsics differ"
    if saved.get("train") != current["train"] or saved.get("test") != current["test"]:
        return "train/test split differs (same --test-every?)"
    if saved.get("sh_degree") != current["sh_degree"]:
        return f"SH degree differs ({saved.get('sh_degree')} saved vs {current['sh_degree']} now)"
    if saved.get("background") != current["background"]:
        return f"background mode differs ({saved.get('background')} saved vs {current['background']} now)"
    return "unknown difference"


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomically write `payload` (see the module docstring) to `path`."""
    save_state(path, {"version": CHECKPOINT_VERSION, **payload})


def load_checkpoint(path: Path, expected: dict, device: torch.device) -> dict:
    """Read `path` and check it was made for this scene (`expected` fingerprint); ReconError
    with a one-line reason otherwise."""
    if not path.is_file():
        raise ReconError(f"{path}: no checkpoint to resume from (run without --resume first)")
    try:  # weights_only: a crafted file cannot run code (splatseg.io.checkpoint)
        ckpt = load_state(path, map_location=device, what="recon checkpoint", remedy="drop --resume to start over")
    except CheckpointError as e:
        raise ReconError(str(e)) from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION or "fingerprint" not in ckpt:
        raise ReconError(f"{path}: not a splatseg recon checkpoint (version {CHECKPOINT_VERSION})")
    if ckpt["fingerprint"] != expected:
        reason = _first_difference(ckpt["fingerprint"], expected)
        raise ReconError(f"{path}: checkpoint does not match this scene: {reason}; drop --resume to start over")
    return ckpt
