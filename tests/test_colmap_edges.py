"""COLMAP models at the edges of what `splatseg.data.colmap` accepts: every supported camera model's
intrinsics and distortion (text and binary), the models it refuses (one line naming the model),
bad parameters and poses, empty points, image names with spaces or folders, a missing camera id,
and where it looks for the model. Each model is built here from a seed with pycolmap (or written
by hand in COLMAP's text format), with tiny image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splatseg.data import SceneError
from splatseg.data.colmap import FISHEYE_MODELS, SUPPORTED_MODELS, colmap_model_dir, load_colmap

W, H = 16, 12

# model -> (params, K as [fx, fy, cx, cy], distortion in OpenCV's order), written out by hand
MODELS = {
    "SIMPLE_PINHOLE": ([11.0, 7.5, 5.5], [11.0, 11.0, 7.5, 5.5], [0, 0, 0, 0]),
    "PINHOLE": ([11.0, 13.0, 7.5, 5.5], [11.0, 13.0, 7.5, 5.5], [0, 0, 0, 0]),
    "SIMPLE_RADIAL": ([11.0, 7.5, 5.5, 0.125], [11.0, 11.0, 7.5, 5.5], [0.125, 0, 0, 0]),
    "RADIAL": ([11.0, 7.5, 5.5, 0.125, -0.25], [11.0, 11.0, 7.5, 5.5], [0.125, -0.25, 0, 0]),
    "OPENCV": ([11.0, 13.0, 7.5, 5.5, 0.125, -0.25, 0.0625, -0.03125], [11.0, 13.0, 7.5, 5.5],
               [0.125, -0.25, 0.0625, -0.03125]),
    "FULL_OPENCV": ([11.0, 13.0, 7.5, 5.5, 0.125, -0.25, 0.0625, -0.03125, 0.5, -0.75, 0.375, -0.1875],
                    [11.0, 13.0, 7.5, 5.5], [0.125, -0.25, 0.0625, -0.03125, 0.5, -0.75, 0.375, -0.1875]),
}
UNSUPPORTED = ["SIMPLE_DIVISION", "DIVISION", "EUCM", "EQUIRECTANGULAR"]


def write_png(path: Path, seed: int = 0, size: tuple[int, int] = (W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def pose(rng) -> np.ndarray:
    """A random world -> camera [3, 4] rigid transform."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    q = q if np.linalg.det(q) > 0 else -q
    return np.c_[q, rng.normal(size=3)]


def write_model(root: Path, cameras: list[tuple[str, list[float]]], images: list[tuple[str, int]], fmt: str = "bin",
                points: int = 0, seed: int = 0, subdir: str = "sparse/0", sizes: list[tuple[int, int]] | None = None,
                poses: list[np.ndarray] | None = None) -> tuple[object, Path]:
    """Writes a pycolmap model with `cameras` [(model, params)] (ids 1, 2, ...) and registered
    `images` [(name, camera id)] (ids 1, 2, ...), image files under root/images; returns it and its folder."""
    import pycolmap

    rng = np.random.default_rng(seed)
    rec = pycolmap.Reconstruction()
    sizes = sizes or [(W, H)] * len(cameras)
    for cid, ((model, params), (w, h)) in enumerate(zip(cameras, sizes), start=1):
        cam = pycolmap.Camera.create_from_model_name(cid, model, 1.0, w, h)
        cam.params = params
        rec.add_camera_with_trivial_rig(cam)
    for iid, (name, cid) in enumerate(images, start=1):
        m = poses[iid - 1] if poses is not None else pose(rng)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=cid, image_id=iid), pycolmap.Rigid3d(m))
        write_png(root / "images" / name, seed=iid, size=sizes[cid - 1])
    for _ in range(points):
        rec.add_point3D(rng.normal(size=3), pycolmap.Track(), rng.integers(0, 256, 3).astype(np.uint8))
    model = root / subdir
    model.mkdir(parents=True, exist_ok=True)
    (rec.write_binary if fmt == "bin" else rec.write_text)(str(model))
    return rec, model


def load_error(root: Path) -> str:
    """The one-line SceneError message of loading `root`."""
    with pytest.raises(SceneError) as info:
        load_colmap(root)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_the_supported_table_is_the_one_tested_here():
    """The loader supports exactly the camera models whose intrinsics are written out above."""
    assert set(SUPPORTED_MODELS) == set(MODELS)
    assert not set(SUPPORTED_MODELS) & set(FISHEYE_MODELS)


# ----------------------------------------------------------------------------- camera models


@pytest.mark.parametrize("fmt", ["bin", "txt"])
@pytest.mark.parametrize("model", list(MODELS))
def test_each_supported_model_gives_its_intrinsics_and_distortion(tmp_path, model, fmt):
    """K and the distortion (OpenCV order) of one camera of each supported model, text and binary."""
    params, (fx, fy, cx, cy), dist = MODELS[model]
    write_model(tmp_path, [(model, params)], [("a.png", 1)], fmt=fmt)
    cams, extras, _, _ = load_colmap(tmp_path)
    np.testing.assert_array_equal(cams.Ks[0], [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    assert cams.Ks.dtype == np.float64
    if model in ("SIMPLE_PINHOLE", "PINHOLE"):
        assert cams.distortion is None  # pinhole models need no undistortion
    else:
        np.testing.assert_array_equal(cams.distortion, [dist])
    assert extras == [{"colmap_image_id": 1, "colmap_camera_id": 1}]


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_mixed_models_pad_the_distortion_of_the_others_with_zeros(tmp_path, fmt):
    """With one FULL_OPENCV camera every row gets 8 coefficients; pinhole and radial rows are zero-padded."""
    cameras = [("PINHOLE", MODELS["PINHOLE"][0]), ("FULL_OPENCV", MODELS["FULL_OPENCV"][0]), ("RADIAL", MODELS["RADIAL"][0])]
    write_model(tmp_path, cameras, [("a.png", 1), ("b.png", 2), ("c.png", 3)], fmt=fmt)
    cams, extras, _, _ = load_colmap(tmp_path)
    np.testing.assert_array_equal(cams.distortion, [[0] * 8, MODELS["FULL_OPENCV"][2], [0.125, -0.25] + [0] * 6])
    assert cams.distortion.dtype == np.float64
    assert [e["colmap_camera_id"] for e in extras] == [1, 2, 3]


def test_each_camera_keeps_its_own_size_and_intrinsics(tmp_path):
    """Cameras of different sizes: each image gets its camera's width, height and K."""
    cameras = [("PINHOLE", [9.0, 10.0, 4.0, 3.0]), ("SIMPLE_PINHOLE", [20.0, 10.0, 6.0])]
    write_model(tmp_path, cameras, [("a.png", 2), ("b.png", 1), ("c.png", 2)], sizes=[(8, 6), (20, 12)])
    cams, extras, _, _ = load_colmap(tmp_path)
    assert cams.widths.tolist() == [20, 8, 20] and cams.heights.tolist() == [12, 6, 12]
    assert cams.widths.dtype == np.int64 and cams.heights.dtype == np.int64
    np.testing.assert_array_equal(cams.Ks[:, 0, 0], [20, 9, 20])
    np.testing.assert_array_equal(cams.Ks[:, 1, 1], [20, 10, 20])
    np.testing.assert_array_equal(cams.Ks[:, :2, 2], [[10, 6], [4, 3], [10, 6]])
    assert [e["colmap_camera_id"] for e in extras] == [2, 1, 2]
    assert cams.distortion is None


@pytest.mark.parametrize("model", FISHEYE_MODELS)
def test_every_fisheye_model_is_refused_with_a_pointer_to_the_undistorter(tmp_path, model):
    """A fisheye camera: one line naming the camera, the model and COLMAP's image_undistorter."""
    import pycolmap

    params = list(pycolmap.Camera.create_from_model_name(1, model, 10.0, W, H).params)
    write_model(tmp_path, [(model, params)], [("a.png", 1)])
    message = load_error(tmp_path)
    assert f"camera 1: fisheye camera model {model} is not supported" in message, message
    assert "image_undistorter" in message and str(tmp_path / "sparse" / "0") in message


@pytest.mark.parametrize("model", UNSUPPORTED)
def test_other_models_are_refused_naming_the_model_and_the_supported_ones(tmp_path, model):
    """A camera model that is neither supported nor fisheye: one line naming it and the supported list."""
    import pycolmap

    params = list(pycolmap.Camera.create_from_model_name(1, model, 10.0, W, H).params)
    write_model(tmp_path, [(model, params)], [("a.png", 1)])
    message = load_error(tmp_path)
    assert f"camera 1: unsupported camera model {model} (supported: {', '.join(MODELS)})" in message, message
    assert "fisheye" not in message


def test_the_refused_camera_is_named_by_its_id(tmp_path):
    """Only the image using the fisheye camera is refused, and the message names that camera's id."""
    cameras = [("PINHOLE", MODELS["PINHOLE"][0]), ("OPENCV_FISHEYE", [10.0, 10.0, 8.0, 6.0, 0.1, 0, 0, 0])]
    write_model(tmp_path, cameras, [("a.png", 1), ("b.png", 2)])
    assert "camera 2: fisheye camera model OPENCV_FISHEYE" in load_error(tmp_path)


@pytest.mark.parametrize("params, fragment", [
    ([float("nan"), 13.0, 7.5, 5.5], "non-finite camera parameters"),
    ([11.0, 13.0, float("inf"), 5.5], "non-finite camera parameters"),
    ([0.0, 13.0, 7.5, 5.5], "focal lengths must be positive, got 0.0, 13.0"),
    ([11.0, 0.0, 7.5, 5.5], "focal lengths must be positive, got 11.0, 0.0"),
    ([-11.0, 13.0, 7.5, 5.5], "focal lengths must be positive"),
    ([11.0, -13.0, 7.5, 5.5], "focal lengths must be positive"),
])
def test_bad_camera_parameters_are_refused(tmp_path, params, fragment):
    """Non-finite parameters and a zero or negative focal length (either axis) are one-line errors."""
    write_model(tmp_path, [("PINHOLE", params)], [("a.png", 1)])  # binary: COLMAP's reader lets them through
    message = load_error(tmp_path)
    assert fragment in message and "camera 1" in message, message


def test_a_tiny_positive_focal_length_is_accepted(tmp_path):
    """The focal-length check refuses only zero and below."""
    write_model(tmp_path, [("PINHOLE", [1e-3, 1e-3, 7.5, 5.5])], [("a.png", 1)])
    cams, _, _, _ = load_colmap(tmp_path)
    np.testing.assert_array_equal(cams.Ks[0, [0, 1], [0, 1]], [1e-3, 1e-3])


def test_a_non_finite_pose_is_refused(tmp_path):
    """An image whose pose holds a NaN is a one-line error naming the image."""
    bad = np.eye(4)[:3]
    bad[1, 3] = np.nan
    write_model(tmp_path, [("PINHOLE", MODELS["PINHOLE"][0])], [("a.png", 1), ("b.png", 1)], poses=[np.eye(4)[:3], bad])
    message = load_error(tmp_path)
    assert "image 'b.png': non-finite pose" in message, message


# ----------------------------------------------------------------------------- poses, points, names


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_viewmats_are_colmaps_cam_from_world(tmp_path, fmt):
    """Each viewmat is the image's cam_from_world as a 4x4 (last row 0 0 0 1), in name order."""
    rng = np.random.default_rng(7)
    poses = [pose(rng) for _ in range(3)]
    write_model(tmp_path, [("PINHOLE", MODELS["PINHOLE"][0])], [("c.png", 1), ("a.png", 1), ("b.png", 1)], fmt=fmt, poses=poses)
    cams, extras, _, _ = load_colmap(tmp_path)
    assert cams.names == ["a", "b", "c"] and [e["colmap_image_id"] for e in extras] == [2, 3, 1]
    for i, k in enumerate([1, 2, 0]):
        np.testing.assert_allclose(cams.viewmats[i, :3], poses[k], atol=1e-12)
        np.testing.assert_array_equal(cams.viewmats[i, 3], [0, 0, 0, 1])
    assert cams.viewmats.dtype == np.float64


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_a_model_without_points_gives_empty_point_arrays(tmp_path, fmt):
    """No points3D: float32 [0, 3] points and uint8 [0, 3] colours (not None, not a flat array)."""
    write_model(tmp_path, [("PINHOLE", MODELS["PINHOLE"][0])], [("a.png", 1)], fmt=fmt, points=0)
    _, _, points, colors = load_colmap(tmp_path)
    assert points.shape == (0, 3) and points.dtype == np.float32
    assert colors.shape == (0, 3) and colors.dtype == np.uint8


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_points_come_sorted_by_point_id_with_their_colours(tmp_path, fmt):
    """points3D in id order, positions and colours as COLMAP stores them."""
    rec, _ = write_model(tmp_path, [("PINHOLE", MODELS["PINHOLE"][0])], [("a.png", 1)], fmt=fmt, points=7, seed=3)
    _, _, points, colors = load_colmap(tmp_path)
    ids = sorted(rec.points3D)
    np.testing.assert_allclose(points, [rec.points3D[i].xyz for i in ids], atol=1e-6)
    np.testing.assert_array_equal(colors, [rec.points3D[i].color for i in ids])
    assert points.shape == (7, 3) and colors.shape == (7, 3)


def test_points_are_ordered_by_id_not_by_file_order(tmp_path):
    """A hand-written points3D.txt listing ids 5, 2, 9 gives the rows of 2, 5, 9."""
    write_text_model(tmp_path, images="1 1 0 0 0 0 0 0 1 a.png\n\n",
                     points="5 1 1 1 10 20 30 0\n2 2 2 2 40 50 60 0\n9 3 3 3 70 80 90 0\n")
    _, _, points, colors = load_colmap(tmp_path)
    np.testing.assert_array_equal(points, [[2, 2, 2], [1, 1, 1], [3, 3, 3]])
    np.testing.assert_array_equal(colors, [[40, 50, 60], [10, 20, 30], [70, 80, 90]])


def test_image_names_with_spaces_and_subfolders_in_a_binary_model(tmp_path):
    """Names keep their folders and spaces: paths under images/, sorted by the full name, names are the stems."""
    names = ["sub/dir/IMG 2.jpg", "my photo 1.png", "sub/b.png"]
    write_model(tmp_path, [("PINHOLE", MODELS["PINHOLE"][0])], [(n, 1) for n in names])
    cams, extras, _, _ = load_colmap(tmp_path)
    assert cams.names == ["my photo 1", "b", "IMG 2"]
    assert cams.image_paths == [tmp_path / "images" / "my photo 1.png", tmp_path / "images" / "sub" / "b.png",
                                tmp_path / "images" / "sub" / "dir" / "IMG 2.jpg"]
    assert [e["colmap_image_id"] for e in extras] == [2, 3, 1]


def write_text_model(root: Path, images: str, cameras: str = f"1 PINHOLE {W} {H} 11 13 7.5 5.5\n", points: str = "",
                     image_files: tuple[str, ...] = ("a.png",)) -> Path:
    """A COLMAP text model written by hand (the pre-rig layout: cameras, images, points3D only)."""
    model = root / "sparse" / "0"
    model.mkdir(parents=True, exist_ok=True)
    (model / "cameras.txt").write_text("# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n" + cameras)
    (model / "images.txt").write_text("# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n" + images)
    (model / "points3D.txt").write_text(points)
    for name in image_files:
        write_png(root / "images" / name)
    return model


def test_a_hand_written_text_model_without_rigs_is_read(tmp_path):
    """The classic three-file text model (no rigs.txt or frames.txt) loads, pose and ids as written."""
    write_text_model(tmp_path, images="3 1 0 0 0 0.5 -1 2 1 a.png\n\n")
    cams, extras, points, _ = load_colmap(tmp_path)
    np.testing.assert_allclose(cams.viewmats[0], [[1, 0, 0, 0.5], [0, 1, 0, -1], [0, 0, 1, 2], [0, 0, 0, 1]])
    np.testing.assert_array_equal(cams.Ks[0], [[11, 0, 7.5], [0, 13, 5.5], [0, 0, 1]])
    assert extras == [{"colmap_image_id": 3, "colmap_camera_id": 1}] and len(points) == 0


def test_an_image_referring_to_a_missing_camera_is_a_one_line_error(tmp_path):
    """images.txt naming camera 7 that cameras.txt lacks: a one-line 'cannot read' error, no traceback text."""
    model = write_text_model(tmp_path, images="1 1 0 0 0 0 0 0 7 a.png\n\n")
    message = load_error(tmp_path)
    assert message.startswith(f"{model}: cannot read COLMAP model (") and "7" in message, message


def test_a_text_name_with_a_space_is_cut_by_colmap_and_reported_as_missing(tmp_path):
    """COLMAP's text reader ends a name at its first space: the loader then says which file it did not find."""
    write_text_model(tmp_path, images="1 1 0 0 0 0 0 0 1 my photo.png\n\n", image_files=("my photo.png",))
    message = load_error(tmp_path)
    assert "image 'my': image file" in message and "not found" in message, message


def test_unregistered_images_are_skipped_and_none_registered_is_refused(tmp_path):
    """Images without a pose are left out; a model with no posed image is an error."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera.create_from_model_name(1, "PINHOLE", 10.0, W, H))
    rec.add_image_with_trivial_frame(pycolmap.Image(name="a.png", camera_id=1, image_id=1))
    write_png(tmp_path / "images" / "a.png")
    (tmp_path / "sparse").mkdir()
    rec.write_binary(str(tmp_path / "sparse"))
    assert "zero registered images" in load_error(tmp_path)
    rec.add_image_with_trivial_frame(pycolmap.Image(name="b.png", camera_id=1, image_id=2), pycolmap.Rigid3d(np.eye(4)[:3]))
    write_png(tmp_path / "images" / "b.png")
    rec.write_binary(str(tmp_path / "sparse"))
    cams, extras, _, _ = load_colmap(tmp_path)
    assert cams.names == ["b"] and extras == [{"colmap_image_id": 2, "colmap_camera_id": 1}]


def test_a_missing_image_file_is_named(tmp_path):
    """A registered image whose file is absent: the message names the image and the path looked for."""
    write_model(tmp_path, [("PINHOLE", MODELS["PINHOLE"][0])], [("a.png", 1), ("sub/b.png", 1)])
    (tmp_path / "images" / "sub" / "b.png").unlink()
    message = load_error(tmp_path)
    assert f"image 'sub/b.png': image file {tmp_path / 'images' / 'sub' / 'b.png'} not found" in message, message


def test_a_folder_with_the_image_name_is_not_an_image_file(tmp_path):
    """The image must be a file: a folder of that name is reported as not found."""
    write_model(tmp_path, [("PINHOLE", MODELS["PINHOLE"][0])], [("a.png", 1)])
    (tmp_path / "images" / "a.png").unlink()
    (tmp_path / "images" / "a.png").mkdir()
    assert "not found" in load_error(tmp_path)


def test_a_relative_root_gives_absolute_image_paths(tmp_path, monkeypatch):
    """Loading through a relative root still gives absolute image paths."""
    write_model(tmp_path / "scene", [("PINHOLE", MODELS["PINHOLE"][0])], [("a.png", 1)])
    monkeypatch.chdir(tmp_path)
    cams, _, _, _ = load_colmap("scene")
    assert cams.image_paths == [tmp_path / "scene" / "images" / "a.png"]
    assert cams.image_paths[0].is_absolute()


# ----------------------------------------------------------------------------- where the model is


def test_model_folder_prefers_sparse_0_and_accepts_either_file_kind(tmp_path):
    """sparse/0 before sparse; cameras.bin or cameras.txt marks a model; a folder named cameras.bin does not."""
    assert colmap_model_dir(tmp_path) is None
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse" / "cameras.txt").write_text("")
    assert colmap_model_dir(tmp_path) == tmp_path / "sparse"
    (tmp_path / "sparse" / "0" / "cameras.bin").write_bytes(b"")
    assert colmap_model_dir(str(tmp_path)) == tmp_path / "sparse" / "0"
    other = tmp_path / "other"
    (other / "sparse" / "0" / "cameras.bin").mkdir(parents=True)  # a folder, not a file
    assert colmap_model_dir(other) is None
    (other / "sparse" / "cameras.bin").write_bytes(b"")
    assert colmap_model_dir(other) == other / "sparse"


def test_no_model_and_an_unreadable_model_are_one_line_errors(tmp_path):
    """No cameras file: 'no COLMAP model'; a corrupt cameras.bin: 'cannot read COLMAP model' and the folder."""
    assert "no COLMAP model" in load_error(tmp_path) and str(tmp_path) in load_error(tmp_path)
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    (model / "cameras.bin").write_bytes(b"\x05garbage")
    (model / "images.bin").write_bytes(b"")
    (model / "points3D.bin").write_bytes(b"")
    message = load_error(tmp_path)
    assert message.startswith(f"{model}: cannot read COLMAP model (") and message.endswith(")"), message
