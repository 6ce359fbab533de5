"""Scene directories (docs/FORMATS.md) -> `Scene`: posed pinhole cameras, per-frame extras, sparse points.

Two layouts are detected by `load_scene`, in this order:
1. `root/transforms.json` (nerfstudio / instant-ngp), see `splatseg.data.transforms_json`; its
   `ply_file_path` point cloud (nerfstudio's initial points), when given, becomes `Scene.points`;
2. a COLMAP model in `root/sparse/0/` or `root/sparse/` with images in `root/images/`,
   see `splatseg.data.colmap`.
Cameras are always returned in splatseg's conventions (`splatseg.types`): OpenCV camera axes,
world -> camera `viewmats`, pixel centres at (i + 0.5, j + 0.5). Every image file must have the
size its camera declares (`check_image_sizes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splatseg.types import Cameras


class SceneError(ValueError):
    """A scene directory that cannot be loaded; one-line message naming the file and problem."""


@dataclass
class Scene:
    """A loaded scene directory.

    Attributes:
        root: the scene directory.
        cameras: C cameras (OpenCV axes, world -> camera viewmats, intrinsics for `cameras.widths` x
            `cameras.heights`, which differ from the files' sizes when loaded with `downscale`).
        frame_extras: C dicts of per-frame keys not used for cameras (e.g. `gt_mask_path`, as written
            in the file, relative to `root`); COLMAP scenes give `colmap_image_id`.
        points: float32 [P, 3] sparse points in the world frame (COLMAP, or transforms.json's
            `ply_file_path`), or None.
        point_colors: uint8 [P, 3] RGB of `points`, or None.
    """

    root: Path
    cameras: Cameras
    frame_extras: list[dict]
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None

    @property
    def splats_path(self) -> Path | None:
        """`root/splats.ply` if that file exists, else None."""
        path = self.root / "splats.ply"
        return path if path.is_file() else None


def detect_layout(root: str | Path) -> str:
    """"transforms" or "colmap" for a scene directory; raises SceneError if neither is present."""
    root = Path(root)
    if not root.exists():
        raise SceneError(f"{root}: scene directory does not exist")
    if not root.is_dir():
        raise SceneError(f"{root}: not a directory (expected a scene directory)")
    if (root / "transforms.json").is_file():
        return "transforms"
    if colmap_model_dir(root) is not None:
        return "colmap"
    raise SceneError(f"{root}: no transforms.json and no COLMAP model (sparse/0/cameras.bin|txt) found")


def load_scene(root: str | Path, downscale: float = 1.0) -> Scene:
    """Load a scene directory (layout detected by `detect_layout`).

    Args:
        downscale: images will be used at 1/downscale of their size; intrinsics and sizes are scaled
            with `Cameras.downscaled` (the image files are not touched).
    Raises SceneError with a one-line message.
    """
    root = Path(root)
    layout = detect_layout(root)
    if layout == "transforms":
        cameras, extras = load_transforms_json(root)
        points, colors = load_ply_points(root)  # nerfstudio's ply_file_path, when given
    else:
        cameras, extras, points, colors = load_colmap(root)
    check_image_sizes(cameras)
    if downscale != 1.0:
        if not np.isfinite(downscale) or downscale <= 0:
            raise SceneError(f"{root}: downscale must be a positive number, got {downscale}")
        cameras = cameras.downscaled(downscale)
    return Scene(root=root, cameras=cameras, frame_extras=extras, points=points, point_colors=colors)


def check_image_sizes(cameras: Cameras) -> None:
    """SceneError when an image file's size (read from its header) differs from the size its camera
    declares (transforms.json `w`/`h`, the COLMAP camera). The intrinsics describe the declared
    pixel grid; loading used to stretch such a photo to it without a word, which misaligns every
    pixel unless the aspect ratio happens to match. Refusing is the documented choice: resize the
    images or fix the declared size (`--downscale` is how to train at another resolution)."""
    from splatseg.io.images import ImageError, image_size

    for i, path in enumerate(cameras.image_paths):
        try:
            w, h = image_size(path)
        except ImageError as e:
            raise SceneError(str(e)) from None
        if (w, h) != (int(cameras.widths[i]), int(cameras.heights[i])):
            raise SceneError(f"{path}: the image is {w}x{h} but its camera declares {int(cameras.widths[i])}x"
                             f"{int(cameras.heights[i])} (w/h in transforms.json or the COLMAP camera); resize the "
                             "image or fix the declared size")


# Loaders import SceneError from this module, so they are imported after it is defined.
from splatseg.data.colmap import colmap_model_dir, load_colmap  # noqa: E402
from splatseg.data.transforms_json import load_ply_points, load_transforms_json, write_transforms_json  # noqa: E402

__all__ = [
    "Scene",
    "SceneError",
    "detect_layout",
    "load_scene",
    "load_transforms_json",
    "write_transforms_json",
    "load_colmap",
    "colmap_model_dir",
]
