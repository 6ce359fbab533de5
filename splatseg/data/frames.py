"""Frames: the similarity that moves a splat file into its cameras' world frame, and what it does to
splats and cameras.

A `Similarity` maps splat-file coordinates to world coordinates (world_from_splats):
x_world = scale * rotation @ x_splats + translation, with a proper rotation (det +1) and scale > 0.
Mirrored (det < 0), sheared or non-uniformly scaled matrices are refused.

`transform_splats` moves every Gaussian by it: means, orientations (rotation composed onto each
quaternion), log-scales (+ log scale) and the view-dependent colour (SH bands 1..3 rotated, so the
colour seen along a direction is the colour the original showed along the un-rotated direction).

`read_splats_transform(FILE)` (the `--splats-transform` flag) reads:
- nerfstudio's `dataparser_transforms.json`, {"transform": 3x4 or 4x4 T, "scale": s}: nerfstudio puts
  its dataparser frame at x_ns = s * (T @ [x; 1]), and `ns-export gaussian-splat` writes splats in that
  frame, so world = T^-1 (x_ns / s). T maps the frame *before* any `applied_transform` that
  `ns-process-data` recorded in transforms.json (nerfstudio composes the two when it saves T), so for a
  transforms.json scene with `applied_transform` A (and `applied_scale` a) the cameras' frame is
  a * A @ x and that is composed on top;
- a plain JSON 4x4 (or 3x4) matrix, or {"matrix" | "world_from_splats": 4x4}: world_from_splats;
- {"rotation": 3x3 matrix or [w, x, y, z] quaternion, "translation": [3], "scale": s} (each optional).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from splatseg.types import Cameras, Splats

__all__ = ["TransformError", "Similarity", "transform_splats", "transform_cameras", "sh_band_rotation",
           "read_splats_transform", "scene_applied_transform"]

SIMILARITY_TOLERANCE = 1e-4
"""Largest accepted |R^T R - I| entry once the scale is divided out (float32 files round to ~1e-7)."""


class TransformError(ValueError):
    """A splats transform that cannot be used (unreadable file, not a similarity, mirrored)."""


@dataclass(frozen=True)
class Similarity:
    """world_from_splats: x_world = scale * rotation @ x + translation.

    Attributes:
        rotation: float64 [3, 3], proper rotation.
        translation: float64 [3], world units.
        scale: world units per splat-file unit (> 0).
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: float

    @classmethod
    def identity(cls) -> "Similarity":
        return cls(np.eye(3), np.zeros(3), 1.0)

    @classmethod
    def from_matrix(cls, matrix, where: str = "transform") -> "Similarity":
        """From a 4x4 (or 3x4) matrix [s R | t]; TransformError naming `where` unless it is a similarity
        with a proper rotation."""
        m = _matrix(matrix, where)
        linear = m[:3, :3]
        det = float(np.linalg.det(linear))
        if not math.isfinite(det) or abs(det) < 1e-30:
            raise TransformError(f"{where}: the matrix is singular (det {det:.3g})")
        if det < 0:
            raise TransformError(f"{where}: the transform mirrors the scene (det {det:.3g} < 0); mirrored splats are "
                                 "refused (a reflection would turn every Gaussian inside out): fix the transform's sign")
        scale = det ** (1.0 / 3.0)
        rotation = linear / scale
        err = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
        if err > SIMILARITY_TOLERANCE:
            raise TransformError(f"{where}: not a similarity (rotation x uniform scale): |R^T R - I| = {err:.2g} after "
                                 f"dividing out the scale {scale:.4g} (shear or non-uniform scale?)")
        return cls(_orthonormalise(rotation), m[:3, 3].copy(), float(scale))

    @property
    def matrix(self) -> np.ndarray:
        """float64 [4, 4] world_from_splats."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def inverse(self) -> "Similarity":
        return Similarity(self.rotation.T, -(self.rotation.T @ self.translation) / self.scale, 1.0 / self.scale)

    def then(self, other: "Similarity") -> "Similarity":
        """`other` applied after this one (other @ self)."""
        return Similarity.from_matrix(other.matrix @ self.matrix, "composed transform")

    @property
    def is_identity(self) -> bool:
        return bool(np.allclose(self.matrix, np.eye(4), atol=1e-12))

    @property
    def rotation_degrees(self) -> float:
        """Angle of the rotation, in degrees."""
        return float(np.degrees(np.arccos(np.clip((np.trace(self.rotation) - 1.0) / 2.0, -1.0, 1.0))))

    def as_json(self) -> dict:
        return {"world_from_splats": self.matrix.tolist(), "scale": self.scale,
                "rotation_degrees": round(self.rotation_degrees, 6), "translation": self.translation.tolist()}


def _matrix(value, where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TransformError(f"{where}: not a numeric matrix") from None
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise TransformError(f"{where}: expected a 4x4 (or 3x4) matrix, got shape {list(m.shape)}")
    if not np.isfinite(m).all():
        raise TransformError(f"{where}: the matrix has non-finite entries")
    if np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-9:
        raise TransformError(f"{where}: bottom row is {m[3].tolist()}, expected [0, 0, 0, 1] (a projective matrix is no similarity)")
    return m


def _orthonormalise(r: np.ndarray) -> np.ndarray:
    """The nearest rotation to a nearly orthonormal r (polar decomposition by SVD)."""
    u, _, vt = np.linalg.svd(r)
    return u @ vt


# ---------------------------------------------------------------------------------- quaternions


def _quat_from_rotation(r: np.ndarray) -> np.ndarray:
    """Unit quaternion w x y z of a rotation matrix (scipy's, reordered from its x y z w)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(r).as_quat()
    return np.array([w, x, y, z])


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of w x y z quaternions ([4] with [N, 4]); rotation(a * b) = R(a) R(b),
    and |a * b| = |a| |b|, so un-normalised file quaternions keep their norm."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=1)


# ------------------------------------------------------------------------------- SH rotation


@lru_cache(maxsize=1)
def _probe_directions() -> np.ndarray:
    """[64, 3] unit directions spread over the sphere (Fibonacci lattice)."""
    k = np.arange(64) + 0.5
    z = 1.0 - 2.0 * k / 64
    phi = np.pi * (1.0 + 5.0**0.5) * k
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def sh_band_rotation(rotation: np.ndarray, degree: int) -> list[np.ndarray]:
    """Per SH band l = 1..degree, the [2l+1, 2l+1] matrix D_l with which coefficients c_l of a Gaussian
    rotated by `rotation` become D_l @ c_l (the colour seen along R d is the old colour along d).

    Hand-written rather than ported: no kept Python package rotates SH in the 3DGS / gsplat basis
    (e3nn's Wigner-D uses another order and normalisation; splat-transform's RotateSH is JavaScript).
    Each band is closed under rotation, so D_l is solved exactly (least squares on 64 directions,
    residual ~1e-15) from the renderer's own basis `splatseg.render.sh.sh_bases`, which fixes the signs
    and order to what the renderer evaluates: Y_l(R^T d) = Y_l(d) @ D_l for every direction d.
    tests/test_frames.py checks D_l against splat-transform's RotateSH and by rendering.
    """
    import torch

    from splatseg.render.sh import sh_bases

    dirs = _probe_directions()
    rotated = dirs @ np.asarray(rotation, np.float64)  # rows R^T d
    a = sh_bases(degree, torch.from_numpy(dirs)).numpy()  # [64, (degree+1)^2]
    b = sh_bases(degree, torch.from_numpy(rotated)).numpy()
    bands = []
    for l in range(1, degree + 1):
        cols = slice(l * l, (l + 1) * (l + 1))
        d, *_ = np.linalg.lstsq(a[:, cols], b[:, cols], rcond=None)  # a @ D_l = b
        bands.append(d)
    return bands


# ----------------------------------------------------------------------------- apply


def transform_splats(splats: Splats, sim: Similarity) -> Splats:
    """The same Gaussians moved by `sim` (raw values as in `Splats`; float32 out, computed in float64).
    Opacities, DC colour and extra properties are unchanged; normals (if any) are rotated."""
    r = sim.rotation
    means = (sim.scale * splats.means.astype(np.float64) @ r.T + sim.translation).astype(np.float32)
    quats = _quat_multiply(_quat_from_rotation(r), splats.quats.astype(np.float64)).astype(np.float32)
    log_scales = (splats.log_scales.astype(np.float64) + math.log(sim.scale)).astype(np.float32)
    shN = splats.shN
    degree = splats.sh_degree
    if degree > 0:
        rest = shN.astype(np.float64)  # [N, B-1, 3], band l at rows l^2-1 .. (l+1)^2-2
        out = np.empty_like(rest)
        for l, d in enumerate(sh_band_rotation(r, degree), start=1):
            rows = slice(l * l - 1, (l + 1) * (l + 1) - 1)
            out[:, rows] = np.einsum("ji,nic->njc", d, rest[:, rows])
        shN = out.astype(np.float32)
    normals = None if splats.normals is None else (splats.normals.astype(np.float64) @ r.T).astype(np.float32)
    return replace(splats, means=means, quats=quats, log_scales=log_scales, shN=shN, normals=normals,
                   extra=dict(splats.extra))


def transform_cameras(cameras: Cameras, sim: Similarity) -> Cameras:
    """The same cameras in the frame `sim` maps to (poses moved, intrinsics unchanged): a scene
    and its cameras moved together render the same images."""
    c2w = cameras.camtoworlds.copy()
    c2w[:, :3, :3] = sim.rotation @ c2w[:, :3, :3]
    c2w[:, :3, 3] = sim.scale * c2w[:, :3, 3] @ sim.rotation.T + sim.translation
    return replace(cameras, viewmats=np.linalg.inv(c2w))


# ------------------------------------------------------------------------------ files


def _read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TransformError(f"splats transform {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TransformError(f"{path}: cannot read ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TransformError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _positive(value, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise TransformError(f"{where}: {key!r} must be a positive number, got {value!r}")
    return float(value)


def scene_applied_transform(scene_root: str | Path | None) -> Similarity | None:
    """a * A from a transforms.json scene's `applied_transform` (3x4) / `applied_scale` keys: the map
    from the frame nerfstudio's dataparser transform starts from (e.g. COLMAP's) to the frame of the
    file's cameras. None when the scene has neither (or is not a transforms.json scene)."""
    if scene_root is None or not (Path(scene_root) / "transforms.json").is_file():
        return None
    path = Path(scene_root) / "transforms.json"
    meta = _read_json(path)
    if not isinstance(meta, dict) or ("applied_transform" not in meta and "applied_scale" not in meta):
        return None
    applied = Similarity.from_matrix(meta.get("applied_transform", np.eye(4)[:3]), f"{path}: 'applied_transform'")
    scale = _positive(meta.get("applied_scale", 1.0), "applied_scale", str(path))
    return Similarity(applied.rotation, applied.translation * scale, applied.scale * scale)


def read_splats_transform(path: str | Path, scene_root: str | Path | None = None) -> tuple[Similarity, dict]:
    """(world_from_splats, record) from a `--splats-transform` file (formats in the module doc).
    `scene_root`: the scene the cameras come from (for nerfstudio's `applied_transform`). The record
    (for run.json) names the file, its kind and the resulting matrix. TransformError when unusable."""
    path = Path(path)
    body = _read_json(path)
    where = str(path)
    extra: dict = {}
    if isinstance(body, list):
        kind, sim = "matrix", Similarity.from_matrix(body, where)
    elif not isinstance(body, dict):
        raise TransformError(f"{where}: expected a JSON object or a 4x4 matrix, got {type(body).__name__}")
    elif "transform" in body:
        kind = "nerfstudio dataparser_transforms"
        s = _positive(body.get("scale", 1.0), "scale", where)
        ns_from_orig = Similarity.from_matrix(body["transform"], f"{where}: 'transform'")
        sim = Similarity(ns_from_orig.rotation, ns_from_orig.translation * s, ns_from_orig.scale * s).inverse()
        applied = scene_applied_transform(scene_root)
        if applied is not None:
            sim = sim.then(applied)
            extra["applied_transform_from"] = str(Path(scene_root) / "transforms.json")
    elif "matrix" in body or "world_from_splats" in body:
        key = "world_from_splats" if "world_from_splats" in body else "matrix"
        kind, sim = "matrix", Similarity.from_matrix(body[key], f"{where}: {key!r}")
    elif {"rotation", "translation", "scale"} & body.keys():
        kind = "similarity"
        rot = np.asarray(body.get("rotation", np.eye(3)), dtype=np.float64)
        if rot.shape == (4,):
            from scipy.spatial.transform import Rotation

            norm = float(np.linalg.norm(rot))
            if not math.isfinite(norm) or norm < 1e-12:
                raise TransformError(f"{where}: 'rotation' quaternion [w, x, y, z] must be non-zero")
            rot = Rotation.from_quat(rot[[1, 2, 3, 0]] / norm).as_matrix()
        elif rot.shape != (3, 3):
            raise TransformError(f"{where}: 'rotation' must be a 3x3 matrix or a [w, x, y, z] quaternion, got shape {list(rot.shape)}")
        t = np.asarray(body.get("translation", [0.0, 0.0, 0.0]), dtype=np.float64)
        if t.shape != (3,):
            raise TransformError(f"{where}: 'translation' must be [x, y, z], got shape {list(t.shape)}")
        m = np.eye(4)
        m[:3, :3] = _positive(body.get("scale", 1.0), "scale", where) * rot
        m[:3, 3] = t
        sim = Similarity.from_matrix(m, where)
    else:
        raise TransformError(f"{where}: unknown transform file: expected nerfstudio's dataparser_transforms.json "
                             "({\"transform\", \"scale\"}), a 4x4 matrix, or {\"rotation\", \"translation\", \"scale\"}")
    return sim, {"path": str(path.resolve()), "kind": kind, **extra, **sim.as_json()}
