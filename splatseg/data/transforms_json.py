"""nerfstudio / instant-ngp `transforms.json` <-> `Cameras` + per-frame extras.

File conventions:
- `transform_matrix`: 4x4 (or 3x4) camera -> world in OpenGL camera axes (x right, y up, camera
  looks down -z). splatseg uses OpenCV axes (x right, y down, z forward), so
  c2w_opencv = c2w_opengl @ diag(1, -1, -1, 1) and viewmat = inv(c2w_opencv).
- Intrinsics `fl_x fl_y cx cy w h` in pixels, at the top level and/or per frame (per frame wins).
  nerfstudio and instant-ngp put pixel centres at (i + 0.5, j + 0.5) like splatseg, so cx, cy are
  used as they are. Fallbacks: `camera_angle_x` / `camera_angle_y` (radians, full field of view)
  when `fl_x` / `fl_y` are missing; one focal length copies the other; cx, cy default to w/2, h/2;
  w, h default to the image file's size.
- Distortion `k1 k2 p1 p2` (and `k3`, the r^6 term) is kept in `Cameras.distortion` in OpenCV's order
  (k1 k2 p1 p2 [k3]); stages undistort the images (`splatseg.data.undistort`). `k4` must be 0: it is
  nerfstudio's fourth radial term, which nerfstudio itself refuses to undistort for perspective cameras.
- `file_path` is relative to the directory (a leading "./" is fine), with or without extension.
- Every other per-frame key is kept, unchanged, in that frame's extras dict; unknown top-level
  keys (`applied_transform`, `aabb_scale`, ...) are ignored.
- Views come back sorted by image name (stem), not in file order, like the COLMAP loader's, so the
  train / test split (`splatseg.data.split`) is the same however the file lists its frames.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np

from splatseg.data import SceneError
from splatseg.io.images import ImageError, image_size
from splatseg.io.atomic import atomic_write
from splatseg.types import Cameras

__all__ = ["load_transforms_json", "write_transforms_json", "load_ply_points", "OPENGL_FROM_OPENCV", "IMAGE_EXTENSIONS"]

OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
"""Flips camera axes between OpenCV and OpenGL (its own inverse): c2w_gl = c2w_cv @ this."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".webp", ".tif", ".tiff", ".bmp")
"""Tried, in this order, when a `file_path` does not name an existing file."""

INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
DISTORTION_KEYS = ("k1", "k2", "p1", "p2", "k3")
"""In `Cameras.distortion`'s (OpenCV's) order; k3 only makes a fifth column when some frame has it."""
CAMERA_KEYS = ("file_path", "transform_matrix", *INTRINSIC_KEYS, *DISTORTION_KEYS, "k4")
PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
FISHEYE_MODELS = ("OPENCV_FISHEYE", "FISHEYE624", "EQUIRECTANGULAR", "OMNIDIRECTIONALSTEREO_L", "OMNIDIRECTIONALSTEREO_R",
                  "VR180_L", "VR180_R")
ROTATION_TOLERANCE = 1e-3
"""Largest accepted |R^T R - I| entry of a transform_matrix's rotation part."""


def _number(value, key: str, where: str) -> float:
    """A finite float from a JSON value, or SceneError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SceneError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _lookup(frame: dict, meta: dict, key: str, *, where: str) -> float | None:
    """A frame's numeric value for `key`, else the top-level one, else None."""
    value = frame.get(key, meta.get(key))
    return None if value is None else _number(value, key, where)


def _c2w(value, where: str) -> np.ndarray:
    """float64 [4, 4] camera -> world (OpenGL axes) from a JSON 4x4 or 3x4 nested list, checked."""
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(f"{where}: 'transform_matrix' is not a numeric matrix") from None
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise SceneError(f"{where}: 'transform_matrix' must be 4x4, got shape {list(m.shape)}")
    if not np.isfinite(m).all():
        raise SceneError(f"{where}: 'transform_matrix' has non-finite entries")
    if np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-6:
        raise SceneError(f"{where}: 'transform_matrix' bottom row is {m[3].tolist()}, expected [0, 0, 0, 1]")
    R = m[:3, :3]
    if abs(np.linalg.det(R)) < 1e-9:
        raise SceneError(f"{where}: 'transform_matrix' is not invertible")
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > ROTATION_TOLERANCE or np.linalg.det(R) < 0:
        raise SceneError(f"{where}: 'transform_matrix' rotation is not a proper rotation (|R^T R - I| = {err:.2g}, "
                         f"det = {np.linalg.det(R):.3g})")
    return m


def _find_image(root: Path, file_path, where: str) -> Path:
    """The existing image file that `file_path` (relative to root, extension optional) names."""
    if not isinstance(file_path, str) or not file_path:
        raise SceneError(f"{where}: 'file_path' must be a non-empty string, got {file_path!r}")
    path = root / file_path
    if path.is_file():
        return path
    for ext in IMAGE_EXTENSIONS:
        candidate = path.with_name(path.name + ext)
        if candidate.is_file():
            return candidate
    tried = ", ".join(IMAGE_EXTENSIONS[:3])
    hint = "" if path.suffix.lower() in IMAGE_EXTENSIONS else f" (also tried extensions {tried}, ...)"
    raise SceneError(f"{where}: image file {path} not found{hint}")


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SceneError(f"{path}: cannot read ({type(e).__name__}: {e.strerror if isinstance(e, OSError) else e})") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise SceneError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(meta, dict):
        raise SceneError(f"{path}: expected a JSON object at the top level, got {type(meta).__name__}")
    return meta


def load_transforms_json(root: str | Path) -> tuple[Cameras, list[dict]]:
    """Cameras (OpenCV world -> camera viewmats, pixel intrinsics) and per-frame extras from
    `root/transforms.json`, sorted by image stem; image paths are absolute. Raises SceneError with a
    one-line message (frames are named by their position in the file)."""
    root = Path(root)
    path = root / "transforms.json"
    meta = _read_json(path)
    frames = meta.get("frames")
    if frames is None:
        raise SceneError(f"{path}: missing key 'frames'")
    if not isinstance(frames, list):
        raise SceneError(f"{path}: 'frames' must be a list, got {type(frames).__name__}")
    if not frames:
        raise SceneError(f"{path}: zero frames")
    model = meta.get("camera_model")
    if model in FISHEYE_MODELS:
        raise SceneError(f"{path}: camera_model {model!r} is a fisheye / panoramic model, which splatseg does not "
                         "undistort: make pinhole images first (COLMAP's image_undistorter, or nerfstudio's undistorted "
                         "export) and point --data at them")
    if model is not None and model not in PINHOLE_MODELS:
        supported = ", ".join(PINHOLE_MODELS)
        raise SceneError(f"{path}: camera_model {model!r} is not a pinhole model (supported: {supported}); "
                         "undistort the images first")

    viewmats, Ks, widths, heights, names, paths, dists, extras = [], [], [], [], [], [], [], []
    any_distortion = any_k3 = False
    seen: dict[str, int] = {}
    for i, frame in enumerate(frames):
        where = f"{path}: frame {i}"
        if not isinstance(frame, dict):
            raise SceneError(f"{where}: expected an object, got {type(frame).__name__}")
        for key in ("file_path", "transform_matrix"):
            if key not in frame:
                raise SceneError(f"{where}: missing key {key!r}")
        image = _find_image(root.absolute(), frame["file_path"], where)
        stem = image.stem
        if stem in seen:
            raise SceneError(f"{where}: image stem {stem!r} is also used by frame {seen[stem]} (stems must be unique)")
        seen[stem] = i
        c2w = _c2w(frame["transform_matrix"], where)
        viewmats.append(np.linalg.inv(c2w @ OPENGL_FROM_OPENCV))

        get = functools.partial(_lookup, frame, meta, where=where)  # key -> float | None
        w, h = get("w"), get("h")
        if w is None or h is None:
            try:
                size = image_size(image)
            except ImageError as e:
                raise SceneError(f"{where}: no 'w'/'h' and {e}") from None
            w = size[0] if w is None else w
            h = size[1] if h is None else h
        if w < 1 or h < 1 or w != int(w) or h != int(h):
            raise SceneError(f"{where}: image size w={w}, h={h} must be positive integers")
        fx, fy = get("fl_x"), get("fl_y")
        ax, ay = get("camera_angle_x"), get("camera_angle_y")
        if fx is None and ax is not None:
            fx = 0.5 * w / math.tan(0.5 * ax)
        if fy is None and ay is not None:
            fy = 0.5 * h / math.tan(0.5 * ay)
        if fx is None and fy is None:
            raise SceneError(f"{where}: missing key 'fl_x' (or 'camera_angle_x')")
        fx = fy if fx is None else fx
        fy = fx if fy is None else fy
        if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
            raise SceneError(f"{where}: focal lengths must be positive, got fl_x={fx}, fl_y={fy}")
        cx, cy = get("cx"), get("cy")
        cx = 0.5 * w if cx is None else cx
        cy = 0.5 * h if cy is None else cy
        Ks.append([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        widths.append(int(w))
        heights.append(int(h))
        dist = [get(k) for k in DISTORTION_KEYS]
        any_distortion |= any(d is not None for d in dist)
        any_k3 |= dist[4] is not None
        dists.append([0.0 if d is None else d for d in dist])
        k4 = get("k4")
        if k4 not in (None, 0.0):
            raise SceneError(f"{where}: 'k4' = {k4} (nerfstudio's 4th radial term) cannot be undistorted (nerfstudio refuses "
                             "it too for perspective cameras): undistort the images first, or calibrate with k1 k2 k3 p1 p2")
        names.append(stem)
        paths.append(image)
        extras.append({k: v for k, v in frame.items() if k not in CAMERA_KEYS})

    order = sorted(range(len(names)), key=lambda i: names[i])
    cameras = Cameras(
        viewmats=np.stack([viewmats[i] for i in order]).astype(np.float64),
        Ks=np.asarray([Ks[i] for i in order], dtype=np.float64),
        widths=np.asarray([widths[i] for i in order], dtype=np.int64),
        heights=np.asarray([heights[i] for i in order], dtype=np.int64),
        names=[names[i] for i in order],
        image_paths=[paths[i] for i in order],
        distortion=np.asarray([dists[i][: 5 if any_k3 else 4] for i in order], dtype=np.float64) if any_distortion else None,
    )
    return cameras, [extras[i] for i in order]


def _intrinsics(cameras: Cameras, i: int) -> dict:
    """transforms.json intrinsic keys of camera i (distortion included when present)."""
    K = cameras.Ks[i]
    if K[0, 1] != 0 or K[1, 0] != 0 or K[2].tolist() != [0.0, 0.0, 1.0]:
        raise SceneError(f"camera {cameras.names[i]!r}: K has skew or a non-standard last row, "
                         "which transforms.json cannot store")
    out = {"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
           "w": int(cameras.widths[i]), "h": int(cameras.heights[i])}
    if cameras.distortion is not None:
        coeffs = cameras.distortion[i]
        if len(coeffs) > 5 and np.any(coeffs[5:] != 0):
            raise SceneError(f"camera {cameras.names[i]!r}: rational distortion terms (COLMAP FULL_OPENCV k4..k6) "
                             "cannot be stored in transforms.json")
        out.update({k: float(v) for k, v in zip(DISTORTION_KEYS, coeffs[:5])})
    return out


def _file_path(root: Path, image_path) -> str:
    """`file_path` entry (POSIX separators) for an image: absolute paths relative to `root`, relative
    paths (already relative to `root`) unchanged."""
    image_path = Path(image_path)
    if image_path.is_absolute():
        image_path = Path(os.path.relpath(image_path, root.absolute()))
    return image_path.as_posix()


def write_transforms_json(
    root: str | Path,
    cameras: Cameras,
    frame_extras: list[dict] | None = None,
    shared_intrinsics: bool | None = None,
) -> Path:
    """Write `root/transforms.json` (created with its parents if needed, written atomically) so that
    `load_transforms_json(root)` gives back `cameras` (to float precision) and `frame_extras`.

    Args:
        cameras: `image_paths` become `file_path`s: an absolute path is written relative to
            `root`; a relative path is taken as already relative to `root` and written as is.
        frame_extras: one dict per camera of extra per-frame keys (JSON-serialisable; must not use
            the camera keys `file_path`, `transform_matrix`, intrinsics or distortion).
        shared_intrinsics: write intrinsics once at the top level (True) or per frame (False);
            None picks top level when all cameras share them.
    Returns the written path.
    """
    root = Path(root)
    C = len(cameras)
    if C == 0:
        raise SceneError(f"{root}: cannot write a transforms.json with zero frames")
    if frame_extras is not None and len(frame_extras) != C:
        raise SceneError(f"{root}: {len(frame_extras)} frame_extras for {C} cameras")
    intrinsics = [_intrinsics(cameras, i) for i in range(C)]
    if shared_intrinsics is None:
        shared_intrinsics = all(d == intrinsics[0] for d in intrinsics)
    elif shared_intrinsics and any(d != intrinsics[0] for d in intrinsics):
        raise SceneError(f"{root}: shared_intrinsics=True but the cameras' intrinsics differ")
    meta: dict = {"camera_model": "OPENCV" if cameras.distortion is not None else "PINHOLE"}
    if shared_intrinsics:
        meta.update(intrinsics[0])
    c2w_gl = cameras.camtoworlds @ OPENGL_FROM_OPENCV
    frames = []
    for i in range(C):
        frame = {
            "file_path": _file_path(root, cameras.image_paths[i]),
            "transform_matrix": c2w_gl[i].tolist(),
        }
        if not shared_intrinsics:
            frame.update(intrinsics[i])
        extra = {} if frame_extras is None else frame_extras[i]
        clash = sorted(set(extra) & set(CAMERA_KEYS))
        if clash:
            raise SceneError(f"{root}: frame {i} extras use reserved key {clash[0]!r}")
        frame.update(extra)
        frames.append(frame)
    meta["frames"] = frames
    try:
        text = json.dumps(meta, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SceneError(f"{root}: cannot write transforms.json ({e})") from None
    root.mkdir(parents=True, exist_ok=True)
    path = root / "transforms.json"
    with atomic_write(path) as f:
        f.write((text + "\n").encode("utf-8"))
    return path


def load_ply_points(root: str | Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The point cloud named by transforms.json's top-level `ply_file_path` (nerfstudio's initial
    points, e.g. sparse_pc.ply, in the same world frame as the frames): float32 [P, 3] and uint8
    [P, 3] colours (or None); (None, None) when the key is absent. SceneError in one line."""
    from splatseg.io.ply import PlyFormatError, read_point_cloud

    root = Path(root)
    rel = _read_json(root / "transforms.json").get("ply_file_path")
    if rel is None:
        return None, None
    if not isinstance(rel, str) or not rel:
        raise SceneError(f"{root / 'transforms.json'}: 'ply_file_path' must be a non-empty string")
    path = root / rel
    if not path.is_file():
        raise SceneError(f"{root / 'transforms.json'}: ply_file_path {path} not found")
    try:
        return read_point_cloud(path)
    except PlyFormatError as e:
        raise SceneError(str(e)) from None
