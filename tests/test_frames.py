"""Moving splats by a similarity (`splatseg.data.frames`): rendering a moved splat set from moved
cameras gives the original images (SH bands rotated), splat-transform's RotateSH agrees, and the
`--splats-transform` files (nerfstudio's dataparser_transforms.json, 4x4, similarity) are read the
way their writers mean them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import require_tool
from splatseg.data.frames import (
    Similarity,
    TransformError,
    read_splats_transform,
    sh_band_rotation,
    transform_cameras,
    transform_splats,
)
from splatseg.io.ply import read_ply, write_ply
from splatseg.render import render
from splatseg.types import Cameras, Splats

REPO = Path(__file__).resolve().parents[1]
SPLAT_TRANSFORM = REPO / "node_modules" / ".bin" / "splat-transform"


def random_splats(n: int, degree: int, seed: int) -> Splats:
    rng = np.random.default_rng(seed)
    bases = (degree + 1) ** 2
    return Splats(
        means=rng.normal(scale=0.6, size=(n, 3)).astype(np.float32),
        quats=(rng.normal(size=(n, 4)) * rng.uniform(0.5, 2.0, size=(n, 1))).astype(np.float32),  # not unit
        log_scales=np.log(rng.uniform(0.03, 0.15, size=(n, 3))).astype(np.float32),
        opacity_logits=rng.normal(1.0, 1.0, size=n).astype(np.float32),
        sh0=rng.normal(scale=0.8, size=(n, 1, 3)).astype(np.float32),
        shN=rng.normal(scale=0.5, size=(n, bases - 1, 3)).astype(np.float32),
        normals=rng.normal(size=(n, 3)).astype(np.float32),
        extra={"object_id": np.arange(n, dtype=np.uint32)},
    )


def ring_cameras(num: int, size: int = 48, radius: float = 3.0) -> Cameras:
    viewmats = []
    for i in range(num):
        a = 2 * np.pi * i / num
        eye = np.array([radius * np.cos(a), radius * np.sin(a), 0.8 * (-1) ** i])
        forward = -eye / np.linalg.norm(eye)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([right, down, forward], axis=1)
        c2w[:3, 3] = eye
        viewmats.append(np.linalg.inv(c2w))
    K = np.array([[size * 1.1, 0, size / 2], [0, size * 1.1, size / 2], [0, 0, 1]])
    return Cameras(np.stack(viewmats), np.repeat(K[None], num, 0), np.full(num, size), np.full(num, size),
                   [f"v{i}" for i in range(num)], [Path(f"v{i}.png") for i in range(num)])


def render_rgb(splats: Splats, cams: Cameras) -> np.ndarray:
    p = splats.torch_params()
    with torch.no_grad():
        out = render(p["means"], p["quats"], p["scales"], p["opacities"], p["sh"], torch.from_numpy(cams.viewmats).float(),
                     torch.from_numpy(cams.Ks).float(), int(cams.widths[0]), int(cams.heights[0]), sh_degree=splats.sh_degree)
    return out.colors.numpy()


SIM = Similarity.from_matrix(np.block([[2.5 * Rotation.from_euler("xyz", [35, -70, 120], degrees=True).as_matrix(),
                                        np.array([[0.4], [-1.2], [3.0]])], [np.zeros((1, 3)), np.ones((1, 1))]]))


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_moved_splats_render_from_moved_cameras_like_the_original(degree):
    splats = random_splats(150, degree, seed=degree)
    cams = ring_cameras(4)
    before = render_rgb(splats, cams)
    moved = transform_splats(splats, SIM)
    after = render_rgb(moved, transform_cameras(cams, SIM))
    assert before.std() > 0.1
    np.testing.assert_allclose(after, before, atol=2e-4)
    # the SH rotation is what makes it match: the same move with the bands left as they were does not
    unrotated = render_rgb(Splats(**{**moved.__dict__, "shN": splats.shN}), transform_cameras(cams, SIM))
    assert np.abs(unrotated - before).max() > 0.05
    # what must not change, does not; what must, does as specified
    assert np.array_equal(moved.sh0, splats.sh0) and np.array_equal(moved.opacity_logits, splats.opacity_logits)
    np.testing.assert_allclose(np.linalg.norm(moved.quats, axis=1), np.linalg.norm(splats.quats, axis=1), rtol=1e-5)
    np.testing.assert_allclose(moved.log_scales, splats.log_scales + np.log(2.5), atol=1e-6)
    np.testing.assert_allclose(moved.normals, splats.normals @ SIM.rotation.T, atol=1e-5)
    assert np.array_equal(moved.extra["object_id"], splats.extra["object_id"])


def test_band_matrices_are_orthogonal_and_compose():
    r1, r2 = (Rotation.random(random_state=s).as_matrix() for s in (1, 2))
    for d1, d2, d12 in zip(sh_band_rotation(r1, 3), sh_band_rotation(r2, 3), sh_band_rotation(r2 @ r1, 3)):
        np.testing.assert_allclose(d1 @ d1.T, np.eye(len(d1)), atol=1e-12)
        np.testing.assert_allclose(d2 @ d1, d12, atol=1e-12)


def test_sh_rotation_agrees_with_splat_transform(tmp_path):
    """splat-transform's RotateSH (PlayCanvas, after sh-lib) is the kept implementation: rotate a PLY
    with it, read the rotation back from the moved means, and compare every f_rest coefficient."""
    require_tool(SPLAT_TRANSFORM.exists() and shutil.which("node") is not None, "splat-transform not installed (npm install) or node missing")
    splats = random_splats(200, 3, seed=7)
    splats = Splats(**{**splats.__dict__, "extra": {}})
    write_ply(tmp_path / "in.ply", splats)
    proc = subprocess.run([str(SPLAT_TRANSFORM), "-q", "-w", str(tmp_path / "in.ply"), "-r", "25,-60,140", str(tmp_path / "out.ply")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = read_ply(tmp_path / "out.ply")
    # their rotation, from the means (orthogonal Procrustes)
    u, _, vt = np.linalg.svd(theirs.means.astype(np.float64).T @ splats.means.astype(np.float64))
    rotation = u @ vt
    ours = transform_splats(splats, Similarity(rotation, np.zeros(3), 1.0))
    np.testing.assert_allclose(ours.means, theirs.means, atol=1e-5)
    np.testing.assert_allclose(ours.shN, theirs.shN, atol=1e-4)
    same_sign = np.sign(np.sum(ours.quats * theirs.quats, axis=1, keepdims=True))  # q and -q are one rotation
    np.testing.assert_allclose(ours.quats / np.linalg.norm(ours.quats, axis=1, keepdims=True) * same_sign,
                               theirs.quats / np.linalg.norm(theirs.quats, axis=1, keepdims=True), atol=1e-5)


def test_similarity_checks():
    with pytest.raises(TransformError, match="mirrors the scene"):
        Similarity.from_matrix(np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(TransformError, match="not a similarity"):
        Similarity.from_matrix(np.diag([1.0, 2.0, 1.0, 1.0]))
    with pytest.raises(TransformError, match="bottom row"):
        Similarity.from_matrix([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])
    with pytest.raises(TransformError, match="4x4"):
        Similarity.from_matrix(np.eye(3))
    np.testing.assert_allclose(SIM.then(SIM.inverse()).matrix, np.eye(4), atol=1e-12)
    assert SIM.scale == pytest.approx(2.5)


def nerfstudio_normalise(points: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """What nerfstudio's dataparser does to world points (`_load_3D_points`): (x_h @ T^T) * s."""
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    return (homogeneous @ transform.T) * scale


def test_nerfstudio_dataparser_transforms_are_undone(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3)) * 3 + [10.0, -4.0, 2.0]
    transform = np.hstack([Rotation.random(random_state=3).as_matrix(), rng.normal(size=(3, 1))])  # 3x4, as saved
    (tmp_path / "dataparser_transforms.json").write_text(json.dumps({"transform": transform.tolist(), "scale": 0.07}))
    sim, record = read_splats_transform(tmp_path / "dataparser_transforms.json")
    x_ns = nerfstudio_normalise(points, transform, 0.07)
    np.testing.assert_allclose(x_ns * sim.scale @ sim.rotation.T + sim.translation, points, atol=1e-9)
    assert record["kind"] == "nerfstudio dataparser_transforms" and np.allclose(record["world_from_splats"], sim.matrix)

    # ns-process-data scenes: transforms.json frames are in applied_transform's frame, and the saved
    # transform starts from the frame before it (nerfstudio composes transform @ applied_transform)
    applied = np.eye(4)[:3][[0, 2, 1]]
    applied[2] *= -1
    scene = tmp_path / "scene"
    scene.mkdir()
    (scene / "transforms.json").write_text(json.dumps({"applied_transform": applied.tolist(), "frames": []}))
    saved = (np.vstack([transform, [0, 0, 0, 1]]) @ np.vstack([applied, [0, 0, 0, 1]]))[:3]
    (tmp_path / "dataparser_transforms.json").write_text(json.dumps({"transform": saved.tolist(), "scale": 0.07}))
    sim, record = read_splats_transform(tmp_path / "dataparser_transforms.json", scene_root=scene)
    x_ns = nerfstudio_normalise(points, saved, 0.07)  # points in the original (COLMAP) frame
    np.testing.assert_allclose(x_ns * sim.scale @ sim.rotation.T + sim.translation, points @ applied[:, :3].T, atol=1e-9)
    assert record["applied_transform_from"].endswith("transforms.json")


def test_matrix_and_similarity_files_and_errors(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(SIM.matrix.tolist()))
    np.testing.assert_allclose(read_splats_transform(path)[0].matrix, SIM.matrix, atol=1e-12)
    path.write_text(json.dumps({"world_from_splats": SIM.matrix.tolist()}))
    np.testing.assert_allclose(read_splats_transform(path)[0].matrix, SIM.matrix, atol=1e-12)
    x, y, z, w = Rotation.from_matrix(SIM.rotation).as_quat()
    path.write_text(json.dumps({"rotation": [w, x, y, z], "translation": SIM.translation.tolist(), "scale": 2.5}))
    np.testing.assert_allclose(read_splats_transform(path)[0].matrix, SIM.matrix, atol=1e-9)
    for body, message in [({"transform": np.diag([1.0, 1, -1, 1]).tolist(), "scale": 1}, "mirrors the scene"),
                          ({"transform": np.eye(4).tolist(), "scale": -2}, "'scale' must be a positive number"),
                          ({"hello": 1}, "unknown transform file"),
                          ({"rotation": [1, 2]}, "'rotation' must be")]:
        path.write_text(json.dumps(body))
        with pytest.raises(TransformError, match=message) as e:
            read_splats_transform(path)
        assert "\n" not in str(e.value)
    path.write_text("{not json")
    with pytest.raises(TransformError, match="malformed JSON"):
        read_splats_transform(path)
    with pytest.raises(TransformError, match="not found"):
        read_splats_transform(tmp_path / "missing.json")
