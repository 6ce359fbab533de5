"""Training and held-out views of a scene: cameras at the training resolution and their images.

Images are float32 [H_c, W_c, 3] in [0, 1] at each camera's (downscaled) size, on the training
device; cameras follow `types.Cameras` (OpenCV, world -> camera). The held-out views follow the one
split of every stage (`splatseg.data.split`): sorted by image name, every `test_every`-th held out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from splatseg.data import Scene, load_scene
from splatseg.data.split import split_views
from splatseg.data.undistort import needs_undistortion, undistort_scene
from splatseg.io.images import load_image
from splatseg.types import Cameras


class ReconError(ValueError):
    """Bad input to `splatseg recon` (scene, checkpoint or configuration); one-line message."""


@dataclass
class Views:
    scene: Scene
    cameras: Cameras  # all views, at the training resolution
    images: list[Tensor]  # per view float32 [H, W, 3] in [0, 1], on the device
    viewmats: Tensor  # [C, 4, 4] float32, on the device
    Ks: Tensor  # [C, 3, 3] float32, on the device
    train: list[int]
    test: list[int]
    undistortion: dict | None = None  # `undistort_scene`'s record when the scene declared distortion

    def size(self, i: int) -> tuple[int, int]:
        """(width, height) of view i."""
        return int(self.cameras.widths[i]), int(self.cameras.heights[i])

    def numpy_images(self, indices: list[int]) -> list[np.ndarray]:
        return [self.images[i].cpu().numpy() for i in indices]


def load_views(data: Path, downscale: float, test_every: int, device: torch.device, undistorted_dir: Path | None = None,
               progress: bool = True) -> Views:
    """Load the scene (distorted views undistorted into `undistorted_dir`), at 1/downscale
    resolution, and split it; ReconError if nothing is left to train on (the loaders raise their own
    one-line errors for malformed scenes)."""
    scene = load_scene(data)
    if undistorted_dir is not None:
        scene, undistortion = undistort_scene(scene, undistorted_dir, progress=progress)
    elif needs_undistortion(scene.cameras).any():
        raise ReconError(f"{data}: the cameras declare lens distortion; give a folder for the undistorted images")
    else:
        undistortion = None
    if downscale != 1.0:
        scene = replace(scene, cameras=scene.cameras.downscaled(downscale))
    cams = scene.cameras
    if len(cams) == 0:
        raise ReconError(f"{data}: the scene has no views")
    train, test = split_views(cams.names, test_every)
    if not train:
        raise ReconError(
            f"{data}: no training views left ({len(cams)} view(s), every {test_every}th held out); use --test-every 0 or add views"
        )
    images = []
    for i in range(len(cams)):
        w, h = int(cams.widths[i]), int(cams.heights[i])
        img = load_image(cams.image_paths[i], size=(w, h))
        images.append(torch.from_numpy(img.astype(np.float32) / 255.0).to(device))
    return Views(
        scene=scene,
        cameras=cams,
        images=images,
        viewmats=torch.from_numpy(cams.viewmats).float().to(device),
        Ks=torch.from_numpy(cams.Ks).float().to(device),
        train=train,
        test=test,
        undistortion=undistortion,
    )


def border_color(images: list[Tensor], width: int = 2) -> Tensor:
    """Median RGB [3] of the outermost `width` pixels of the given images (a background guess)."""
    px = []
    for img in images:
        px += [img[:width].reshape(-1, 3), img[-width:].reshape(-1, 3), img[:, :width].reshape(-1, 3), img[:, -width:].reshape(-1, 3)]
    return torch.cat(px).median(dim=0).values
