"""3D point prompts on a hand-made field whose answers are known: on the surface, inside a hollow
object, off the surface, outside the scene, negatives, and mixed with clicks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splatseg.prompts import Prompts, select
from splatseg.query import Point, QueryError, SurfaceIndex, select_by_points
from splatseg.run import Field


def make_scene():
    """Gaussians: object A = a hollow sphere shell (radius 1 at the origin), its part A1 = the cap
    z > 0.5; object B = a square patch in the plane x = 3; a floor z = -1.5 under both.
    Returns (means [N, 3], opacities [N], object [N]: 0 floor, 1 A, 2 B; part [N]: 1 on A1)."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=(400, 3))
    shell = d / np.linalg.norm(d, axis=1, keepdims=True)
    gy, gz = np.meshgrid(np.linspace(-0.6, 0.6, 12), np.linspace(-0.6, 0.6, 12))
    patch = np.stack([np.full(gy.size, 3.0), gy.ravel(), gz.ravel()], 1)
    fx, fy = np.meshgrid(np.linspace(-2, 5, 36), np.linspace(-2, 2, 20))
    floor = np.stack([fx.ravel(), fy.ravel(), np.full(fx.size, -1.5)], 1)
    means = np.concatenate([floor, shell, patch])
    obj = np.concatenate([np.zeros(len(floor)), np.ones(len(shell)), np.full(len(patch), 2)]).astype(int)
    part = np.zeros(len(means), int)
    part[len(floor):len(floor) + len(shell)] = shell[:, 2] > 0.5
    return means, np.full(len(means), 0.9), obj, part


def make_field(obj: np.ndarray, part: np.ndarray) -> Field:
    """Queries 0 = A (whole), 1 = A1 (part), 2 = B, 3 = floor; lifted 240 on their Gaussians, a
    little leakage elsewhere; one 2x2 view whose pixels show A1, A, B and the floor."""
    n, d = len(obj), 4
    lifted = np.full((4, n), 10, np.uint8)
    lifted[0, obj == 1] = 240
    lifted[1, part == 1] = 240
    lifted[2, obj == 2] = 240
    lifted[3, obj == 0] = 240
    maps = np.zeros((1, 2, 2, d), np.float16)
    maps[0, 0, 0] = [1, 1, 0, 0]
    maps[0, 0, 1] = [1, 0, 0, 0]
    maps[0, 1, 0] = [0, 0, 1, 0]
    maps[0, 1, 1] = [0, 0, 0, 1]
    return Field(run_dir=Path("."), info={"num_gaussians": n}, features=np.zeros((n, d), np.float32),
                 queries=np.eye(4, dtype=np.float32) * 4, query_bias=np.full(4, -2.0, np.float32), query_clip=None,
                 lifted=lifted, query_size=lifted.astype(np.float32).sum(1) / 255, visibility=np.ones(n, np.float32),
                 view_names=["v0"], view_maps=maps, image_sizes=np.array([[20, 20]]))


@pytest.fixture(scope="module")
def scene():
    means, opacities, obj, part = make_scene()
    return SurfaceIndex.build(means, opacities), make_field(obj, part), obj, part


def test_point_on_the_surface_selects_its_object(scene):
    surface, fld, obj, part = scene
    on_a = surface.means[np.flatnonzero(obj == 1)[5]]
    assert np.array_equal(select_by_points(fld, surface, [Point(*on_a)]).mask, obj == 1)
    on_b = surface.means[np.flatnonzero(obj == 2)[7]]
    assert np.array_equal(select_by_points(fld, surface, [Point(*on_b)]).mask, obj == 2)
    assert np.array_equal(select_by_points(fld, surface, [Point(0.5, 0.0, -1.5)]).mask, obj == 0)


def test_point_inside_a_hollow_object_selects_the_object_around_it(scene):
    surface, fld, obj, _ = scene
    # the sphere's centre is 1 from its shell and 1.5 from the floor: the shell is the nearest surface
    assert np.array_equal(select_by_points(fld, surface, [Point(0.0, 0.0, 0.0)]).mask, obj == 1)


def test_point_off_the_surface_snaps_within_the_tolerance(scene):
    surface, fld, obj, part = scene
    on_b = surface.means[np.flatnonzero(obj == 2)[40]]
    near_b = Point(*(on_b + [0.02 * surface.size, 0.0, 0.0]))  # in front of the patch, well within 5% of the size
    assert np.array_equal(select_by_points(fld, surface, [near_b]).mask, obj == 2)
    snapped, dist = surface.snap(near_b)
    assert np.allclose(snapped, on_b) and dist == pytest.approx(0.02 * surface.size)
    # midway between the sphere and the patch, more than 5% of the size from either: refused
    with pytest.raises(QueryError, match="from the nearest surface"):
        select_by_points(fld, surface, [Point(2.0, 1.5, 0.0)])
    # a tolerance of 50% accepts it
    assert select_by_points(fld, surface, [Point(2.0, 1.5, 0.0)], tolerance=0.5).count > 0


def test_point_outside_the_scene_bounds_is_refused_in_one_line(scene):
    surface, fld, _, _ = scene
    with pytest.raises(QueryError) as e:
        select_by_points(fld, surface, [Point(0.0, 0.0, 50.0)])
    assert "outside the scene bounds" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(QueryError, match="non-finite"):
        select_by_points(fld, surface, [Point(float("nan"), 0.0, 0.0)])


def test_granularity_and_negative_points(scene):
    surface, fld, obj, part = scene
    top = Point(0.0, 0.0, 1.0)  # on the cap A1
    assert np.array_equal(select_by_points(fld, surface, [top], "part").mask, part == 1)
    # whole A, minus the part under a negative point
    side = Point(1.0, 0.0, 0.0)
    sel = select_by_points(fld, surface, [side, Point(0.0, 0.0, 1.0, positive=False)])
    assert np.array_equal(sel.mask, (obj == 1) & (part == 0))
    with pytest.raises(QueryError, match="positive"):
        select_by_points(fld, surface, [Point(0.0, 0.0, 1.0, positive=False)])


def test_prompts_mix_clicks_and_points_and_check_their_flags(scene):
    surface, fld, obj, _ = scene
    # a click on B's pixel (row 1, col 0 of the 2x2 map of a 20x20 image) and a point on A
    sel = select(fld, Prompts(click=[("v0", 5.0, 15.0)], point=[(1.0, 0.0, 0.0)]), surface)
    assert np.array_equal(sel.mask, (obj == 1) | (obj == 2))
    for bad, message in [(Prompts(), "--point"), (Prompts(point=[(0, 0, 0)], text="a mug"), "not both"),
                         (Prompts(point=[(0, 0, 0)], threshold=2.0), "--threshold")]:
        with pytest.raises(QueryError, match=message):
            select(fld, bad, surface)


def test_surface_must_match_the_run(scene):
    surface, fld, obj, _ = scene
    other = SurfaceIndex.build(surface.means[:-1], surface.opacities[:-1])
    with pytest.raises(QueryError, match="trained on"):
        select_by_points(fld, other, [Point(1.0, 0.0, 0.0)])
