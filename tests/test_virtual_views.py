"""Cameras made from the splats alone: object vs room, framing, no camera inside an object, every
object seen, the written scene, and the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splatseg.data import load_scene
from splatseg.data.synthetic import build_scene
from splatseg.data.virtual_views import (
    VirtualViewsConfig,
    VirtualViewsError,
    _planning_params,
    intrinsics,
    plan_views,
    probe,
    robust_frame,
    write_virtual_scene,
)
from splatseg.types import SH_C0, Splats
from tests.conftest import TINY_SCENE


def disc_splats(points: np.ndarray, normals: np.ndarray, spacing: float, rgb, rng) -> Splats:
    """Opaque flat Gaussians tangent to a surface (shortest axis along the normal)."""
    n = len(points)
    z = np.array([0.0, 0.0, 1.0])
    nrm = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    axis = np.cross(np.broadcast_to(z, nrm.shape), nrm)
    s = np.linalg.norm(axis, axis=1)
    angle = np.arctan2(s, nrm @ z)
    axis = np.where(s[:, None] > 1e-8, axis / np.maximum(s[:, None], 1e-8), np.array([1.0, 0.0, 0.0]))
    quats = np.concatenate([np.cos(angle / 2)[:, None], axis * np.sin(angle / 2)[:, None]], 1)
    scales = np.concatenate([np.full((n, 2), 0.8 * spacing), np.full((n, 1), 0.08 * spacing)], 1)
    colour = np.clip(np.asarray(rgb, float) + rng.normal(0, 0.03, (n, 3)), 0.02, 0.98)
    return Splats(means=points.astype(np.float32), quats=quats.astype(np.float32), log_scales=np.log(scales).astype(np.float32),
                  opacity_logits=np.full(n, 4.0, np.float32), sh0=((colour - 0.5) / SH_C0).astype(np.float32)[:, None, :],
                  shN=np.zeros((n, 0, 3), np.float32))


def concat(parts: list[Splats]) -> Splats:
    return Splats(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN")))


def plane(rng, origin, u, v, spacing, normal, rgb) -> Splats:
    """A rectangle origin + [0,1]u + [0,1]v sampled on a jittered grid."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    nu, nv = int(np.linalg.norm(u) / spacing), int(np.linalg.norm(v) / spacing)
    a, b = np.meshgrid((np.arange(nu) + 0.5) / nu, (np.arange(nv) + 0.5) / nv, indexing="ij")
    a, b = a.ravel() + rng.normal(0, 0.1 / nu, a.size), b.ravel() + rng.normal(0, 0.1 / nv, b.size)
    pts = np.asarray(origin, float) + a[:, None] * u + b[:, None] * v
    return disc_splats(pts, np.tile(normal, (len(pts), 1)), spacing, rgb, rng)


def sphere(rng, centre, radius, n, rgb) -> Splats:
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return disc_splats(np.asarray(centre) + radius * d, d, radius * np.sqrt(4 * np.pi / n), rgb, rng)


def box(rng, lo, hi, spacing, rgb) -> list[Splats]:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    size = hi - lo
    faces = []
    for axis in range(3):
        other = [a for a in range(3) if a != axis]
        for side in (0, 1):
            origin = lo.copy()
            origin[axis] = hi[axis] if side else lo[axis]
            u, v = np.zeros(3), np.zeros(3)
            u[other[0]], v[other[1]] = size[other[0]], size[other[1]]
            normal = np.zeros(3)
            normal[axis] = 1.0 if side else -1.0
            faces.append(plane(rng, origin, u, v, spacing, normal, rgb))
    return faces


ROOM_OBJECTS = {  # name -> (centre, radius of a ball that contains it)
    "ball": ((-1.0, 0.6, 0.35), 0.35),
    "crate": ((0.9, -0.5, 0.3), 0.55),
    "lamp": ((1.2, 0.9, 0.9), 0.25),
}


def room_scene(seed: int = 0) -> tuple[Splats, np.ndarray]:
    """A closed 4 x 3 x 2.5 room (floor, ceiling, walls) with a ball, a crate and a ball on a high
    shelf-less stand inside; returns (splats, object id [N]: 0 = the room's shell, 1.. objects)."""
    rng = np.random.default_rng(seed)
    s = 0.1
    shell = [
        plane(rng, (-2, -1.5, 0), (4, 0, 0), (0, 3, 0), s, (0, 0, 1), (0.6, 0.5, 0.4)),  # floor
        plane(rng, (-2, -1.5, 2.5), (4, 0, 0), (0, 3, 0), s, (0, 0, -1), (0.9, 0.9, 0.9)),  # ceiling
        plane(rng, (-2, -1.5, 0), (4, 0, 0), (0, 0, 2.5), s, (0, 1, 0), (0.7, 0.7, 0.5)),
        plane(rng, (-2, 1.5, 0), (4, 0, 0), (0, 0, 2.5), s, (0, -1, 0), (0.7, 0.7, 0.5)),
        plane(rng, (-2, -1.5, 0), (0, 3, 0), (0, 0, 2.5), s, (1, 0, 0), (0.5, 0.6, 0.7)),
        plane(rng, (2, -1.5, 0), (0, 3, 0), (0, 0, 2.5), s, (-1, 0, 0), (0.5, 0.6, 0.7)),
    ]
    c, r = ROOM_OBJECTS["ball"]
    objects = [[sphere(rng, c, r, 500, (0.9, 0.3, 0.1))],
               box(rng, (0.6, -0.8, 0.0), (1.2, -0.2, 0.6), 0.05, (0.2, 0.6, 0.3)),
               [sphere(rng, ROOM_OBJECTS["lamp"][0], 0.2, 300, (0.95, 0.95, 0.7))]]
    parts, ids = shell, [np.zeros(sum(len(p) for p in shell), np.int32)]
    for oid, obj in enumerate(objects, start=1):
        parts += obj
        ids.append(np.full(sum(len(p) for p in obj), oid, np.int32))
    return concat(parts), np.concatenate(ids)


def seen_fraction_per_object(splats: Splats, plan, object_id: np.ndarray) -> dict[int, float]:
    """Per object: fraction of its Gaussians that some planned camera sees (depth-tested probe)."""
    params = _planning_params(splats)
    cams = plan.cameras
    seen = np.zeros(len(splats), bool)
    for i in range(len(cams)):
        K, w, h = intrinsics(128, plan.report["fov_deg"])
        seen |= probe(params, cams.viewmats[i], K, w, h, 0.0).seen
    return {int(o): float(seen[object_id == o].mean()) for o in np.unique(object_id)}


@pytest.fixture(scope="module")
def tabletop():
    return build_scene(TINY_SCENE)


def test_tabletop_is_an_object_capture_seen_from_above_with_every_object_in_view(tabletop):
    plan = plan_views(tabletop.splats, VirtualViewsConfig(num_views=16))
    rep = plan.report
    assert plan.kind == "object" and rep["evidence"]["seen_from_outside"] > rep["evidence"]["seen_from_inside"]
    assert rep["support_plane"] and np.dot(rep["up"], [0, 0, 1]) > 0.99
    centres = plan.cameras.centers
    assert (centres[:, 2] > 0.0).all(), "no camera below the table"
    lo, hi = np.array(rep["box"][0]), np.array(rep["box"][1])
    assert (~((centres > lo) & (centres < hi)).all(1)).all(), "every camera outside the framed box"
    assert len(plan.cameras) >= 16 and rep["coverage"] > 0.95
    per_object = seen_fraction_per_object(tabletop.splats, plan, tabletop.object_id)
    assert min(per_object.values()) > 0.9, per_object
    # every object projects into the image of most views (framing keeps the box in frame)
    for oid in range(1, len(tabletop.object_names)):
        c = tabletop.splats.means[tabletop.object_id == oid].mean(0)
        inside = 0
        for i in range(len(plan.cameras)):
            p = plan.cameras.viewmats[i] @ np.append(c, 1.0)
            K = plan.cameras.Ks[i]
            u, v = p[0] / p[2] * K[0, 0] + K[0, 2], p[1] / p[2] * K[1, 1] + K[1, 2]
            inside += p[2] > 0 and 0 <= u < plan.cameras.widths[i] and 0 <= v < plan.cameras.heights[i]
        assert inside == len(plan.cameras), tabletop.object_names[oid]


def test_room_is_seen_from_inside_and_no_camera_sits_in_an_object():
    splats, object_id = room_scene()
    plan = plan_views(splats, VirtualViewsConfig(num_views=24, planning_side=48))
    rep = plan.report
    assert plan.kind == "room", rep["evidence"]
    assert rep["evidence"]["enclosure"] > 0.95 and rep["evidence"]["seen_only_inside"] > 0.03  # the walls hide the objects
    centres = plan.cameras.centers
    assert ((centres > [-2, -1.5, 0]) & (centres < [2, 1.5, 2.5])).all(), "every camera inside the room"
    for name, (c, r) in ROOM_OBJECTS.items():
        assert (np.linalg.norm(centres - np.asarray(c), axis=1) > r).all(), f"a camera inside the {name}"
    per_object = seen_fraction_per_object(splats, plan, object_id)
    assert min(per_object[o] for o in (1, 2, 3)) > 0.6, per_object  # the crate's bottom and far sides face the floor and walls
    assert np.dot(rep["up"], [0, 0, 1]) > 0.99  # the objects stand on the floor


def test_forced_kind_and_up_are_respected(tabletop):
    plan = plan_views(tabletop.splats, VirtualViewsConfig(kind="object", num_views=8, up=(0.0, 0.0, 2.0), max_side=96))
    assert plan.report["evidence"] == {} and plan.report["up_given"]
    assert np.allclose(plan.report["up"], [0, 0, 1]) and int(plan.cameras.widths[0]) == 96
    assert plan.report["views"] >= 8


def test_floaters_stay_out_of_the_framing(tabletop):
    sp = tabletop.splats
    rng = np.random.default_rng(0)
    m = len(sp) // 10  # 10% of the file: more than the box's quantiles alone would leave out
    far = rng.normal(size=(m, 3)) * 30.0 + 50.0  # isolated splats far away
    floaters = Splats(far.astype(np.float32), np.tile([[1, 0, 0, 0]], (m, 1)).astype(np.float32), np.full((m, 3), -3.0, np.float32),
                      np.full(m, 3.0, np.float32), np.zeros((m, 1, 3), np.float32), np.zeros((m, 0, 3), np.float32))
    frame = robust_frame(concat([sp, floaters]))
    clean = robust_frame(sp)
    assert np.allclose(frame.lo, clean.lo, atol=0.05) and np.allclose(frame.hi, clean.hi, atol=0.05)
    assert not frame.core[len(sp):].any() and frame.floaters >= m


def test_written_scene_is_read_back_like_a_capture(tabletop, tmp_path):
    plan = plan_views(tabletop.splats, VirtualViewsConfig(num_views=6, max_side=64))
    root = write_virtual_scene(tabletop.splats, plan, tmp_path / "views", extra_info={"splats_sha256": "abc"}, progress=False)
    scene = load_scene(root)
    assert scene.cameras.names == plan.cameras.names
    assert np.allclose(scene.cameras.viewmats, plan.cameras.viewmats, atol=1e-6)
    report = json.loads((root / "views.json").read_text())
    assert report["splats_sha256"] == "abc" and report["views"] == len(plan.cameras)
    g = np.load(root / "geometry" / f"{plan.cameras.names[0]}.npz")
    alpha, depth, normals = g["alpha"].astype(np.float32), g["depth"], g["normals"].astype(np.float32)
    assert alpha.shape == (48, 64) and depth.shape == alpha.shape and normals.shape == (48, 64, 3)
    hit = alpha > 0.9
    assert hit.mean() > 0.2 and (depth[hit] > 0).all()
    assert np.allclose(np.linalg.norm(normals[hit], axis=-1), 1.0, atol=0.02)
    assert (normals[hit][:, 2] < 0.05).mean() > 0.95, "normals face the camera (negative camera z)"
    with pytest.raises(FileExistsError):
        write_virtual_scene(tabletop.splats, plan, root, progress=False)


def test_nothing_visible_is_one_line_error(tabletop):
    sp = tabletop.splats
    faint = Splats(sp.means, sp.quats, sp.log_scales, np.full(len(sp), -12.0, np.float32), sp.sh0, sp.shN)
    with pytest.raises(VirtualViewsError, match="no Gaussian would be visible in front of any view"):
        plan_views(faint)


def test_the_automatic_side_stays_within_its_limit(tabletop):
    """`side_limit` caps the automatic image side (never below MIN_SIDE, never above MAX_SIDE); an
    explicit --virtual.max-side is used as given."""
    from splatseg.data.virtual_views import MAX_SIDE, MIN_SIDE, choose_side

    frame = robust_frame(tabletop.splats)
    far = [np.linalg.inv(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -z], [0, 0, 0, 1.0]])) for z in (40.0,)]
    pose = np.eye(4)
    pose[:3, 3] = frame.centre + [0.0, 0.0, 4.0]
    near = [np.linalg.inv(pose)]  # 4 units away: a side between the bounds
    free = choose_side(far, frame, 60.0)
    assert free == MAX_SIDE  # a far camera asks for more pixels than the bound allows
    assert choose_side(far, frame, 60.0, limit=320) == 320
    assert choose_side(far, frame, 60.0, limit=100) == MIN_SIDE  # a limit under the floor gives the floor
    assert choose_side(far, frame, 60.0, limit=4096) == MAX_SIDE
    small = choose_side(near, frame, 60.0, limit=MAX_SIDE)
    assert MIN_SIDE < small < MAX_SIDE - 64
    assert choose_side(near, frame, 60.0, limit=small + 64) == small  # a limit above the choice changes nothing
    assert choose_side(near, frame, 60.0, limit=small - 32) == small - 32
    plan = plan_views(tabletop.splats, VirtualViewsConfig(num_views=6, side_limit=160))
    assert plan.cameras.widths.max() <= 160 and plan.report["config"]["side_limit"] == 160
    assert plan_views(tabletop.splats, VirtualViewsConfig(num_views=6, max_side=200, side_limit=160)).cameras.widths.max() == 200
    with pytest.raises(VirtualViewsError, match="side-limit"):
        plan_views(tabletop.splats, VirtualViewsConfig(side_limit=-1))


def test_train_limits_the_views_by_its_own_resolution(tmp_path, monkeypatch):
    """`train --splats` alone sets side_limit to SIDE_PER_TRAIN_SIDE x --train-max-side unless the
    user gave one."""
    import splatseg.data.virtual_views as vv
    from splatseg.train.config import TrainConfig
    from splatseg.train.trainer import make_virtual_views

    seen = []

    def fake_ensure(splats, root, cfg, identity, **kw):
        seen.append(cfg)
        return {"views": 1, "kind": "object", "width": 1, "height": 1, "coverage": 1.0}, False

    monkeypatch.setattr(vv, "ensure_virtual_scene", fake_ensure)
    ply = tmp_path / "s.ply"
    from splatseg.io.ply import write_ply

    write_ply(ply, build_scene(TINY_SCENE).splats)
    make_virtual_views(TrainConfig(splats=ply, out=tmp_path / "run", train_max_side=100), ply)
    make_virtual_views(TrainConfig(splats=ply, out=tmp_path / "run", train_max_side=100, virtual=VirtualViewsConfig(side_limit=400)), ply)
    assert seen[0].side_limit == round(vv.SIDE_PER_TRAIN_SIDE * 100) and seen[1].side_limit == 400
