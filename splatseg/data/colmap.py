"""COLMAP sparse model (binary or text, read by pycolmap) -> `Cameras`, extras and sparse points.

Layout: `root/sparse/0/{cameras,images,points3D}.{bin,txt}` (or directly in `root/sparse/`), image
files in `root/images/<image name>`.

Conventions: COLMAP's `cam_from_world` maps world -> camera in OpenCV axes (x right, y down,
z forward), which is splatseg's viewmat as is. COLMAP puts the image origin at the top-left corner
of the top-left pixel, whose centre is (0.5, 0.5), like splatseg, so (cx, cy) are used unchanged
(a centred principal point is W/2; pycolmap's own default and `Camera.rescale` agree, see
tests/test_data.py). Supported camera models: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV,
FULL_OPENCV; their distortion is kept in `Cameras.distortion` in OpenCV's order (k1, k2, p1, p2, and
k3..k6 for FULL_OPENCV), and stages undistort the images (`splatseg.data.undistort`). Fisheye models
are refused with a one-line pointer to COLMAP's image_undistorter.
Only registered images (with a pose) are loaded, sorted by image name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splatseg.data import SceneError
from splatseg.types import Cameras

__all__ = ["load_colmap", "colmap_model_dir", "SUPPORTED_MODELS"]

# model name -> (indices of fx, fy, cx, cy, and of OpenCV's k1, k2, p1, p2[, k3, k4, k5, k6] in the params; None = 0)
SUPPORTED_MODELS: dict[str, tuple[tuple[int, int, int, int], tuple[int | None, ...]]] = {
    "SIMPLE_PINHOLE": ((0, 0, 1, 2), (None, None, None, None)),
    "PINHOLE": ((0, 1, 2, 3), (None, None, None, None)),
    "SIMPLE_RADIAL": ((0, 0, 1, 2), (3, None, None, None)),
    "RADIAL": ((0, 0, 1, 2), (3, 4, None, None)),
    "OPENCV": ((0, 1, 2, 3), (4, 5, 6, 7)),
    "FULL_OPENCV": ((0, 1, 2, 3), (4, 5, 6, 7, 8, 9, 10, 11)),
}
FISHEYE_MODELS = ("SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE", "OPENCV_FISHEYE", "THIN_PRISM_FISHEYE", "FOV",
                  "RAD_TAN_THIN_PRISM_FISHEYE", "SIMPLE_FISHEYE", "FISHEYE")


def colmap_model_dir(root: str | Path) -> Path | None:
    """`root/sparse/0` or `root/sparse` if it holds cameras.bin or cameras.txt, else None."""
    root = Path(root)
    for d in (root / "sparse" / "0", root / "sparse"):
        if (d / "cameras.bin").is_file() or (d / "cameras.txt").is_file():
            return d
    return None


def _intrinsics(camera, where: str) -> tuple[list[list[float]], list[float]]:
    """(K [3, 3], distortion [k1, k2, p1, p2]) of a pycolmap camera; SceneError if unsupported."""
    model = camera.model.name
    if model in FISHEYE_MODELS:
        raise SceneError(f"{where}: fisheye camera model {model} is not supported: run COLMAP's image_undistorter "
                         "(it writes pinhole images and a PINHOLE model) and point --data at its output")
    if model not in SUPPORTED_MODELS:
        raise SceneError(f"{where}: unsupported camera model {model} (supported: {', '.join(SUPPORTED_MODELS)}); "
                         "run COLMAP's image_undistorter first")
    (ifx, ify, icx, icy), idist = SUPPORTED_MODELS[model]
    p = np.asarray(camera.params, dtype=np.float64)
    if not np.isfinite(p).all():
        raise SceneError(f"{where}: non-finite camera parameters {p.tolist()}")
    fx, fy, cx, cy = p[ifx], p[ify], p[icx], p[icy]
    if fx <= 0 or fy <= 0:
        raise SceneError(f"{where}: focal lengths must be positive, got {fx}, {fy}")
    K = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
    return K, [0.0 if i is None else float(p[i]) for i in idist]


def load_colmap(root: str | Path) -> tuple[Cameras, list[dict], np.ndarray, np.ndarray]:
    """Read the COLMAP model under `root` (see `colmap_model_dir`).

    Returns:
        cameras: registered images sorted by name (absolute image paths); viewmats = COLMAP
            cam_from_world (OpenCV axes).
        frame_extras: per camera {"colmap_image_id": int, "colmap_camera_id": int}.
        points: float32 [P, 3] world-frame points3D (sorted by point id), point_colors: uint8 [P, 3].
    Raises SceneError with a one-line message.
    """
    import pycolmap

    root = Path(root)
    model_dir = colmap_model_dir(root)
    if model_dir is None:
        raise SceneError(f"{root}: no COLMAP model (sparse/0/cameras.bin or cameras.txt)")
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # pycolmap raises ValueError/RuntimeError with COLMAP's check message
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SceneError(f"{model_dir}: cannot read COLMAP model ({msg})") from None

    images = sorted((img for img in rec.images.values() if img.has_pose), key=lambda img: img.name)
    if not images:
        raise SceneError(f"{model_dir}: zero registered images")
    viewmats, Ks, widths, heights, names, paths, dists, extras = [], [], [], [], [], [], [], []
    any_distortion = False
    seen: dict[str, str] = {}
    for img in images:
        where = f"{model_dir}: image {img.name!r}"
        path = root.absolute() / "images" / img.name
        if not path.is_file():
            raise SceneError(f"{where}: image file {path} not found")
        stem = Path(img.name).stem
        if stem in seen:
            raise SceneError(f"{where}: image stem {stem!r} is also used by {seen[stem]!r} (stems must be unique)")
        seen[stem] = img.name
        camera = rec.cameras[img.camera_id]
        K, dist = _intrinsics(camera, f"{model_dir}: camera {img.camera_id}")
        any_distortion |= camera.model.name not in ("SIMPLE_PINHOLE", "PINHOLE")
        viewmat = np.eye(4)
        viewmat[:3] = img.cam_from_world().matrix()
        if not np.isfinite(viewmat).all():
            raise SceneError(f"{where}: non-finite pose")
        viewmats.append(viewmat)
        Ks.append(K)
        widths.append(int(camera.width))
        heights.append(int(camera.height))
        names.append(stem)
        paths.append(path)
        dists.append(dist)
        extras.append({"colmap_image_id": int(img.image_id), "colmap_camera_id": int(img.camera_id)})

    points3D = sorted(rec.points3D.items(), key=lambda item: item[0])
    points = np.array([p.xyz for _, p in points3D], dtype=np.float32).reshape(-1, 3)
    colors = np.array([p.color for _, p in points3D], dtype=np.uint8).reshape(-1, 3)
    cameras = Cameras(
        viewmats=np.stack(viewmats).astype(np.float64),
        Ks=np.asarray(Ks, dtype=np.float64),
        widths=np.asarray(widths, dtype=np.int64),
        heights=np.asarray(heights, dtype=np.int64),
        names=names,
        image_paths=paths,
        distortion=np.asarray([d + [0.0] * (max(map(len, dists)) - len(d)) for d in dists], dtype=np.float64) if any_distortion else None,
    )
    return cameras, extras, points, colors
