"""Lens distortion is undistorted, never ignored: a generated scene photographed through a known
distortion (transforms.json OPENCV, COLMAP RADIAL) comes out of train / recon as pinhole images that
match the pinhole render of the same splats."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from scipy.spatial.transform import Rotation

from splatseg.data import load_scene
from splatseg.data.transforms_json import write_transforms_json
from splatseg.data.undistort import cache_entries, photo_pixels_to_run, undistort_mask, undistort_scene
from splatseg.io.images import load_image
from splatseg.io.ply import read_ply
from splatseg.render import render
from splatseg.types import SH_C0, Cameras, Splats

PAD = 60  # the pinhole render is this much wider on each side, so barrel-distorted corners have content


def render_pinhole(splats, cams: Cameras, i: int, K: np.ndarray, w: int, h: int) -> np.ndarray:
    p = splats.torch_params()
    with torch.no_grad():
        out = render(p["means"], p["quats"], p["scales"], p["opacities"], p["sh"], torch.from_numpy(cams.viewmats[i : i + 1]).float(),
                     torch.from_numpy(K[None]).float(), w, h, sh_degree=splats.sh_degree)
    return out.colors[0].clamp(0, 1).numpy()


def distort_points(x: np.ndarray, y: np.ndarray, k1, k2, p1, p2):
    """OpenCV's forward model on normalised coordinates (k1 k2 p1 p2), written out independently."""
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def undistort_points(xd: np.ndarray, yd: np.ndarray, coeffs) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pinhole coordinates whose distortion is (xd, yd): Newton's method on the forward model."""
    x, y = xd.copy(), yd.copy()
    for _ in range(30):  # Newton with a numerical Jacobian
        fx, fy = distort_points(x, y, *coeffs)
        e = 1e-6
        ax, ay = distort_points(x + e, y, *coeffs)
        bx, by = distort_points(x, y + e, *coeffs)
        j11, j21, j12, j22 = (ax - fx) / e, (ay - fy) / e, (bx - fx) / e, (by - fy) / e
        det = j11 * j22 - j12 * j21
        rx, ry = fx - xd, fy - yd
        x, y = x - (j22 * rx - j12 * ry) / det, y - (-j21 * rx + j11 * ry) / det
    assert np.abs(np.stack(distort_points(x, y, *coeffs)) - np.stack([xd, yd])).max() < 1e-9
    return x, y


def distorted_photo(splats, cams: Cameras, i: int, coeffs) -> np.ndarray:
    """uint8 [H, W, 3]: what a camera with these distortion coefficients photographs. Each distorted
    pixel centre is undistorted (Newton), then the padded pinhole render is sampled there (bilinear)."""
    K = cams.Ks[i]
    w, h = int(cams.widths[i]), int(cams.heights[i])
    big = K.copy()
    big[0, 2] += PAD
    big[1, 2] += PAD
    pinhole = render_pinhole(splats, cams, i, big, w + 2 * PAD, h + 2 * PAD)
    v, u = np.mgrid[0:h, 0:w] + 0.5
    x, y = undistort_points((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], coeffs)
    col = x * K[0, 0] + K[0, 2] + PAD - 0.5  # array coordinates of the pinhole render
    row = y * K[1, 1] + K[1, 2] + PAD - 0.5
    assert col.min() >= 0 and row.min() >= 0 and col.max() <= w + 2 * PAD - 1 and row.max() <= h + 2 * PAD - 1
    channels = [ndimage.map_coordinates(pinhole[..., c], [row, col], order=1) for c in range(3)]
    return (np.clip(np.stack(channels, -1), 0, 1) * 255 + 0.5).astype(np.uint8)


def dot_scene() -> tuple[Splats, Cameras]:
    """Small bright dots on a plane (a calibration target) and 3 cameras looking at it, 120x90 px."""
    gx, gy = np.meshgrid(np.linspace(-3.2, 3.2, 33), np.linspace(-2.4, 2.4, 25))
    means = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1).astype(np.float32)
    n = len(means)
    splats = Splats(means=means, quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)), log_scales=np.full((n, 3), np.log(0.02), np.float32),
                    opacity_logits=np.full(n, 5.0, np.float32), sh0=np.full((n, 1, 3), (1.0 - 0.5) / SH_C0, np.float32),
                    shN=np.zeros((n, 0, 3), np.float32))
    viewmats = []
    for yaw in (-4.0, 0.0, 5.0):
        r = Rotation.from_euler("yx", [yaw, 3.0], degrees=True).as_matrix()  # camera -> world rotation
        c2w = np.eye(4)
        c2w[:3, :3] = r
        c2w[:3, 3] = [0.1, -0.05, -3.0]
        viewmats.append(np.linalg.inv(c2w))
    K = np.array([[100.0, 0, 60.0], [0, 100.0, 45.0], [0, 0, 1]])
    cams = Cameras(np.stack(viewmats), np.repeat(K[None], 3, 0), np.full(3, 120), np.full(3, 90),
                   [f"dots_{i}" for i in range(3)], [Path(f"dots_{i}.png") for i in range(3)])
    return splats, cams


def write_distorted_scene(root: Path, splats: Splats, cams: Cameras, coeffs, layout: str) -> Path:
    """A scene directory whose photos are `cams` seeing `splats` through the distortion `coeffs`."""
    (root / "images").mkdir(parents=True)
    paths = [root / "images" / f"{n}.png" for n in cams.names]
    for i, path in enumerate(paths):
        Image.fromarray(distorted_photo(splats, cams, i, coeffs)).save(path)
    cams = replace(cams, image_paths=paths, distortion=np.tile(np.asarray(coeffs, np.float64), (len(cams), 1)))
    if layout == "transforms":
        write_transforms_json(root, cams)
    else:  # COLMAP RADIAL: f, cx, cy, k1, k2
        import pycolmap

        assert coeffs[2] == coeffs[3] == 0 and cams.Ks[0, 0, 0] == cams.Ks[0, 1, 1]
        rec = pycolmap.Reconstruction()
        cam = pycolmap.Camera.create_from_model_name(1, "RADIAL", 1.0, int(cams.widths[0]), int(cams.heights[0]))
        K = cams.Ks[0]
        cam.params = [K[0, 0], K[0, 2], K[1, 2], coeffs[0], coeffs[1]]
        rec.add_camera_with_trivial_rig(cam)
        for iid, (name, viewmat) in enumerate(zip(cams.names, cams.viewmats), start=1):
            rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{name}.png", camera_id=1, image_id=iid), pycolmap.Rigid3d(viewmat[:3]))
        (root / "sparse" / "0").mkdir(parents=True)
        rec.write_binary(str(root / "sparse" / "0"))
    return root


def dot_errors(splats: Splats, cams: Cameras) -> np.ndarray:
    """Pixel distance between each dot's projection (pinhole `cams`) and the brightness centroid
    of the photo around it, for dots at least 5 px inside the image."""
    errors = []
    for i in range(len(cams)):
        photo = load_image(cams.image_paths[i]).astype(np.float64).mean(-1)
        cam = cams.viewmats[i] @ np.c_[splats.means, np.ones(len(splats))].T
        uv = (cams.Ks[i] @ cam[:3]).T
        uv = uv[:, :2] / uv[:, 2:]
        h, w = photo.shape
        for u, v in uv:
            if not (5 <= u < w - 5 and 5 <= v < h - 5):
                continue
            c, r = int(u), int(v)
            patch = photo[r - 2 : r + 3, c - 2 : c + 3]
            patch = np.clip(patch - np.median(photo), 0, None)
            rows, cols = np.mgrid[r - 2 : r + 3, c - 2 : c + 3] + 0.5
            errors.append(np.hypot((patch * cols).sum() / patch.sum() - u, (patch * rows).sum() / patch.sum() - v))
    return np.asarray(errors)


@pytest.mark.parametrize("layout,coeffs", [("transforms", (-0.15, 0.05, 0.003, -0.004)), ("colmap", (0.08, 0.3, 0.0, 0.0))])
def test_undistorted_images_put_every_dot_where_the_pinhole_camera_projects_it(tmp_path, layout, coeffs):
    splats, cams = dot_scene()
    scene_dir = write_distorted_scene(tmp_path / "scene", splats, cams, coeffs, layout)
    loaded = load_scene(scene_dir).cameras
    np.testing.assert_allclose(loaded.distortion, np.tile(coeffs, (3, 1)))  # every coefficient read (RADIAL keeps k2)
    ignored = dot_errors(splats, loaded)  # the photos taken as pinhole, distortion ignored
    scene, record = undistort_scene(load_scene(scene_dir), tmp_path / "cache", progress=False, log=lambda _: None)
    assert record["views"] == 3 and scene.cameras.distortion is None
    assert all(Path(p).parent == tmp_path / "cache" / "images" for p in scene.cameras.image_paths)
    errors = dot_errors(splats, scene.cameras)
    assert len(errors) > 300 and np.percentile(errors, 95) < 0.3 and errors.max() < 0.5, (np.percentile(errors, 95), errors.max())
    assert np.percentile(ignored, 95) > 1.0, np.percentile(ignored, 95)  # (the 5x5 window caps what it can see)

    # a click on the user's (distorted) photo lands on the same ray in the undistorted image
    entries = cache_entries(tmp_path / "cache")
    cam = loaded.viewmats[0] @ np.c_[splats.means, np.ones(len(splats))].T
    x, y = cam[0] / cam[2], cam[1] / cam[2]
    inside = (np.abs(x) < 0.5) & (np.abs(y) < 0.4)
    xd, yd = distort_points(x[inside], y[inside], *coeffs)
    K, K2 = loaded.Ks[0], scene.cameras.Ks[0]
    record = {"cache": str(tmp_path / "cache")}
    mapped = photo_pixels_to_run(record, [(loaded.names[0], u, v) for u, v in zip(K[0, 0] * xd + K[0, 2], K[1, 1] * yd + K[1, 2])])
    expected = np.stack([K2[0, 0] * x[inside] + K2[0, 2], K2[1, 1] * y[inside] + K2[1, 2]], 1)
    np.testing.assert_allclose(np.array([m[1:] for m in mapped]), expected, atol=1e-4)
    # and a mask drawn on the photo (a disc in pinhole terms, off centre) becomes the undistorted image's
    disc = lambda x, y: (x - 0.2) ** 2 + (y + 0.1) ** 2 < 0.25 ** 2  # noqa: E731
    v, u = np.mgrid[0:90, 0:120] + 0.5
    drawn = disc(*undistort_points((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], coeffs))
    warped = undistort_mask(drawn, entries[loaded.names[0]])
    h2, w2 = int(scene.cameras.heights[0]), int(scene.cameras.widths[0])
    v, u = np.mgrid[0:h2, 0:w2] + 0.5
    truth = disc((u - K2[0, 2]) / K2[0, 0], (v - K2[1, 2]) / K2[1, 1])
    assert warped.shape == truth.shape and (warped & truth).sum() / (warped | truth).sum() > 0.97


def test_recon_and_train_undistort_and_say_so(tiny_scene, tmp_path, capsys):
    from splatseg.recon import ReconConfig, run_recon
    from splatseg.run import load_field
    from splatseg.train import TrainConfig, train

    splats = read_ply(tiny_scene / "splats.ply")
    scene_dir = write_distorted_scene(tmp_path / "scene", splats, load_scene(tiny_scene).cameras.subset(range(6)),
                                      (-0.18, 0.06, 0.004, -0.003), "transforms")
    run_recon(ReconConfig(data=scene_dir, out=tmp_path / "recon", steps=0, device="cpu", init_num_points=200, max_gaussians=200,
                          sh_degree=0, test_every=0, ckpt_every=0, eval_every=0, progress=False))
    assert "undistorted 6 of 6 views" in capsys.readouterr().out
    report = json.loads((tmp_path / "recon" / "recon.json").read_text())
    assert report["undistortion"]["views"] == 6 and report["image_size"] != [96, 72]
    assert len(list((tmp_path / "recon" / "undistorted" / "images").glob("*.png"))) == 6

    run = train(TrainConfig(data=scene_dir, splats=tiny_scene / "splats.ply", out=tmp_path / "run", iterations=2,
                            segments=tmp_path / "segments", undistorted_dir=tmp_path / "recon" / "undistorted", progress=False))
    out = capsys.readouterr().out
    assert "undistorted 6 of 6 views" in out and "0 written, 6 reused" in out  # recon's cache, reused
    info = json.loads((run / "run.json").read_text())
    assert info["undistortion"]["reused"] == 6 and info["alignment"]["ok"]  # pinhole views agree with the splats
    assert [int(v) for v in load_field(run).image_sizes[0]] == report["image_size"]
    # the source changed: the cache entry is rewritten
    photo = scene_dir / "images" / "view_000.png"
    Image.fromarray(load_image(photo)[::-1].copy()).save(photo)
    _, record = undistort_scene(load_scene(scene_dir), tmp_path / "recon" / "undistorted", progress=False, log=lambda _: None)
    assert record["written"] == 1 and record["reused"] == 5


def test_k3_reaches_the_undistorter_as_full_opencv(tmp_path):
    from splatseg.data.undistort import colmap_camera

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    frame = {"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}
    (tmp_path / "transforms.json").write_text(json.dumps({"fl_x": 50, "w": 40, "h": 30, "k1": 0.1, "k3": -0.02, "frames": [frame]}))
    cams = load_scene(tmp_path).cameras
    np.testing.assert_allclose(cams.distortion, [[0.1, 0, 0, 0, -0.02]])
    camera = colmap_camera(cams, 0)
    assert camera.model.name == "FULL_OPENCV" and list(camera.params)[4:9] == pytest.approx([0.1, 0, 0, 0, -0.02])
