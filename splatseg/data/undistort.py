"""Lens distortion, handled by undistortion: pinhole copies of a scene's images, cached.

splatseg renders pinhole cameras, so a scene whose cameras declare distortion (transforms.json
`k1 k2 p1 p2 [k3]`, COLMAP SIMPLE_RADIAL / RADIAL / OPENCV / FULL_OPENCV) is never used as is:
`undistort_scene` writes undistorted images with COLMAP's undistorter (pycolmap `undistort_camera`
/ `undistort_image`: the largest pinhole image without blank pixels, same focal length, principal
point centred) into a cache directory and returns the scene with those images and the new pinhole
intrinsics. Views without distortion keep their files.

Everything downstream sees only the pinhole views: segments, training, the run's feature maps.
`segment --click STEM X Y` keeps taking pixels of the user's own (distorted) photo: `undistorted_pixel`
maps them through the cache's cameras; the evaluation undistorts ground-truth masks with `undistort_mask`.

Cache layout (DIR, by default inside the output: RUN/undistorted or RECON/undistorted):
    images/<stem>.png    undistorted image of each distorted view
    undistorted.json     per view: source file, its size and mtime, the distorted and the new camera
                         (COLMAP model + params, size); an entry is reused only when all of these match
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from splatseg.data import Scene, SceneError
from splatseg.io.atomic import atomic_write
from splatseg.io.images import load_image, save_image
from splatseg.types import Cameras

__all__ = ["needs_undistortion", "colmap_camera", "undistort_scene", "cache_entries", "undistorted_pixel", "undistort_mask",
           "photo_pixels_to_run",
           "MANIFEST_NAME", "CACHE_NAME"]

MANIFEST_NAME = "undistorted.json"
CACHE_NAME = "undistorted"
"""Default cache folder name inside a run or recon output."""
CACHE_VERSION = 1


def needs_undistortion(cameras: Cameras) -> np.ndarray:
    """bool [C]: cameras whose distortion has a nonzero coefficient."""
    if cameras.distortion is None:
        return np.zeros(len(cameras), dtype=bool)
    return np.any(cameras.distortion != 0, axis=1)


def colmap_camera(cameras: Cameras, i: int):
    """A pycolmap Camera for camera i: OPENCV (k1 k2 p1 p2) or FULL_OPENCV (k1 k2 p1 p2 k3 k4 k5 k6).
    COLMAP puts pixel centres at (i + 0.5, j + 0.5) like splatseg, so K is used as it is."""
    import pycolmap

    K = cameras.Ks[i]
    if abs(K[0, 1]) > 1e-12 or np.any(K[2] != [0.0, 0.0, 1.0]):
        raise SceneError(f"camera {cameras.names[i]!r}: K has skew, which the undistorter cannot take")
    coeffs = [] if cameras.distortion is None else [float(c) for c in cameras.distortion[i]]
    coeffs += [0.0] * (4 - len(coeffs)) if len(coeffs) <= 4 else [0.0] * (8 - len(coeffs))
    model = "OPENCV" if len(coeffs) == 4 else "FULL_OPENCV"
    return pycolmap.Camera(model=model, width=int(cameras.widths[i]), height=int(cameras.heights[i]),
                           params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2], *coeffs])


def _camera_record(camera) -> dict:
    return {"model": camera.model.name, "width": int(camera.width), "height": int(camera.height),
            "params": [float(p) for p in camera.params]}


def _source_record(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


def _read_manifest(path: Path) -> dict:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(body, dict) or body.get("version") != CACHE_VERSION or not isinstance(body.get("views"), dict):
        return {}
    return body["views"]


def undistort_scene(scene: Scene, cache_dir: str | Path, progress: bool = True, log=print) -> tuple[Scene, dict | None]:
    """(scene, record): `scene` with every distorted view replaced by its undistorted copy in
    `cache_dir` (pinhole K, new size, `distortion` None), and a record for run.json / recon.json
    (None, and the scene unchanged, when no camera is distorted). Reuses valid cache entries."""
    import pycolmap

    cams = scene.cameras
    todo = np.flatnonzero(needs_undistortion(cams))
    if len(todo) == 0:
        return (scene if cams.distortion is None else replace(scene, cameras=replace(cams, distortion=None))), None
    cache_dir = Path(cache_dir)
    (cache_dir / "images").mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / MANIFEST_NAME
    cached = _read_manifest(manifest_path)
    options = pycolmap.UndistortCameraOptions()
    Ks, widths, heights, paths = cams.Ks.copy(), cams.widths.copy(), cams.heights.copy(), list(cams.image_paths)
    views, written = {}, 0
    for i in tqdm(todo, desc="undistort", disable=not progress, leave=False):
        name, source = cams.names[i], Path(cams.image_paths[i])
        if not source.is_file():
            raise SceneError(f"{source}: image file not found (view {name!r})")
        distorted = colmap_camera(cams, i)
        pinhole = pycolmap.undistort_camera(options, distorted)
        target = cache_dir / "images" / f"{name}.png"
        entry = {"source": _source_record(source), "distorted": _camera_record(distorted), "pinhole": _camera_record(pinhole),
                 "file": str(target.relative_to(cache_dir))}
        if cached.get(name) != entry or not target.is_file():
            rgb = load_image(source)
            if (rgb.shape[1], rgb.shape[0]) != (distorted.width, distorted.height):
                raise SceneError(f"{source}: image is {rgb.shape[1]}x{rgb.shape[0]} but its camera says "
                                 f"{distorted.width}x{distorted.height}; undistortion needs the calibrated size")
            bitmap, camera = pycolmap.undistort_image(options, pycolmap.Bitmap.from_array(rgb), distorted)
            if _camera_record(camera) != entry["pinhole"]:  # undistort_image and undistort_camera must agree
                raise SceneError(f"{source}: the undistorter's camera changed between calls ({camera})")
            save_image(target, np.ascontiguousarray(bitmap.to_array()[..., :3]))
            written += 1
        views[name] = entry
        fx, fy, cx, cy = pinhole.params
        Ks[i] = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
        widths[i], heights[i], paths[i] = pinhole.width, pinhole.height, target
    with atomic_write(manifest_path) as f:
        f.write((json.dumps({"version": CACHE_VERSION, "views": {**cached, **views}}, indent=2) + "\n").encode())
    first = views[cams.names[todo[0]]]
    record = {"cache": str(cache_dir.resolve()), "views": len(todo), "written": written, "reused": len(todo) - written,
              "method": "pycolmap undistort_image (COLMAP image_undistorter, blank_pixels 0)",
              "example": {"view": cams.names[todo[0]], "distorted": first["distorted"], "pinhole": first["pinhole"]}}
    d, p = first["distorted"], first["pinhole"]
    log(f"undistorted {len(todo)} of {len(cams)} views ({d['model']} distortion; {written} written, "
        f"{len(todo) - written} reused) into {cache_dir}: pinhole {p['width']}x{p['height']} from {d['width']}x{d['height']}")
    cameras = replace(cams, Ks=Ks, widths=widths, heights=heights, image_paths=paths, distortion=None)
    return replace(scene, cameras=cameras), record


# ------------------------------------------------------------------ using a cache after the run


def _pycolmap_camera(record: dict):
    import pycolmap

    return pycolmap.Camera(model=record["model"], width=record["width"], height=record["height"], params=record["params"])


def cache_entries(cache_dir: str | Path) -> dict:
    """stem -> manifest entry ({"distorted", "pinhole", ...}) of an undistortion cache ({} if none)."""
    return _read_manifest(Path(cache_dir) / MANIFEST_NAME)


def undistorted_pixel(entry: dict | None, x: float, y: float) -> tuple[float, float]:
    """Pixel (x, y) of the original (distorted) photo -> the same ray's pixel in its undistorted copy
    (`entry`: the view's cache entry; None: the view was not undistorted, unchanged)."""
    if entry is None:
        return float(x), float(y)
    normalised = _pycolmap_camera(entry["distorted"]).cam_from_img(np.array([[x, y]], dtype=np.float64))[0]
    fx, fy, cx, cy = entry["pinhole"]["params"]
    return float(fx * normalised[0] + cx), float(fy * normalised[1] + cy)


def undistort_mask(mask: np.ndarray, entry: dict | None) -> np.ndarray:
    """bool [H, W] mask of the original photo -> bool mask of its undistorted copy (same warp as the
    image; a pixel is in when over half of it was)."""
    if entry is None:
        return mask
    import pycolmap

    grey = np.repeat((np.asarray(mask, bool).astype(np.uint8) * 255)[..., None], 3, axis=2)
    bitmap, _ = pycolmap.undistort_image(pycolmap.UndistortCameraOptions(), pycolmap.Bitmap.from_array(grey),
                                         _pycolmap_camera(entry["distorted"]))
    return bitmap.to_array()[..., 0] > 127


def photo_pixels_to_run(undistortion: dict | None, points: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(stem, x, y) pixels of the user's photos -> pixels of the images a run was trained on.
    `undistortion`: the run's record (run.json "undistortion"); None leaves the points as they are.
    SceneError when the run's cache is gone (its cameras are needed)."""
    if not undistortion:
        return list(points)
    entries = cache_entries(undistortion["cache"])
    if not entries:
        raise SceneError(f"the run's undistortion cache {undistortion['cache']} is missing: rerun train to rebuild it")
    return [(stem, *undistorted_pixel(entries.get(stem), x, y)) for stem, x, y in points]
