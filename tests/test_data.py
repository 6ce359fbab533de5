"""Scene loaders (transforms.json, COLMAP) and image/mask I/O: conventions, round trips, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splatseg.data import Scene, SceneError, load_scene, write_transforms_json
from splatseg.io.images import ImageError, load_image, load_mask, save_image
from splatseg.types import Cameras

MARYROSE = Path(__file__).resolve().parents[2] / "shared/data/maryrose"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def project(cameras: Cameras, i: int, points: np.ndarray) -> np.ndarray:
    """[P, 2] pixel coordinates of world points [P, 3] in camera i (pinhole, no distortion)."""
    cam = (cameras.viewmats[i] @ np.c_[points, np.ones(len(points))].T)[:3]
    assert (cam[2] > 0).all()
    uv = cameras.Ks[i] @ cam
    return (uv[:2] / uv[2]).T


def look_at_gl(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """4x4 camera -> world in OpenGL camera axes (x right, y up, looking down -z), as nerfstudio."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    true_up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, true_up, back, eye
    return m


def write_png(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def write_json(root: Path, meta: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def random_cameras(root: Path, n: int, seed: int, shared: bool, distortion: bool) -> Cameras:
    """n cameras looking at the origin from random directions, images written under root/images."""
    rng = np.random.default_rng(seed)
    viewmats, Ks, ws, hs, names, paths = [], [], [], [], [], []
    for i in range(n):
        eye = rng.normal(size=3)
        eye = 4.0 * eye / np.linalg.norm(eye)
        c2w_cv = look_at_gl(eye, rng.normal(scale=0.1, size=3), up=rng.normal(size=3)) @ np.diag([1, -1, -1, 1])
        viewmats.append(np.linalg.inv(c2w_cv))
        w, h = (40, 30) if shared else (int(rng.integers(20, 50)), int(rng.integers(20, 50)))
        f = 35.5 if shared else float(rng.uniform(20, 60))
        Ks.append([[f, 0, w / 2 + (0 if shared else rng.normal())], [0, f * (1 if shared else 1.1), h / 2], [0, 0, 1]])
        ws.append(w)
        hs.append(h)
        names.append(f"frame_{i:03d}")
        paths.append(root / "images" / f"frame_{i:03d}.png")
        write_png(paths[-1], w, h, seed=i)
    dist = rng.normal(scale=0.01, size=(n, 4)) if distortion else None
    if distortion and shared:
        dist[:] = dist[0]
    return Cameras(np.array(viewmats), np.array(Ks, dtype=np.float64), np.array(ws), np.array(hs), names, paths, dist)


def assert_cameras_close(a: Cameras, b: Cameras, atol: float = 1e-9) -> None:
    assert a.names == b.names
    assert [Path(p).resolve() for p in a.image_paths] == [Path(p).resolve() for p in b.image_paths]
    np.testing.assert_array_equal(a.widths, b.widths)
    np.testing.assert_array_equal(a.heights, b.heights)
    np.testing.assert_allclose(a.viewmats, b.viewmats, atol=atol)
    np.testing.assert_allclose(a.Ks, b.Ks, atol=atol)
    if a.distortion is None:
        assert b.distortion is None
    else:
        np.testing.assert_allclose(a.distortion, b.distortion, atol=atol)


# ------------------------------------------------------------------------------------------------
# transforms.json
# ------------------------------------------------------------------------------------------------


def test_transforms_known_pose_projects_as_expected(tmp_path):
    """Camera at (0,0,5) looking at the origin, up +y, OpenGL c2w as nerfstudio writes it."""
    c2w = look_at_gl((0, 0, 5), (0, 0, 0))
    np.testing.assert_allclose(c2w, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]], atol=1e-15)
    write_png(tmp_path / "images" / "cam0.png", 64, 48)
    write_json(tmp_path, {"fl_x": 50.0, "fl_y": 40.0, "cx": 32.0, "cy": 24.0, "w": 64, "h": 48,
                          "frames": [{"file_path": "images/cam0.png", "transform_matrix": c2w.tolist()}]})
    cams = load_scene(tmp_path).cameras
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    uv = project(cams, 0, pts)
    np.testing.assert_allclose(uv[0], [32, 24])  # origin -> principal point
    np.testing.assert_allclose(uv[1], [32 + 50 / 5, 24])  # to the camera's right -> larger x
    np.testing.assert_allclose(uv[2], [32, 24 - 40 / 5])  # world up (+y) -> smaller row
    np.testing.assert_allclose(uv[3], [32, 24])  # on the optical axis, closer
    np.testing.assert_allclose(cams.viewmats[0] @ [0, 0, 1, 1], [0, 0, 4, 1])  # depth 5 - 1 = 4
    np.testing.assert_allclose(cams.centers[0], [0, 0, 5])


def test_transforms_look_at_cameras_right_and_up(tmp_path):
    rng = np.random.default_rng(5)
    frames = []
    for i in range(6):
        eye = rng.normal(size=3) * 3
        c2w = look_at_gl(eye, (0, 0, 0), up=(0, 0, 1))  # a z-up world this time
        frames.append({"file_path": f"images/{i}", "transform_matrix": c2w.tolist()})
        write_png(tmp_path / "images" / f"{i}.jpg", 30, 20)
    write_json(tmp_path, {"fl_x": 25, "fl_y": 25, "cx": 15, "cy": 10, "w": 30, "h": 20, "frames": frames})
    cams = load_scene(tmp_path).cameras
    for i, frame in enumerate(frames):
        c2w = np.array(frame["transform_matrix"])
        right, up, step = c2w[:3, 0], c2w[:3, 1], 0.1 * np.linalg.norm(c2w[:3, 3])
        o, r, u = project(cams, i, np.array([[0, 0, 0], step * right, step * up]))
        np.testing.assert_allclose(o, [15, 10], atol=1e-9)
        assert r[0] > o[0] + 0.5 and abs(r[1] - o[1]) < 1e-9
        assert u[1] < o[1] - 0.5 and abs(u[0] - o[0]) < 1e-9


def test_transforms_intrinsics_variants_paths_and_extras(tmp_path):
    eye = look_at_gl((0, 0, 3), (0, 0, 0))
    write_png(tmp_path / "images" / "a.png", 40, 20)
    write_png(tmp_path / "images" / "b.jpeg", 40, 20)
    write_png(tmp_path / "other" / "c.png", 10, 8)
    meta = {
        "camera_angle_x": 2 * np.arctan(0.5),  # fl_x = 0.5 * w / tan(angle / 2) = w
        "k1": 0.1, "p2": -0.02,
        "applied_transform": [[1, 0, 0, 0]], "aabb_scale": 16, "some_future_key": {"x": 1},
        "frames": [
            {"file_path": "./images/a", "transform_matrix": eye.tolist(), "gt_mask_path": "m/a.png", "time": 3},
            {"file_path": "images/b.jpeg", "transform_matrix": eye[:3].tolist()},  # 3x4 accepted
            {"file_path": "other/c.png", "transform_matrix": eye.tolist(),
             "fl_x": 7.0, "cx": 4.5, "camera_angle_y": 2 * np.arctan(0.25), "k2": 0.3},
        ],
    }
    write_json(tmp_path, meta)
    scene = load_scene(tmp_path)
    cams = scene.cameras
    assert isinstance(scene, Scene) and scene.points is None and scene.splats_path is None
    assert cams.names == ["a", "b", "c"]
    assert cams.image_paths[0] == tmp_path / "images" / "a.png"
    assert cams.image_paths[1] == tmp_path / "images" / "b.jpeg"
    np.testing.assert_array_equal(cams.widths, [40, 40, 10])  # read from the image files
    np.testing.assert_array_equal(cams.heights, [20, 20, 8])
    np.testing.assert_allclose(cams.Ks[0], [[40, 0, 20], [0, 40, 10], [0, 0, 1]])
    # frame 2: fl_x given; fl_y from camera_angle_y = 0.5 * 8 / 0.25 = 16; cy defaults to h/2.
    np.testing.assert_allclose(cams.Ks[2], [[7, 0, 4.5], [0, 16, 4], [0, 0, 1]])
    np.testing.assert_allclose(cams.distortion, [[0.1, 0, 0, -0.02], [0.1, 0, 0, -0.02], [0.1, 0.3, 0, -0.02]])
    assert scene.frame_extras == [{"gt_mask_path": "m/a.png", "time": 3}, {}, {}]
    (tmp_path / "splats.ply").write_bytes(b"")
    assert scene.splats_path == tmp_path / "splats.ply"


@pytest.mark.parametrize("shared,distortion", [(True, False), (False, True), (True, True)])
def test_write_transforms_json_round_trip(tmp_path, shared, distortion):
    cams = random_cameras(tmp_path, 7, seed=int(shared) + 2 * int(distortion), shared=shared, distortion=distortion)
    extras = [{"gt_mask_path": f"masks/{i}.png", "weight": i * 0.5} for i in range(7)]
    path = write_transforms_json(tmp_path, cams, extras)
    meta = json.loads(path.read_text())
    assert ("fl_x" in meta) == shared and ("fl_x" in meta["frames"][0]) == (not shared)
    assert meta["frames"][3]["file_path"] == "images/frame_003.png"
    assert meta["camera_model"] == ("OPENCV" if distortion else "PINHOLE")
    scene = load_scene(tmp_path)
    assert_cameras_close(cams, scene.cameras)
    assert scene.frame_extras == extras
    # The file holds OpenGL camera-to-world matrices.
    np.testing.assert_allclose(np.array(meta["frames"][0]["transform_matrix"]),
                               cams.camtoworlds[0] @ np.diag([1, -1, -1, 1]), atol=1e-12)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_relative_paths(tmp_path, monkeypatch):
    """Relative image paths given to the writer are relative to the scene root (synthetic cameras);
    a scene loaded through a relative root gets absolute image paths and can be re-written."""
    cams = random_cameras(tmp_path / "scene", 3, seed=4, shared=True, distortion=False)
    rel = Cameras(cams.viewmats, cams.Ks, cams.widths, cams.heights, cams.names,
                  [Path("images") / f"{n}.png" for n in cams.names])
    write_transforms_json(tmp_path / "scene", rel)
    meta = json.loads((tmp_path / "scene" / "transforms.json").read_text())
    assert [f["file_path"] for f in meta["frames"]] == [f"images/{n}.png" for n in cams.names]
    monkeypatch.chdir(tmp_path)
    scene = load_scene("scene")
    assert all(p.is_absolute() for p in scene.cameras.image_paths)
    assert scene.cameras.image_paths[0] == tmp_path / "scene" / "images" / "frame_000.png"
    write_transforms_json("scene", scene.cameras)
    again = json.loads((tmp_path / "scene" / "transforms.json").read_text())["frames"]
    assert [f["file_path"] for f in again] == [f["file_path"] for f in meta["frames"]]
    np.testing.assert_allclose([f["transform_matrix"] for f in again], [f["transform_matrix"] for f in meta["frames"]],
                               atol=1e-12)


def test_write_transforms_json_rejects_reserved_extras(tmp_path):
    cams = random_cameras(tmp_path, 2, seed=0, shared=True, distortion=False)
    with pytest.raises(SceneError, match="reserved key 'fl_x'"):
        write_transforms_json(tmp_path, cams, [{"fl_x": 1.0}, {}])
    assert not (tmp_path / "transforms.json").exists()


def test_downscale(tmp_path):
    cams = random_cameras(tmp_path, 2, seed=1, shared=True, distortion=False)
    write_transforms_json(tmp_path, cams)
    small = load_scene(tmp_path, downscale=2.0).cameras
    np.testing.assert_array_equal(small.widths, [20, 20])
    np.testing.assert_array_equal(small.heights, [15, 15])
    np.testing.assert_allclose(small.Ks[:, :2], cams.Ks[:, :2] / 2)
    np.testing.assert_allclose(small.viewmats, cams.viewmats, atol=1e-12)
    with pytest.raises(SceneError, match="downscale"):
        load_scene(tmp_path, downscale=0.0)


def _frame(path="images/a.png", **kw):
    return {"file_path": path, "transform_matrix": np.eye(4).tolist(), **kw}


BASE = {"fl_x": 10, "w": 8, "h": 6}


@pytest.mark.parametrize(
    "content,fragments",
    [
        ('{"frames": [\n  {"file_path": "a",}\n]}', ["malformed JSON", "line 2", "column"]),
        ({**BASE}, ["missing key 'frames'"]),
        ({**BASE, "frames": []}, ["zero frames"]),
        ({**BASE, "frames": [_frame(), {"file_path": "images/a.png"}]}, ["frame 1", "missing key 'transform_matrix'"]),
        ({**BASE, "frames": [{"transform_matrix": np.eye(4).tolist()}]}, ["frame 0", "missing key 'file_path'"]),
        ({"w": 8, "h": 6, "frames": [_frame()]}, ["frame 0", "'fl_x'"]),
        ({**BASE, "frames": [_frame(), _frame("images/nope.png")]}, ["frame 1", "nope.png", "not found"]),
        ({**BASE, "frames": [_frame(), _frame("images/a")]}, ["frame 1", "stem 'a'", "frame 0"]),
        ({**BASE, "frames": [_frame(transform_matrix=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])]},
         ["frame 0", "not invertible"]),
        ({**BASE, "frames": [_frame(transform_matrix=[[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])]},
         ["frame 0", "non-finite"]),
        ({**BASE, "frames": [_frame(transform_matrix=[[1, 2], [3, 4]])]}, ["frame 0", "4x4"]),
        ({**BASE, "frames": [_frame(fl_x="big")]}, ["frame 0", "'fl_x'"]),
        ({**BASE, "camera_model": "OPENCV_FISHEYE", "frames": [_frame()]}, ["OPENCV_FISHEYE", "fisheye", "pinhole images"]),
        ({**BASE, "camera_model": "KANNALA", "frames": [_frame()]}, ["KANNALA", "not a pinhole"]),
        ({**BASE, "k1": 0.1, "k4": 0.01, "frames": [_frame()]}, ["frame 0", "'k4'", "cannot be undistorted"]),
    ],
)
def test_transforms_errors_are_one_line(tmp_path, content, fragments):
    write_png(tmp_path / "images" / "a.png", 8, 6)
    (tmp_path / "transforms.json").write_text(content if isinstance(content, str) else
                                              json.dumps(content).replace("NaN", "NaN"))
    with pytest.raises(SceneError) as info:
        load_scene(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and "transforms.json" in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_scene_directory_errors(tmp_path):
    with pytest.raises(SceneError, match="does not exist"):
        load_scene(tmp_path / "nowhere")
    with pytest.raises(SceneError, match="no transforms.json and no COLMAP model"):
        load_scene(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(SceneError, match="not a directory"):
        load_scene(tmp_path / "f.txt")


# ------------------------------------------------------------------------------------------------
# COLMAP
# ------------------------------------------------------------------------------------------------


def build_reconstruction(root: Path, seed: int = 0):
    """A pycolmap Reconstruction with PINHOLE, SIMPLE_PINHOLE, OPENCV and SIMPLE_RADIAL cameras,
    5 registered images looking at the origin, 1 unregistered image and 40 coloured points."""
    import pycolmap

    rng = np.random.default_rng(seed)
    rec = pycolmap.Reconstruction()
    specs = [("PINHOLE", [60.0, 55.0, 32.5, 23.75]), ("SIMPLE_PINHOLE", [50.0, 31.0, 24.0]),
             ("OPENCV", [58.0, 57.0, 32.0, 24.0, 0.05, -0.01, 0.001, -0.002]), ("SIMPLE_RADIAL", [52.0, 32.0, 24.0, 0.03])]
    for cid, (model, params) in enumerate(specs, start=1):
        cam = pycolmap.Camera.create_from_model_name(cid, model, 1.0, 64, 48)
        cam.params = params
        rec.add_camera_with_trivial_rig(cam)
    names = ["d.png", "b.png", "sub/e.png", "a.png", "c.png"]
    for iid, name in enumerate(names, start=1):
        eye = rng.normal(size=3)
        eye = 5 * eye / np.linalg.norm(eye)
        c2w_cv = look_at_gl(eye, (0, 0, 0), up=rng.normal(size=3)) @ np.diag([1, -1, -1, 1])
        w2c = np.linalg.inv(c2w_cv)[:3]
        image = pycolmap.Image(name=name, camera_id=(iid - 1) % 4 + 1, image_id=iid)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c))
        write_png(root / "images" / name, 64, 48, seed=iid)
    rec.add_image_with_trivial_frame(pycolmap.Image(name="unposed.png", camera_id=1, image_id=99))
    points = rng.normal(scale=0.5, size=(40, 3))
    colors = rng.integers(0, 256, size=(40, 3), dtype=np.uint8)
    for p, c in zip(points, colors):
        rec.add_point3D(p, pycolmap.Track(), c)
    return rec, points, colors


@pytest.mark.parametrize("fmt,subdir", [("bin", "sparse/0"), ("txt", "sparse")])
def test_colmap_loader_matches_pycolmap(tmp_path, fmt, subdir):
    rec, points, colors = build_reconstruction(tmp_path)
    model = tmp_path / subdir
    model.mkdir(parents=True)
    (rec.write_binary if fmt == "bin" else rec.write_text)(str(model))
    scene = load_scene(tmp_path)
    cams = scene.cameras
    assert cams.names == ["a", "b", "c", "d", "e"]  # registered images only, sorted by name
    assert cams.image_paths[4] == tmp_path / "images" / "sub" / "e.png"
    np.testing.assert_allclose(scene.points, points, atol=1e-6)
    np.testing.assert_array_equal(scene.point_colors, colors)
    assert scene.points.dtype == np.float32 and scene.point_colors.dtype == np.uint8
    by_name = {img.name: img for img in rec.images.values()}
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png", "sub/e.png"]):
        img = by_name[name]
        camera = rec.cameras[img.camera_id]
        assert scene.frame_extras[i] == {"colmap_image_id": img.image_id, "colmap_camera_id": img.camera_id}
        assert (cams.widths[i], cams.heights[i]) == (64, 48)
        np.testing.assert_allclose(cams.centers[i], img.projection_center(), atol=1e-9)
        ours = project(cams, i, points)
        if camera.model.name in ("PINHOLE", "SIMPLE_PINHOLE"):
            theirs = np.array([img.project_point(p) for p in points])
        else:  # our cameras keep distortion without applying it: compare with it zeroed in pycolmap
            undistorted = camera.params.copy()
            undistorted[-4 if camera.model.name == "OPENCV" else -1:] = 0
            camera.params = undistorted
            theirs = camera.img_from_cam(np.array([img.cam_from_world() * p for p in points]))
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    # a: SIMPLE_RADIAL, b: SIMPLE_PINHOLE, c and d: PINHOLE, e: OPENCV
    np.testing.assert_allclose(cams.distortion, [[0.03, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0],
                                                 [0, 0, 0, 0], [0.05, -0.01, 0.001, -0.002]])


def test_colmap_bin_and_txt_agree_and_downscale_matches_pycolmap_rescale(tmp_path):
    import pycolmap

    rec, _, _ = build_reconstruction(tmp_path / "a")
    build_reconstruction(tmp_path / "b")
    for sub, writer in (("a", rec.write_binary), ("b", rec.write_text)):
        (tmp_path / sub / "sparse" / "0").mkdir(parents=True)
        writer(str(tmp_path / sub / "sparse" / "0"))
    a, b = load_scene(tmp_path / "a"), load_scene(tmp_path / "b")
    a.cameras.image_paths = b.cameras.image_paths
    assert_cameras_close(a.cameras, b.cameras, atol=1e-9)
    # Principal point convention: scaling K by the size ratio is what COLMAP's own rescale does,
    # which only holds with pixel centres at +0.5 (COLMAP's and splatseg's convention).
    small = load_scene(tmp_path / "a", downscale=4.0).cameras
    for i, img in enumerate(sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)):
        cam = pycolmap.Camera(rec.cameras[img.camera_id].todict())
        cam.rescale(16, 12)
        np.testing.assert_allclose(small.Ks[i], cam.calibration_matrix(), atol=1e-12)
    # A camera created without a principal point gets cx = W/2: the centre of a W-pixel row.
    assert pycolmap.Camera.create_from_model_name(1, "PINHOLE", 1.0, 64, 48).principal_point_x == 32.0


def test_colmap_errors(tmp_path):
    import pycolmap

    rec, _, _ = build_reconstruction(tmp_path)
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    rec.write_text(str(model))
    (tmp_path / "images" / "c.png").unlink()
    with pytest.raises(SceneError, match=r"image 'c.png'.*c\.png not found"):
        load_scene(tmp_path)
    write_png(tmp_path / "images" / "c.png", 64, 48)

    cams = (model / "cameras.txt").read_text().replace("SIMPLE_RADIAL", "SIMPLE_RADIAL_FISHEYE")
    (model / "cameras.txt").write_text(cams)
    with pytest.raises(SceneError, match="fisheye camera model SIMPLE_RADIAL_FISHEYE is not supported: run COLMAP's image_undistorter"):
        load_scene(tmp_path)

    (model / "cameras.txt").write_text("1 OPENCV 64 48 1 2\n")  # too few parameters
    with pytest.raises(SceneError, match="cannot read COLMAP model") as info:
        load_scene(tmp_path)
    assert "\n" not in str(info.value)

    dup = pycolmap.Reconstruction()
    cam = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 50.0, 64, 48)
    dup.add_camera_with_trivial_rig(cam)
    for iid, name in enumerate(["x/a.png", "y/a.png"], start=1):
        dup.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=1, image_id=iid),
                                         pycolmap.Rigid3d(np.eye(4)[:3]))
        write_png(tmp_path / "dup" / "images" / name, 64, 48)
    (tmp_path / "dup" / "sparse" / "0").mkdir(parents=True)
    dup.write_binary(str(tmp_path / "dup" / "sparse" / "0"))
    with pytest.raises(SceneError, match="stem 'a'"):
        load_scene(tmp_path / "dup")


def test_transforms_json_takes_precedence_over_colmap(tmp_path):
    rec, _, _ = build_reconstruction(tmp_path)
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(tmp_path / "sparse" / "0"))
    colmap_scene = load_scene(tmp_path)
    write_transforms_json(tmp_path, colmap_scene.cameras.subset([0, 1]))
    scene = load_scene(tmp_path)
    assert scene.cameras.names == ["a", "b"] and scene.points is None


# ------------------------------------------------------------------------------------------------
# images and masks
# ------------------------------------------------------------------------------------------------


def test_load_image_rgba_resize_and_save(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[:, :3, 3] = 0  # left half fully transparent
    rgba[0, 5, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.dtype == np.uint8 and img.shape == (4, 6, 3)
    assert (img[:, :3] == 0).all() and (img[1:, 3:] == 200).all()  # composited over black
    assert img[0, 5, 0] == round(200 * 128 / 255)
    assert (load_image(tmp_path / "a.png", background=(255, 255, 255))[:, :3] == 255).all()
    small = load_image(tmp_path / "a.png", size=(3, 2))  # area average of 2x2 blocks
    assert small.shape == (2, 3, 3)
    np.testing.assert_array_equal(small[1], [[0] * 3, [100] * 3, [200] * 3])
    assert load_image(tmp_path / "a.png", size=(12, 8)).shape == (8, 12, 3)

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    save_image(tmp_path / "out.png", arr)
    np.testing.assert_array_equal(load_image(tmp_path / "out.png"), arr)
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    g = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(g[..., 0], np.rint(grey16 / 257.0).astype(np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "g16.png", "out.png"]


def test_load_mask_and_image_errors(tmp_path):
    m = np.zeros((4, 4), dtype=np.uint8)
    m[1:3, 2:] = 7
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png")
    assert mask.dtype == bool and mask.sum() == 4 and mask[1, 3]
    big = load_mask(tmp_path / "m.png", size=(8, 8))  # nearest: each pixel becomes a 2x2 block
    np.testing.assert_array_equal(big, np.kron(mask, np.ones((2, 2), dtype=bool)))
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0, 2] = 1
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "rgb.png"), [[True, False], [False, False]])
    save_image(tmp_path / "b.png", mask)
    np.testing.assert_array_equal(load_mask(tmp_path / "b.png"), mask)

    for fn in (load_image, load_mask):
        with pytest.raises(ImageError, match="no such image file"):
            fn(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="cannot read image") as info:
        load_image(tmp_path / "junk.png")
    assert "\n" not in str(info.value) and "junk.png" in str(info.value)
    with pytest.raises(ImageError, match="expected uint8"):
        save_image(tmp_path / "f.png", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ImageError, match="cannot write"):
        save_image(tmp_path / "rgba.jpg", np.zeros((2, 2, 4), np.uint8))  # JPEG has no alpha
    assert not (tmp_path / "rgba.jpg").exists() and not list(tmp_path.glob(".*tmp"))


# ------------------------------------------------------------------------------------------------
# real capture
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not MARYROSE.is_dir(), reason="shared maryrose scene not present")
def test_maryrose_masks_triangulate_consistently():
    """Rays through the gt-mask centroids meet near one 3D point whose reprojection lies inside the
    masks: checks the OpenGL->OpenCV conversion and intrinsics on a real capture."""
    scene = load_scene(MARYROSE)
    cams = scene.cameras
    assert len(cams) == 69 and set(cams.widths) == {288} and set(cams.heights) == {288}
    assert all("gt_mask_path" in e for e in scene.frame_extras)
    masks, A, b = [], np.zeros((3, 3)), np.zeros(3)
    for i in range(len(cams)):
        mask = load_mask(scene.root / scene.frame_extras[i]["gt_mask_path"], size=(288, 288))
        masks.append(mask)
        rows, cols = np.nonzero(mask)
        pixel = np.array([cols.mean() + 0.5, rows.mean() + 0.5, 1.0])
        d = cams.viewmats[i, :3, :3].T @ np.linalg.solve(cams.Ks[i], pixel)
        d /= np.linalg.norm(d)
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ cams.centers[i]
    centre = np.linalg.solve(A, b)
    inside = 0
    for i in range(len(cams)):
        u, v = project(cams, i, centre[None])[0]
        inside += bool(0 <= u < 288 and 0 <= v < 288 and masks[i][int(v), int(u)])
    assert inside >= 0.9 * len(cams), f"{inside}/{len(cams)} views"
