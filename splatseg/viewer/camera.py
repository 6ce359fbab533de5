"""Camera conversions between splatseg `Cameras` and viser's camera state.

Both use OpenCV camera axes (x right, y down, z forward). viser describes a camera by
`wxyz` (R_world_camera as a w x y z quaternion), `position` (camera centre, world frame),
`fov` (vertical field of view, radians) and the canvas size in pixels; its orbit controls also
need a `look_at` point and an `up_direction` (world frame). splatseg describes one by a
world -> camera `viewmat` [4, 4] and intrinsics `K` [3, 3] in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from splatseg.types import Cameras


def quat_to_matrix(wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] from w x y z quaternions [..., 4] (normalised here)."""
    q = np.asarray(wxyz, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


@dataclass
class ViewerPose:
    """A viser camera: position [3], look_at [3], up [3] (world frame), fov_y (radians)."""

    position: np.ndarray
    look_at: np.ndarray
    up: np.ndarray
    fov_y: float


def pose_from_camera(cameras: Cameras, index: int, look_distance: float, world_up: np.ndarray | None = None) -> ViewerPose:
    """The viser pose of camera `index`: same centre and optical axis (look_at `look_distance`
    along it) and the same vertical field of view. `up` is `world_up` (so viser's orbit controls
    turn about the scene's vertical; the view keeps its direction, only a camera roll is levelled)
    unless that is within ~8 degrees of the optical axis or not given; then the camera's own -y."""
    c2w = cameras.camtoworlds[index]
    R = c2w[:3, :3]  # columns: camera x, y, z axes in the world frame
    position = c2w[:3, 3]
    fy = float(cameras.Ks[index, 1, 1])
    fov_y = 2.0 * math.atan(0.5 * float(cameras.heights[index]) / fy)
    up = -R[:, 1]
    if world_up is not None:
        w = np.asarray(world_up, np.float64) / np.linalg.norm(world_up)
        if abs(float(w @ R[:, 2])) < 0.99:
            up = w
    return ViewerPose(position=position, look_at=position + look_distance * R[:, 2], up=up, fov_y=fov_y)


def look_distance(cameras: Cameras, index: int, points: np.ndarray) -> float:
    """Median depth of `points` [P, 3] in front of camera `index` (the orbit centre's distance);
    1.0 when none is in front."""
    z = points @ cameras.viewmats[index, 2, :3] + cameras.viewmats[index, 2, 3]
    z = z[z > 0]
    return float(np.median(z)) if z.size else 1.0


def scene_up(cameras: Cameras) -> np.ndarray:
    """World up direction [3] estimated as the mean of the cameras' up (-y) axes; +z if they
    cancel out."""
    ups = -cameras.camtoworlds[:, :3, 1]
    up = ups.mean(axis=0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-6 else np.array([0.0, 0.0, 1.0])


def viewer_matrices(wxyz: np.ndarray, position: np.ndarray, fov_y: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(viewmat [4, 4] world -> camera, K [3, 3]) of a viser camera rendered at width x height
    pixels (square pixels, centred principal point)."""
    R = quat_to_matrix(wxyz)  # R_world_camera
    viewmat = np.eye(4)
    viewmat[:3, :3] = R.T
    viewmat[:3, 3] = -R.T @ np.asarray(position, np.float64)
    f = 0.5 * height / math.tan(0.5 * fov_y)
    K = np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]])
    return viewmat, K


def project(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [P, 2] (x right, y down, top-left origin), depth [P]) of world points [P, 3]."""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    uv = (cam[:, :2] / np.where(np.abs(z) > 1e-12, z, 1e-12)[:, None]) * np.diag(K)[:2] + K[:2, 2]
    return uv, z
