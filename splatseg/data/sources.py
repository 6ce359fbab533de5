"""What a `--splats` argument names -> `SplatSource`: the splat file, its format, the scene it came
from and the frame its splats are in. Trainers' output folders are read as data, never run.

Accepted (FORMATS.md, "Splat files accepted"):
- a splat file of any format `io.formats` reads;
- an INRIA (graphdeco 3DGS) output: newest `point_cloud/iteration_<N>/point_cloud.ply` by N;
  `cfg_args` (a Python `Namespace(...)` repr) parsed with `ast`, each value with `ast.literal_eval`
  (so `__import__(...)` is a refused value, not a call); its `source_path` is the scene;
  `cameras.json` noted. Splats are in the COLMAP frame of the scene: no transform.
  (splatseg's own `recon` writes this layout too.)
- a gsplat `simple_trainer` result directory: newest `ply/point_cloud_<step>.ply`; `cfg.yml` (written
  by `yaml.dump(vars(cfg))`, with `!!python/object` tags) read by `DataLoader`, a `yaml.SafeLoader`
  that turns every tag into plain data; `data_dir` is the scene. With `normalize_world_space`
  (gsplat's default) the PLY is in gsplat's normalised frame; gsplat saves no transform, but it is a
  deterministic function of the COLMAP model (gsplat examples/datasets/normalize.py and colmap.py):
  `gsplat_normalisation` recomputes it when the scene is on this machine.
- a nerfstudio output (`outputs/<exp>/<method>/<timestamp>/`): `config.yml` (`!!python/object` tags,
  paths as `!!python/object/apply:pathlib.PosixPath` parts) -> the `data` directory;
  `dataparser_transforms.json` -> the dataparser frame; the splat file exported beside it
  (`ns-export gaussian-splat` writes `splat.ply`; any other splat file found there is taken too).
  nerfstudio maps its data to that frame as x_ns = scale * (T @ [x; 1]), T the 3x4 `transform`,
  x in the data's *original* frame, i.e. before the `applied_transform` that ns-process-data wrote
  into transforms.json (nerfstudio_dataparser.py); `world_from_splats` undoes both.

`world_from_splats` (float64 [4, 4], a similarity) maps splat coordinates to the scene's world frame
(x_world = M @ [x_splats; 1]); None when the splats are already in that frame or the transform
cannot be known here (then `notes` says so). Nothing here moves any splat.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from splatseg.io.formats import detect_format

__all__ = ["SplatSource", "SourceError", "DataLoader", "resolve_splats", "read_cfg_args", "read_yaml",
           "gsplat_normalisation", "nerfstudio_world_from_splats", "read_inria_cameras"]


class SourceError(ValueError):
    """A `--splats` path that names no usable splat file; one-line message."""


@dataclass
class SplatSource:
    """Where a `--splats` argument leads.

    Attributes:
        path: the path as given.
        kind: "file", "inria", "gsplat", "nerfstudio" or "folder" (a folder holding splats.ply).
        splats_file: the splat file to read.
        format: its format id (`io.formats.FORMATS`).
        scene: the scene directory the folder names (as resolved; may not exist here), or None.
        scene_exists: True when `scene` is a scene directory splatseg can load on this machine.
        world_from_splats: float64 [4, 4] similarity, x_world = M @ [x_splats; 1], or None.
        transform_file: the trainer's own transform file (nerfstudio's dataparser_transforms.json).
        cameras_file: the trainer's camera list (INRIA cameras.json), or None.
        notes: one-line remarks for the user (newest iteration taken, frame, what is missing).
    """

    path: Path
    kind: str
    splats_file: Path
    format: str
    scene: Path | None = None
    scene_exists: bool = False
    world_from_splats: np.ndarray | None = None
    transform_file: Path | None = None
    cameras_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "kind": self.kind,
            "splats_file": str(self.splats_file),
            "format": self.format,
            "scene": None if self.scene is None else str(self.scene),
            "scene_exists": self.scene_exists,
            "world_from_splats": None if self.world_from_splats is None else np.round(self.world_from_splats, 12).tolist(),
            "transform_file": None if self.transform_file is None else str(self.transform_file),
            "cameras_file": None if self.cameras_file is None else str(self.cameras_file),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------
# Reading trainers' files as data
# --------------------------------------------------------------------------------------------

_MAX_CONFIG_BYTES = 4 << 20


def _read_text(path: Path) -> str:
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise SourceError(f"{path}: {path.stat().st_size} bytes is too large for a trainer's config file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: cannot read ({type(e).__name__})") from None


def read_cfg_args(path: Path) -> tuple[dict, list[str]]:
    """INRIA `cfg_args` (`Namespace(key=value, ...)`) -> ({key: value}, skipped keys). Parsed with
    `ast`; each value must be a Python literal (`ast.literal_eval`), anything else (a call, a
    name, an attribute) is skipped, never evaluated. SourceError when it is not a Namespace(...)."""
    text = _read_text(path).strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise SourceError(f"{path}: not a Namespace(...) repr") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Namespace" and not call.args):
        raise SourceError(f"{path}: not a Namespace(...) repr")
    values, skipped = {}, []
    for kw in call.keywords:
        if kw.arg is None:
            skipped.append("**")
            continue
        try:
            values[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            skipped.append(kw.arg)
    return values, skipped


class DataLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that reads every non-standard tag (`!!python/object:...`,
    `!!python/object/apply:...`, `!!python/tuple`, `!custom`, ...) as plain data: a mapping becomes
    a dict, a sequence a list, a scalar a string; a `...Path` apply tag becomes its joined parts.
    Nothing is imported, constructed or called."""


def _plain_data(loader: DataLoader, tag: str, node: yaml.Node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        items = loader.construct_sequence(node, deep=True)
        if tag.endswith("Path") and all(isinstance(p, str) for p in items):
            return str(PurePosixPath(*items)) if items else "."
        return items
    return loader.construct_scalar(node)


DataLoader.add_multi_constructor("", _plain_data)


def read_yaml(path: Path) -> dict:
    """A YAML mapping read with `DataLoader` (tags as data); SourceError in one line otherwise."""
    try:
        data = yaml.load(_read_text(path), Loader=DataLoader)  # noqa: S506 - DataLoader is a SafeLoader
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise SourceError(f"{path}: malformed YAML{at}") from None
    if not isinstance(data, dict):
        raise SourceError(f"{path}: expected a YAML mapping at the top level")
    return data


def _read_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: malformed JSON at line {e.lineno}") from None


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def gsplat_normalisation(camtoworlds: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The 4x4 similarity gsplat's COLMAP parser applies with `normalize=True` (x_gsplat = T @ x),
    from the camera-to-world poses [C, 4, 4] (OpenCV axes) and the sparse points [P, 3].

    A port of gsplat `examples/datasets/normalize.py` (`similarity_from_cameras` with
    center_method="focus", `align_principal_axes`) and the up-side-down fix in
    `examples/datasets/colmap.py`: those examples are not part of the gsplat package, so they are
    re-stated here (tested against values computed with gsplat's own code)."""
    c2w = np.asarray(camtoworlds, np.float64)
    t, R = c2w[:, :3, 3], c2w[:, :3, :3]
    # (1) rotate the mean camera up (-y in OpenCV) onto +z
    world_up = np.mean(np.sum(R * np.array([0.0, -1.0, 0.0]), axis=-1), axis=0)
    world_up /= np.linalg.norm(world_up)
    up_cam = np.array([0.0, -1.0, 0.0])
    c = float(up_cam @ world_up)
    cross = np.cross(world_up, up_cam)
    skew = np.array([[0.0, -cross[2], cross[1]], [cross[2], 0.0, -cross[0]], [-cross[1], cross[0], 0.0]])
    R_align = np.eye(3) + skew + (skew @ skew) / (1 + c) if c > -1 else np.diag([-1.0, 1.0, 1.0])
    R = R_align @ R
    fwds = np.sum(R * np.array([0.0, 0.0, 1.0]), axis=-1)
    t = (R_align @ t[..., None])[..., 0]
    # (2) recentre on the median point nearest to every optical axis, (3) scale by median distance
    nearest = t + (fwds * -t).sum(-1)[:, None] * fwds
    translate = -np.median(nearest, axis=0)
    T1 = np.eye(4)
    T1[:3, 3] = translate
    T1[:3, :3] = R_align
    T1[:3, :] *= 1.0 / np.median(np.linalg.norm(t + translate, axis=-1))
    pts = np.asarray(points, np.float64) @ T1[:3, :3].T + T1[:3, 3]
    # principal axes of the points: largest variance on x, smallest on z
    centroid = np.median(pts, axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov(pts - centroid, rowvar=False))
    eigvec = eigvec[:, eigval.argsort()[::-1]]
    if np.linalg.det(eigvec) < 0:
        eigvec[:, 0] *= -1
    T2 = np.eye(4)
    T2[:3, :3] = eigvec.T
    T2[:3, 3] = -eigvec.T @ centroid
    T = T2 @ T1
    pts = pts @ T2[:3, :3].T + T2[:3, 3]
    if np.median(pts[:, 2]) > np.mean(pts[:, 2]):  # more points towards the bottom: flip z up
        T = np.diag([1.0, -1.0, -1.0, 1.0]) @ T
    return T


_NERFSTUDIO_COLMAP_APPLIED = [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]]
"""nerfstudio's assumed `applied_transform` for COLMAP-processed data that lacks the key."""


def _homogeneous(m) -> np.ndarray:
    m = np.asarray(m, np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise ValueError(f"expected a finite 3x4 or 4x4 matrix, got shape {list(m.shape)}")
    return m


def nerfstudio_world_from_splats(transform, scale: float, applied_transform=None, applied_scale: float | None = None) -> np.ndarray:
    """4x4 x_world = M @ [x_ns; 1] for splats in nerfstudio's dataparser frame, where the world is
    the frame of the data's transforms.json (after its `applied_transform` / `applied_scale`), or
    nerfstudio's "original" frame when `applied_transform` is None.

    nerfstudio (nerfstudio_dataparser.py): poses_ns = s * (T_m @ poses_saved) with s the auto-scale;
    it saves `transform` = T_m @ A (A = applied_transform) and `scale` = s * applied_scale.
    So x_ns = (scale / applied_scale) * (transform @ inv(A) @ [x_saved; 1])."""
    T = _homogeneous(transform)
    A = np.eye(4) if applied_transform is None else _homogeneous(applied_transform)
    s = float(scale) / (1.0 if applied_scale is None else float(applied_scale))
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    ns_from_world = np.diag([s, s, s, 1.0]) @ T @ np.linalg.inv(A)
    return np.linalg.inv(ns_from_world)


# --------------------------------------------------------------------------------------------
# INRIA cameras.json
# --------------------------------------------------------------------------------------------


def read_inria_cameras(path: Path):
    """INRIA `cameras.json` ([{id, img_name, width, height, position, rotation, fy, fx}], rotation
    and position camera -> world in OpenCV axes) -> `Cameras` (principal point at the centre,
    as the INRIA trainer assumes). SourceError on malformed entries."""
    from splatseg.types import Cameras

    entries = _read_json(path)
    if not isinstance(entries, list) or not entries:
        raise SourceError(f"{path}: expected a non-empty JSON list of cameras")
    viewmats, Ks, widths, heights, names = [], [], [], [], []
    for i, e in enumerate(entries):
        try:
            c2w = np.eye(4)
            c2w[:3, :3] = np.asarray(e["rotation"], np.float64).reshape(3, 3)
            c2w[:3, 3] = np.asarray(e["position"], np.float64).reshape(3)
            w, h, fx, fy = int(e["width"]), int(e["height"]), float(e["fx"]), float(e["fy"])
            names.append(str(e["img_name"]))
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{path}: camera {i} lacks a valid img_name, width, height, position, rotation, fx or fy") from None
        if not np.isfinite(c2w).all() or min(w, h) < 1 or not (fx > 0 and fy > 0):
            raise SourceError(f"{path}: camera {i} ({names[-1]!r}) has invalid values")
        viewmats.append(np.linalg.inv(c2w))
        Ks.append([[fx, 0.0, w / 2], [0.0, fy, h / 2], [0.0, 0.0, 1.0]])
        widths.append(w)
        heights.append(h)
    try:
        return Cameras(viewmats=np.stack(viewmats), Ks=np.asarray(Ks, np.float64), widths=np.asarray(widths, np.int64),
                       heights=np.asarray(heights, np.int64), names=names, image_paths=[Path(n) for n in names])
    except ValueError as e:
        raise SourceError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------
# Resolving
# --------------------------------------------------------------------------------------------


def _scene_loads(path: Path) -> bool:
    from splatseg.data import SceneError, detect_layout

    try:
        detect_layout(path)
        return True
    except SceneError:
        return False


def _locate(value, bases: list[Path]) -> Path | None:
    """`value` as a path: absolute as is, else the first base/value that exists (else base[0]/value)."""
    if value is None or value == "":
        return None
    p = Path(str(value)).expanduser()
    if p.is_absolute():
        return p
    for base in bases:
        if (base / p).exists():
            return (base / p).resolve()
    return bases[0] / p if bases else p


def _newest(paths: list[Path], pattern: str) -> Path | None:
    """The path whose name's number (regex group 1 of `pattern`) is largest."""
    numbered = [(int(m.group(1)), p) for p in paths if (m := re.fullmatch(pattern, p.name))]
    return max(numbered)[1] if numbered else None


def _set_scene(src: SplatSource, scene: Path | None) -> None:
    src.scene = scene
    src.scene_exists = scene is not None and _scene_loads(scene)
    if scene is not None and not src.scene_exists:
        src.notes.append(f"the scene it names, {scene}, is not a scene directory on this machine")


def _inria(folder: Path) -> SplatSource:
    iterations = [p for p in (folder / "point_cloud").glob("iteration_*") if (p / "point_cloud.ply").is_file()]
    newest = _newest(iterations, r"iteration_(\d+)")
    if newest is None:
        raise SourceError(f"{folder}: INRIA output without point_cloud/iteration_<N>/point_cloud.ply")
    ply = newest / "point_cloud.ply"
    src = SplatSource(folder, "inria", ply, detect_format(ply))
    if len(iterations) > 1:
        src.notes.append(f"newest of {len(iterations)} iterations: {newest.name}")
    scene = None
    if (folder / "cfg_args").is_file():
        values, skipped = read_cfg_args(folder / "cfg_args")
        if skipped:
            src.notes.append(f"cfg_args: values that are not plain literals were ignored: {', '.join(skipped)}")
        if isinstance(values.get("source_path"), str):
            scene = _locate(values["source_path"], [Path.cwd(), folder.parent])
    else:
        src.notes.append("no cfg_args: the scene is unknown (pass --data)")
    _set_scene(src, scene)
    if (folder / "cameras.json").is_file():
        src.cameras_file = folder / "cameras.json"
        try:
            count = len(read_inria_cameras(src.cameras_file))
            src.notes.append(f"cameras.json: {count} cameras")
        except SourceError as e:
            src.notes.append(str(e))
    return src


def _result_base(folder: Path, declared) -> list[Path]:
    """Directories a relative path in a trainer's config may be relative to: the one the trainer
    ran in (found by stripping the declared output path off `folder`), then cwd, then folder."""
    bases = []
    if declared:
        parts = [p for p in PurePosixPath(str(declared)).parts if p not in (".", "")]
        absolute = folder.resolve()
        if parts and list(absolute.parts[-len(parts):]) == parts:
            bases.append(Path(*absolute.parts[: -len(parts)]))
    return [*bases, Path.cwd(), folder]


def _gsplat(folder: Path) -> SplatSource:
    newest = _newest(list((folder / "ply").glob("point_cloud_*.ply")), r"point_cloud_(\d+)\.ply")
    if newest is None:
        raise SourceError(f"{folder}: gsplat result without ply/point_cloud_<step>.ply (train with --save-ply)")
    src = SplatSource(folder, "gsplat", newest, detect_format(newest))
    count = len(list((folder / "ply").glob("point_cloud_*.ply")))
    if count > 1:
        src.notes.append(f"newest of {count} PLYs: {newest.name}")
    cfg = read_yaml(folder / "cfg.yml")
    scene = _locate(cfg.get("data_dir"), _result_base(folder, cfg.get("result_dir")))
    _set_scene(src, scene)
    if cfg.get("normalize_world_space", True) in (True, "true", "True"):
        if src.scene_exists:
            from splatseg.data import load_scene

            loaded = load_scene(scene)
            if loaded.points is None or len(loaded.points) < 4:
                src.notes.append("normalize_world_space: the scene has no COLMAP points to recompute gsplat's transform from")
            else:
                src.world_from_splats = np.linalg.inv(gsplat_normalisation(loaded.cameras.camtoworlds, loaded.points))
                scale = float(np.cbrt(abs(np.linalg.det(src.world_from_splats[:3, :3]))))
                src.notes.append(f"normalize_world_space: the PLY is in gsplat's normalised frame; world_from_splats "
                                 f"(scale {scale:.4g}) recomputed from the COLMAP model as gsplat does")
        else:
            src.notes.append("normalize_world_space: the PLY is in gsplat's normalised frame, which gsplat does not save; "
                             "it is recomputed from the COLMAP model at data_dir, not found here")
    return src


_SPLAT_SUFFIXES = (".ply", ".splat", ".spz")


def _nerfstudio(folder: Path) -> SplatSource:
    cfg = read_yaml(folder / "config.yml")
    candidates = [folder / "splat.ply", *sorted(folder.glob("*/splat.ply"))]
    found = [p for p in candidates if p.is_file()]
    if not found:
        found = sorted((p for p in [*folder.glob("*"), *folder.glob("*/*")] if p.is_file() and p.suffix.lower() in _SPLAT_SUFFIXES),
                       key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise SourceError(f"{folder}: nerfstudio output without an exported splat file; run "
                          f"`ns-export gaussian-splat --load-config {folder / 'config.yml'} --output-dir {folder}`")
    src = SplatSource(folder, "nerfstudio", found[0], detect_format(found[0]))
    if len(found) > 1:
        src.notes.append(f"{len(found)} splat files found, took {found[0].relative_to(folder)}")
    pipeline = cfg.get("pipeline") if isinstance(cfg.get("pipeline"), dict) else {}
    manager = pipeline.get("datamanager") if isinstance(pipeline.get("datamanager"), dict) else {}
    parser = manager.get("dataparser") if isinstance(manager.get("dataparser"), dict) else {}
    data = cfg.get("data") or manager.get("data") or parser.get("data")
    declared = "/".join(str(cfg.get(k, "")) for k in ("output_dir", "experiment_name", "method_name", "timestamp"))
    _set_scene(src, _locate(data, _result_base(folder, declared if cfg.get("timestamp") else None)))
    transforms = folder / "dataparser_transforms.json"
    if not transforms.is_file():
        src.notes.append("no dataparser_transforms.json: the splats' frame is unknown")
        return src
    src.transform_file = transforms
    t = _read_json(transforms)
    if not isinstance(t, dict) or "transform" not in t or "scale" not in t:
        raise SourceError(f"{transforms}: expected 'transform' (3x4) and 'scale'")
    applied, applied_scale = None, None
    if src.scene_exists and (src.scene / "transforms.json").is_file():
        meta = _read_json(src.scene / "transforms.json")
        applied = meta.get("applied_transform")
        if applied is None and (src.scene / "colmap" / "sparse" / "0").exists():
            applied = _NERFSTUDIO_COLMAP_APPLIED
        applied_scale = meta.get("applied_scale")
        if applied is None:
            applied = np.eye(4)
    try:
        src.world_from_splats = nerfstudio_world_from_splats(t["transform"], t["scale"], applied, applied_scale)
    except (ValueError, TypeError) as e:
        raise SourceError(f"{transforms}: {e}") from None
    frame = "the scene's transforms.json frame" if applied is not None else \
        "nerfstudio's original data frame (the scene's applied_transform is unknown here)"
    src.notes.append(f"the splats are in nerfstudio's dataparser frame (x_ns = scale * (T @ [x; 1]), scale {float(t['scale']):.4g}); "
                     f"world_from_splats maps them to {frame}")
    return src


def resolve_splats(path: str | os.PathLike) -> SplatSource:
    """Resolve a `--splats` argument (a splat file or a trainer's output folder, see the module
    docstring). SourceError / SplatFormatError (both ValueError) in one line otherwise."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_file():
        return SplatSource(path, "file", path, detect_format(path))
    if not path.is_dir():
        raise SourceError(f"{path}: not a file or folder")
    if (path / "point_cloud").is_dir() or (path / "cfg_args").is_file():
        return _inria(path)
    if (path / "cfg.yml").is_file() and (path / "ply").is_dir():
        return _gsplat(path)
    if (path / "config.yml").is_file():
        return _nerfstudio(path)
    if (path / "cfg.yml").is_file():
        return _gsplat(path)
    if (path / "splats.ply").is_file():
        ply = path / "splats.ply"
        src = SplatSource(path, "folder", ply, detect_format(ply))
        _set_scene(src, path if _scene_loads(path) else None)
        return src
    raise SourceError(f"{path}: a folder that is not an INRIA, gsplat or nerfstudio output "
                      "(no point_cloud/, cfg_args, cfg.yml or config.yml) and holds no splats.ply")

