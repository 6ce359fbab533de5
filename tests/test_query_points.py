"""The 3D point prompts' surface logic (`SurfaceIndex`: build, enclosure, snap, neighbourhood) and
`discover_objects` on tiny hand-made point sets whose answers are known in closed form (issue 12's
follow-up: the survivors of a mutation run of splatseg/query.py). Each test names the documented
behaviour it checks; none needs a trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splatseg.query import (ENCLOSED_TOLERANCE, POINT_NEIGHBOURS, SNAP_TOLERANCE, SURFACE_MIN_OPACITY, Point, QueryError,
                            SurfaceIndex, discover_objects, query_for_point, select_by_points)
from splatseg.run import Field


def grid(xs, ys, z=0.0) -> np.ndarray:
    """[len(xs) * len(ys), 3] points of a grid in the plane z = `z`."""
    gx, gy = np.meshgrid(np.asarray(xs, np.float64), np.asarray(ys, np.float64))
    return np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)], 1)


def line(positions) -> np.ndarray:
    """[n, 3] points on the x axis."""
    p = np.asarray(positions, np.float64)
    return np.stack([p, np.zeros_like(p), np.zeros_like(p)], 1)


def field(lifted, query_size=None, containment=None) -> Field:
    """A Field of K queries over N Gaussians given by its lifted scores [K, N] uint8."""
    lifted = np.asarray(lifted, np.uint8)
    k, n = lifted.shape
    size = lifted.astype(np.float32).sum(1) / 255 if query_size is None else np.asarray(query_size, np.float32)
    return Field(
        run_dir=Path("."), info={"num_gaussians": n, "clip_has_weights": False}, features=np.zeros((n, k), np.float32),
        queries=np.eye(k, dtype=np.float32), query_bias=np.zeros(k, np.float32), query_clip=None, lifted=lifted,
        query_size=size, visibility=np.ones(n, np.float32),
        view_names=["v0"], view_maps=np.zeros((1, 1, 1, k), np.float16), image_sizes=np.array([[1, 1]]),
        containment=None if containment is None else np.asarray(containment, np.float32),
    )


# ---------------------------------------------------------------------------- build


def test_build_keeps_float64_copies_of_int_and_float32_input():
    index = SurfaceIndex.build(np.arange(30, dtype=np.int32).reshape(10, 3), np.full(10, 0.9, np.float32))
    assert index.means.dtype == np.float64 and index.opacities.dtype == np.float64
    _, weights = index.neighbourhood(index.means[0])
    assert weights.dtype == np.float64


def test_surface_is_the_finite_gaussians_at_least_min_opacity():
    means = line([0, 1, 2, 3, 4, 5, 6])
    means[5] = np.nan  # opaque but not finite: neither a surface nor in the bounds
    opacities = np.array([0.9, SURFACE_MIN_OPACITY, np.nextafter(SURFACE_MIN_OPACITY, 0), 0.0, np.nan, 0.9, 0.9])
    index = SurfaceIndex.build(means, opacities)
    assert index.surface.tolist() == [0, 1, 6]
    assert np.isfinite(index.lo).all() and np.isfinite(index.hi).all()


def test_too_faint_scenes_fall_back_to_every_visible_gaussian():
    # nothing reaches SURFACE_MIN_OPACITY: Gaussians strictly above 1/255 are the surfaces
    opacities = np.array([0.2, 1.0 / 255, 1.5 / 255, 0.0, 0.29])
    index = SurfaceIndex.build(line([0, 1, 2, 3, 4]), opacities)
    assert index.surface.tolist() == [0, 2, 4]
    # one opaque Gaussian is enough: the faint ones are not added
    index = SurfaceIndex.build(line([0, 1, 2, 3, 4]), np.array([0.9, 0.2, 0.2, 0.2, 0.2]))
    assert index.surface.tolist() == [0]
    snapped, dist = index.snap(Point(0.0, 0.0, 0.0))
    assert snapped.tolist() == [0.0, 0.0, 0.0] and dist == 0.0
    with pytest.raises(QueryError, match="no visible Gaussian"):
        SurfaceIndex.build(line([0, 1]), np.array([1.0 / 255, 0.0]))


def test_a_single_surface_gaussian_builds_and_snaps():
    means = np.concatenate([line([0.0]), line([4.0])])
    index = SurfaceIndex.build(means, np.array([0.9, 0.0]))
    assert index.surface.tolist() == [0]
    assert index.spacing == pytest.approx(max(index.size, 1e-12))
    snapped, dist = index.snap(Point(0.0, 0.0, 0.0))
    assert snapped.tolist() == [0.0, 0.0, 0.0] and dist == 0.0


def test_two_surface_gaussians_space_by_their_distance():
    index = SurfaceIndex.build(line([0.0, 2.0]), np.array([0.9, 0.9]))
    assert index.spacing == pytest.approx(2.0)


@pytest.mark.parametrize("scale", [0.01, 1.0, 10.0])
def test_spacing_is_the_median_distance_to_the_4th_nearest_neighbour(scale):
    # gaps alternate 1, 2 (0, 1, 3, 4, 6, 7, ...): from every inner point the sorted distances are
    # 1, 2, 3, 3, 4, so the 4th nearest is 3 (3rd: 2, 5th: 3, nearest: 1)
    pos = np.cumsum([0] + [1, 2] * 100)
    index = SurfaceIndex.build(line(pos * scale), np.full(len(pos), 0.9))
    assert index.spacing == pytest.approx(3.0 * scale)


@pytest.mark.parametrize("scale", [0.01, 1.0, 10.0])
def test_size_and_bounds_of_an_anisotropic_box(scale):
    # 101 values per axis so the 1% / 99% quantiles fall on grid values; box 100 x 50 x 20, off the origin
    t = np.linspace(0.0, 1.0, 101)
    pts = np.stack([7 + 100 * t, -3 + 50 * t[::-1], 11 + 20 * t], 1) * scale
    index = SurfaceIndex.build(pts, np.full(len(pts), 0.9))
    size = np.linalg.norm([98.0, 49.0, 19.6]) * scale
    assert index.size == pytest.approx(size)
    margin = SNAP_TOLERANCE * size
    assert index.lo == pytest.approx(np.array([7, -3, 11]) * scale - margin)
    assert index.hi == pytest.approx(np.array([107, 47, 31]) * scale + margin)


def test_bounds_cover_faint_gaussians_but_size_only_the_opaque_ones():
    means = np.concatenate([line(np.linspace(0, 1, 101)), [[0.0, 0.0, 50.0]]])
    index = SurfaceIndex.build(means, np.concatenate([np.full(101, 0.9), [0.0]]))
    assert index.size == pytest.approx(0.98)
    assert index.hi[2] == pytest.approx(50 + SNAP_TOLERANCE * 0.98)


# ---------------------------------------------------------------------------- snap


def test_points_on_the_bounds_are_inside_them():
    pts = grid(np.arange(11.0), np.arange(11.0))
    index = SurfaceIndex.build(pts, np.full(len(pts), 0.9))
    for xyz in ([index.lo[0], 5.0, 0.0], [index.hi[0], 5.0, 0.0], [5.0, 5.0, index.lo[2]], [5.0, 5.0, index.hi[2]]):
        index.snap(Point(*xyz), tolerance=1.0)  # on a face of the box: answered
    for xyz in ([np.nextafter(index.lo[0], -1), 5.0, 0.0], [5.0, 5.0, np.nextafter(index.hi[2], 99)]):
        with pytest.raises(QueryError, match="outside the scene bounds"):
            index.snap(Point(*xyz), tolerance=1.0)


def test_a_point_exactly_at_the_tolerance_snaps_and_one_beyond_is_refused():
    # a dense floor (spacing 0.1), so the tolerance (0.69) is well beyond the 1.5 x spacing within which
    # every point counts as enclosed; the last Gaussian only widens the bounds
    pts = np.concatenate([grid(np.arange(101) * 0.1, np.arange(101) * 0.1), [[0.0, 0.0, 5.0]]])
    index = SurfaceIndex.build(pts, np.concatenate([np.full(len(pts) - 1, 0.9), [0.0]]))
    d = SNAP_TOLERANCE * index.size
    snapped, dist = index.snap(Point(0.0, 0.0, d))
    assert snapped.tolist() == [0.0, 0.0, 0.0] and dist == d
    with pytest.raises(QueryError, match="farther than"):
        index.snap(Point(0.0, 0.0, np.nextafter(d, 1.0)))


def cube_shell(side: int = 20) -> np.ndarray:
    """A closed hollow cube (grid spacing 1) over x, y in [-side/2, side/2], z in [0, side]."""
    h = side // 2
    a = np.arange(-h, h + 1.0)
    faces = [grid(a, a, 0.0), grid(a, a, float(side))]
    for sign in (-h, h):
        gy, gz = np.meshgrid(a, np.arange(1.0, side))
        faces.append(np.stack([np.full(gy.size, float(sign)), gy.ravel(), gz.ravel()], 1))
        faces.append(np.stack([gy.ravel(), np.full(gy.size, float(sign)), gz.ravel()], 1))
    return np.unique(np.concatenate(faces), axis=0)


def test_an_enclosed_point_exactly_at_the_enclosed_tolerance_is_answered():
    pts = cube_shell()
    index = SurfaceIndex.build(pts, np.full(len(pts), 0.9))
    d = ENCLOSED_TOLERANCE * index.size  # 8.66: nearer the floor's centre than any other wall
    snapped, dist = index.snap(Point(0.0, 0.0, d))
    assert snapped.tolist() == [0.0, 0.0, 0.0] and dist == d
    with pytest.raises(QueryError, match="not inside an object"):
        index.snap(Point(0.0, 0.0, np.nextafter(d, 99.0)))


# ---------------------------------------------------------------------------- enclosure


def floor_scene(half: int = 60, top: float = 30.0) -> SurfaceIndex:
    """A grid floor (spacing 1) over [-half, half]^2 at z = 0 and a transparent Gaussian at height
    `top` so the bounds reach above it; spacing 1, so a ray hits within 1.5 of a floor point."""
    pts = np.concatenate([grid(np.arange(-half, half + 1.0), np.arange(-half, half + 1.0)), [[0.0, 0.0, top]]])
    return SurfaceIndex.build(pts, np.concatenate([np.full(len(pts) - 1, 0.9), [0.0]]))


def test_enclosure_above_a_wide_floor_is_one_half():
    index = floor_scene()
    assert index.spacing == pytest.approx(1.0)
    # 2 above the floor: every ray going down meets it, none going up (z of the directions is symmetric)
    assert index.enclosure(np.array([0.0, 0.0, 2.0])) == 0.5
    assert index.enclosure(np.array([0.5, -0.3, 2.0]), directions=128) == 0.5
    # within 1.5 x spacing of a surface the ray's first sample (the point itself) meets it
    assert index.enclosure(np.array([0.0, 0.0, 1.0])) == 1.0
    assert index.enclosure(np.array([0.0, 0.0, 1.4])) == 1.0


def test_enclosure_counts_surfaces_closer_than_one_world_unit():
    # the same floor scaled down 50 times: the steps follow the spacing, not the world unit
    pts = np.concatenate([grid(np.arange(-60, 61.0), np.arange(-60, 61.0)) * 0.02, [[0.0, 0.0, 0.6]]])
    index = SurfaceIndex.build(pts, np.concatenate([np.full(len(pts) - 1, 0.9), [0.0]]))
    assert index.spacing == pytest.approx(0.02)
    assert index.enclosure(np.array([0.0, 0.0, 0.04])) == 0.5
    assert index.enclosure(np.array([0.0, 0.0, 0.02])) == 1.0


def test_enclosure_inside_a_closed_box_is_one_and_outside_it_about_a_half():
    pts = cube_shell()
    index = SurfaceIndex.build(pts, np.full(len(pts), 0.9))
    assert index.enclosure(np.array([0.0, 0.0, 10.0])) == 1.0
    assert index.enclosure(np.array([3.3, -2.1, 4.7])) == 1.0


def cap_scene(axis: np.ndarray, half_angle_deg: float, radius: float = 25.0) -> SurfaceIndex:
    """Surface Gaussians on the part of a sphere (radius `radius`, centre the origin, spacing about
    1) within `half_angle_deg` of `axis`, and transparent Gaussians at the sphere's box corners."""
    n = int(4 * np.pi * radius**2 * 1.3)
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = i * np.pi * (1 + 5**0.5)  # an independent spiral (another angle from the index's)
    d = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], 1)
    cap = d[d @ axis >= np.cos(np.radians(half_angle_deg))] * radius
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64) * radius
    return SurfaceIndex.build(np.concatenate([cap, corners]), np.concatenate([np.full(len(cap), 0.9), np.zeros(8)]))


@pytest.mark.parametrize("axis", [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0.6, -0.8, 0)])
def test_enclosure_by_a_spherical_cap_is_its_share_of_the_sphere(axis):
    # the directions cover the sphere evenly: a cap of half-angle 60 deg holds (1 - cos 60) / 2 = 1/4
    # of them, whichever way it faces (blurred by the 1.5 x spacing hit radius at distance 25)
    index = cap_scene(np.asarray(axis, np.float64), 60.0)
    assert index.enclosure(np.zeros(3), directions=256) == pytest.approx(0.25, abs=0.04)
    assert index.enclosure(np.zeros(3)) == pytest.approx(0.25, abs=0.07)


def test_enclosure_finds_a_surface_hundreds_of_steps_away():
    # a wall 400 spacings away: the march goes on past its first chunks of 256 samples
    gy, gz = np.meshgrid(np.arange(-150, 151.0), np.arange(-150, 151.0))
    wall = np.stack([np.full(gy.size, -450.0), gy.ravel(), gz.ravel()], 1)
    pts = np.concatenate([wall, [[450.0, 0.0, 0.0]]])
    index = SurfaceIndex.build(pts, np.concatenate([np.full(len(wall), 0.9), [0.0]]))
    xyz = np.array([-50.0, 0.0, 0.0])
    # the wall spans atan(150 / 400) = 20.6 deg around -x: (1 - cos 20.6 deg) / 2 = 3.2% of the directions
    assert index.enclosure(xyz, directions=256) == pytest.approx(0.032, abs=0.015)


# ---------------------------------------------------------------------------- neighbourhood


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_neighbourhood_weights_are_opacity_times_a_gaussian_of_the_4th_distance(scale):
    means = line(np.arange(8.0) * scale)
    opacities = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3])
    index = SurfaceIndex.build(means, opacities)
    idx, w = index.neighbourhood(means[0])
    assert idx.tolist() == list(range(8))  # fewer surfaces than POINT_NEIGHBOURS: all of them, nearest first
    d = np.arange(8.0) * scale
    spread = 3.0 * scale  # the 4th nearest (itself included) is 3 away
    assert w == pytest.approx(opacities * np.exp(-0.5 * (d / spread) ** 2))


def test_neighbourhood_takes_point_neighbours_and_copes_with_few_surfaces():
    means = line(np.arange(40.0))
    index = SurfaceIndex.build(means, np.full(40, 0.9))
    idx, w = index.neighbourhood(means[20])
    assert len(idx) == POINT_NEIGHBOURS == len(w)
    assert sorted(idx.tolist()) == list(range(12, 28)) or sorted(idx.tolist()) == list(range(13, 29))
    for n in (1, 2, 3, 4):  # the spread is the farthest of them when there are 4 or fewer
        index = SurfaceIndex.build(line(np.arange(n) * 2.0), np.full(n, 0.5))
        idx, w = index.neighbourhood(np.zeros(3))
        d = np.arange(n) * 2.0
        spread = max(d[-1], 1e-12)
        assert idx.tolist() == list(range(n))
        assert w == pytest.approx(0.5 * np.exp(-0.5 * (d / spread) ** 2))


# ---------------------------------------------------------------------------- defaults of the point queries


def test_point_queries_default_to_whole():
    # query 0 = the whole line, query 1 = its first half (contained): the default answers the whole
    pts = line(np.arange(20.0))
    index = SurfaceIndex.build(pts, np.full(20, 0.9))
    lifted = np.zeros((2, 20), np.uint8)
    lifted[0] = 240
    lifted[1, :10] = 250
    containment = np.array([[1.0, 0.5], [1.0, 1.0]])
    for cont in (None, containment):
        fld = field(lifted, containment=cont)
        assert query_for_point(fld, index, Point(2.0, 0.0, 0.0)) == 0
        assert query_for_point(fld, index, Point(2.0, 0.0, 0.0), "part") == 1
        assert select_by_points(fld, index, [Point(2.0, 0.0, 0.0)]).mask.all()
        assert select_by_points(fld, index, [Point(2.0, 0.0, 0.0)], "part").mask.sum() == 10


# ---------------------------------------------------------------------------- discover_objects


def test_discover_defaults_keep_fifty_and_drop_half_overlaps():
    lifted = np.zeros((4, 400), np.uint8)
    lifted[0, :200] = 200  # object 0: 200 Gaussians
    lifted[1, 150:300] = 200  # overlaps object 0 on 50 of its 150 (1/3): kept, with its 100 fresh ones
    lifted[2, 300:350] = 200  # exactly 50 fresh: kept
    lifted[3, 0:90] = 200  # lies 100% on object 0 (and 90 >= 50): dropped
    lifted[3, 350:380] = 200  # 30 fresh < 50: dropped either way
    fld = field(lifted, query_size=[4, 3, 2, 1])
    found = discover_objects(fld)
    assert [k for k, _ in found] == [0, 1, 2]
    assert [int(m.sum()) for _, m in found] == [200, 100, 50]
    # a fresh part of 80 but 120 of 200 on claimed ones (60% > 50%) is dropped by default
    lifted2 = np.zeros((2, 400), np.uint8)
    lifted2[0, :120] = 200
    lifted2[1, :200] = 200
    assert [k for k, _ in discover_objects(field(lifted2, query_size=[2, 1]))] == [0]


def test_discover_overlap_boundary_and_small_overlaps():
    lifted = np.zeros((3, 600), np.uint8)
    lifted[0, :100] = 200
    lifted[1, 0:100] = 200
    lifted[1, 100:200] = 200  # 100 of 200 on claimed ones: exactly max_overlap x size, kept
    lifted[2, 195:395] = 200  # 5 of 200 claimed: kept
    found = discover_objects(field(lifted, query_size=[3, 2, 1]))
    assert [k for k, _ in found] == [0, 1, 2]
    assert [int(m.sum()) for _, m in found] == [100, 100, 195]


def test_discover_drops_a_fresh_part_below_min_even_with_little_overlap():
    lifted = np.zeros((2, 200), np.uint8)
    lifted[0, :60] = 200
    lifted[1, 25:105] = 200  # 80 selected, 35 claimed (<= 1/2) but only 45 fresh < 50: dropped
    assert [k for k, _ in discover_objects(field(lifted, query_size=[2, 1]))] == [0]


def test_discover_goes_on_past_a_small_query():
    lifted = np.zeros((3, 200), np.uint8)
    lifted[0, :10] = 200  # the largest by query_size selects only 10 Gaussians: skipped, not the end
    lifted[1, 50:150] = 200
    assert [k for k, _ in discover_objects(field(lifted, query_size=[9, 5, 1]))] == [1]


def test_discover_threshold_edges():
    lifted = np.zeros((1, 200), np.uint8)
    lifted[0, :60] = 1
    lifted[0, 60:] = 0
    assert [int(m.sum()) for _, m in discover_objects(field(lifted), threshold=0.0)] == [60]  # > 0 keeps a score of 1
    lifted = np.zeros((1, 200), np.uint8)
    lifted[0, :60] = 128  # threshold 0.5: cut int(127.5) = 127, so 128 is in
    assert [int(m.sum()) for _, m in discover_objects(field(lifted), threshold=0.5)] == [60]
    lifted[0, :60] = 76  # threshold 0.3: cut 76, strictly above
    lifted[0, 100:160] = 77
    assert [np.flatnonzero(m).min() for _, m in discover_objects(field(lifted))] == [100]
    lifted[0] = 255
    assert discover_objects(field(lifted), threshold=1.5) == []  # nothing is above 255


def test_discover_ties_in_size_take_the_lowest_index():
    # 40 queries with tied sizes (numpy's default sort reorders ties in arrays this long: 14 before 11)
    sizes = np.random.default_rng(0).integers(0, 10, 40).astype(np.float32)
    assert sizes[11] == sizes[14] == sizes.max()
    lifted = np.zeros((40, 100), np.uint8)
    lifted[11, :60] = 200
    lifted[14, :60] = 200
    found = discover_objects(field(lifted, query_size=sizes))
    assert [k for k, _ in found] == [11]


def sparse_line_scene(top: float | None = None) -> SurfaceIndex:
    """Five surface Gaussians on the x axis at 0..4: spacing 3 (the median 4th-neighbour distance),
    so the 1.5 x spacing hit radius (4.5) reaches far beyond the bounds' margin (0.196); a transparent
    Gaussian at height `top` stretches the bounds upward."""
    means, opacities = line(np.arange(5.0)), np.full(5, 0.9)
    if top is not None:
        means, opacities = np.concatenate([means, [[2.0, 0.0, top]]]), np.concatenate([opacities, [0.0]])
    index = SurfaceIndex.build(means, opacities)
    assert index.spacing == pytest.approx(3.0) and SNAP_TOLERANCE * index.size < 0.2
    return index


def test_enclosure_from_a_corner_of_the_bounds_counts_its_first_sample():
    # the corners are in the (closed) bounds and within the hit radius of a surface: every ray meets it there
    index = sparse_line_scene()
    assert index.enclosure(index.lo.copy()) == 1.0
    assert index.enclosure(index.hi.copy()) == 1.0


def test_enclosure_ignores_what_a_ray_passes_outside_the_bounds():
    # 10 above the line, in a slab only 0.39 thick in y: a ray can come within 4.5 of the line only
    # after leaving the slab unless it runs almost in the plane y = 0 (about 0.5% of the directions);
    # counted outside the bounds as well, about 8% would meet it
    index = sparse_line_scene(top=20.0)
    assert index.enclosure(np.array([2.0, 0.0, 10.0]), directions=512) < 0.02


def test_select_by_points_passes_threshold_and_tolerance_to_every_point():
    # a line of 20 surface Gaussians (size 18.6) and a transparent one above it that widens the bounds;
    # query 0 = the line (240 on its first 15, 200 on the rest), query 1 = its first half (250)
    pts = np.concatenate([line(np.arange(20.0)), [[0.0, 0.0, 10.0]]])
    index = SurfaceIndex.build(pts, np.concatenate([np.full(20, 0.9), [0.0]]))
    lifted = np.zeros((2, 21), np.uint8)
    lifted[0, :15], lifted[0, 15:20] = 240, 200
    lifted[1, :10] = 250
    fld = field(lifted)
    on = Point(17.0, 0.0, 0.0)
    assert select_by_points(fld, index, [on]).mask.sum() == 20
    assert np.flatnonzero(select_by_points(fld, index, [on], threshold=0.9).mask).tolist() == list(range(15))
    # a negative point 3.5 off the line: beyond the default tolerance (0.93), within 0.25 x size (4.65)
    off = Point(2.0, 0.0, 3.5, positive=False)
    with pytest.raises(QueryError, match="farther than"):
        select_by_points(fld, index, [on, off])
    sel = select_by_points(fld, index, [on, off], tolerance=0.25)
    assert sel.negative_queries == [1] and np.flatnonzero(sel.mask).tolist() == list(range(10, 20))
