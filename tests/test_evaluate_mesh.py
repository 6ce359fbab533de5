"""Mesh evaluation pieces with known answers: surface scores of offset planes, true-surface samples
on splat discs, visibility by depth test."""

from __future__ import annotations

import numpy as np
import pytest

from splatseg.evaluate_mesh import SceneDepths, disc_surface_samples
from splatseg.surface_metrics import surface_scores
from splatseg.types import Cameras
from test_mesh import disc_splats


def grid_plane(z: float, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    pts = np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], 1)
    return pts, np.tile([0.0, 0.0, 1.0], (len(pts), 1))


def test_surface_scores_of_offset_planes():
    gt, gn = grid_plane(0.0)
    near, nn = grid_plane(0.01)
    s = surface_scores(near, nn, gt, gn, tau=0.02)
    assert s.fscore == 1.0 and np.isclose(s.chamfer, 0.01) and np.isclose(s.normal_consistency, 1.0)
    far, fn = grid_plane(0.05)
    s = surface_scores(far, fn, gt, gn, tau=0.02)
    assert s.fscore == 0.0 and s.precision == 0.0 and s.recall == 0.0 and np.isclose(s.chamfer, 0.05)
    # a tilted prediction loses normal consistency; flipped normals do not (orientation-free)
    tilted = np.tile(np.array([[0.0, np.sin(0.5), np.cos(0.5)]]), (len(near), 1))
    assert np.isclose(surface_scores(near, tilted, gt, gn, 0.02).normal_consistency, np.cos(0.5))
    assert np.isclose(surface_scores(near, -nn, gt, gn, 0.02).normal_consistency, 1.0)
    # half the prediction is missing: recall halves, precision stays
    half = near[:, 0] <= 0.5
    s = surface_scores(near[half], nn[half], gt, gn, tau=0.02)
    assert s.precision == 1.0 and 0.45 < s.recall < 0.55
    # precision against a larger reference than recall
    s = surface_scores(far, fn, gt, gn, tau=0.02, precision_points=np.concatenate([gt, far]))
    assert s.precision == 1.0 and s.recall == 0.0
    with pytest.raises(ValueError):
        surface_scores(near[:0], nn[:0], gt, gn, 0.02)


def test_disc_samples_lie_in_each_discs_plane_near_its_centre():
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(50, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    centres = rng.normal(size=(50, 3))
    splats = disc_splats(centres, normals, spacing=0.1, rgb=(0.5, 0.5, 0.5))
    pts, nrm = disc_surface_samples(splats, per_gaussian=8, disc_radius=0.5)
    assert pts.shape == (50 * 9, 3) and nrm.shape == pts.shape
    owner = np.repeat(np.arange(50), 9)
    offset = pts - centres[owner]
    assert np.allclose(np.abs(np.sum(nrm * normals[owner], 1)), 1.0, atol=1e-5)  # the disc's normal
    assert np.abs(np.sum(offset * normals[owner], 1)).max() < 1e-5  # in its plane
    assert np.linalg.norm(offset, axis=1).max() <= 0.5 * 0.1 * 1.0001  # within half a spacing


def test_points_behind_an_opaque_sheet_are_not_seen():
    # one camera at the origin looking down +z; an opaque sheet at z = 1 covering the middle
    n = 400
    xy = np.random.default_rng(0).uniform(-0.2, 0.2, (n, 2))
    sheet = disc_splats(np.c_[xy, np.ones(n)], np.tile([0.0, 0.0, 1.0], (n, 1)), 0.02, (1, 1, 1))
    K = np.array([[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]])
    cams = Cameras(viewmats=np.eye(4)[None], Ks=K[None], widths=np.array([32]), heights=np.array([32]), names=["c"], image_paths=["c.png"])
    depths = SceneDepths(sheet, cams, upscale=1.0)
    points = np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 1.0], [0.0, 0.0, 1.5], [0.45, 0.0, 1.5], [0.0, 0.0, -1.0], [5.0, 0.0, 1.0]])
    seen = depths.seen(points, tolerance=0.05)
    # in front, on the sheet, behind it, beside it (nothing in front), behind the camera, outside the image
    assert seen.tolist() == [True, True, False, True, False, False]
