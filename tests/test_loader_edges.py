"""Camera loaders refuse poses that are not rigid (issue 12): a transforms.json rotation that is
scaled or mirrored would silently shrink or flip the scene, so it must be a one-line SceneError."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from splatseg.data import SceneError, load_scene
from splatseg.data.transforms_json import ROTATION_TOLERANCE


def write_scene(root, matrix) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "images" / "a.png")
    meta = {"fl_x": 10, "w": 8, "h": 6, "frames": [{"file_path": "images/a.png", "transform_matrix": np.asarray(matrix).tolist()}]}
    (root / "transforms.json").write_text(json.dumps(meta))


def pose(R, t=(0.5, -1.0, 2.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = R, t
    return m


def turn(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


@pytest.mark.parametrize("scale", [2.0, 0.5, 1 + 5 * ROTATION_TOLERANCE])
def test_a_scaled_rotation_is_refused(tmp_path, scale):
    write_scene(tmp_path, pose(scale * turn(0.3)))
    with pytest.raises(SceneError, match="not a proper rotation") as info:
        load_scene(tmp_path)
    assert "\n" not in str(info.value) and "frame 0" in str(info.value)


@pytest.mark.parametrize("mirror", [np.diag([1.0, 1, -1]), np.diag([-1.0, 1, 1]), -np.eye(3)])
def test_a_mirrored_rotation_is_refused(tmp_path, mirror):
    write_scene(tmp_path, pose(turn(0.3) @ mirror))
    with pytest.raises(SceneError, match="not a proper rotation") as info:
        load_scene(tmp_path)
    assert "det = -1" in str(info.value)


def test_a_proper_rotation_within_the_tolerance_is_read(tmp_path):
    R = turn(0.3)
    R[0, 0] += 0.2 * ROTATION_TOLERANCE  # rounding in a written file
    write_scene(tmp_path, pose(R))
    cams = load_scene(tmp_path).cameras
    assert cams.viewmats.shape == (1, 4, 4)
    assert np.isfinite(cams.viewmats).all()
