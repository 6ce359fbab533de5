"""Built-in synthetic tabletop scene: splats, cameras, images and ground-truth labels from a seed.

Geometry: a square table top in the world plane z = 0 (+z up), several objects standing on it,
some made of differently coloured parts (the whole/part hierarchy the segmentation must recover).
Every Gaussian is a flat disc lying on a sampled surface point (tangent to the surface).
Cameras sit on rings around the table looking at its centre.

Written scene directory (read back by the pipeline like any user scene):
    transforms.json         nerfstudio layout, OpenGL camera-to-world
    images/<stem>.png       RGB renders (uint8)
    splats.ply              reference 3DGS PLY (SH degree 0)
    labels/gaussians.npz    object_id [N] int32 (0 = table), part_id [N] int32 (globally unique)
    labels/<stem>.npz       object [H, W] int32, part [H, W] int32; -1 where nothing is drawn
    labels/objects.json     object and part names, background_ids (support, room, floaters)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from splatseg.data.shapes import box as _box, cylinder as _cylinder, disc_gaussians as _disc_gaussians, sphere as _sphere, spacing as _spacing, torus as _torus
from splatseg.types import SH_C0, Cameras, Splats

TABLE_ID = 0
"""object_id of the table top (the background surface)."""


@dataclass
class SyntheticConfig:
    """Parameters of the generated tabletop scene."""

    seed: int = 0
    """Random seed: the same seed gives the same scene, bit for bit."""
    num_cameras: int = 40
    """Views on two rings around the table (alternating elevations)."""
    width: int = 192
    """Image width in pixels."""
    height: int = 144
    """Image height in pixels."""
    gaussians_per_object: int = 2500
    """Surface samples per object (split over its parts by area)."""
    table_gaussians: int = 7000
    """Surface samples on the table top."""


@dataclass
class Part:
    name: str
    rgb: tuple[float, float, float]
    points: np.ndarray  # [n, 3] surface points, world
    normals: np.ndarray  # [n, 3] unit surface normals
    spacing: float  # approximate distance between neighbouring samples (world units)


@dataclass
class SyntheticScene:
    """Everything generated, in memory."""

    splats: Splats
    cameras: Cameras
    object_id: np.ndarray  # [N] int32, 0 = table
    part_id: np.ndarray  # [N] int32, unique over the scene
    object_names: list[str]
    part_names: list[str]
    part_object: list[int] = field(default_factory=list)  # part index -> object id
    background_ids: list[int] = field(default_factory=lambda: [TABLE_ID])  # ids that are not objects to click


def _objects(rng: np.random.Generator, n: int) -> list[tuple[str, list[Part]]]:
    """Five objects on the table; names and parts are fixed, sizes jitter with the seed."""
    j = lambda s: s * rng.uniform(0.9, 1.1)  # noqa: E731 - size jitter
    objs = []

    # mug: body + handle, at (-0.55, 0.35)
    c, rad, h = np.array([-0.55, 0.35]), j(0.16), j(0.34)
    nb = int(n * 0.8)
    pb, nrb = _cylinder(rng, nb, c, rad, 0.0, h)
    ph, nrh = _torus(rng, n - nb, np.array([c[0] + rad + 0.06, c[1], h * 0.5]), 0.09, 0.025)
    objs.append(("mug", [Part("mug body", (0.15, 0.35, 0.85), pb, nrb, _spacing(2 * np.pi * rad * h, nb)),
                         Part("mug handle", (0.9, 0.15, 0.1), ph, nrh, _spacing(4 * np.pi**2 * 0.09 * 0.025, n - nb))]))

    # two-tone box: bottom green, top yellow, at (0.45, 0.4)
    s = j(0.3)
    lo, hi = np.array([0.45 - s / 2, 0.4 - s / 2, 0.0]), np.array([0.45 + s / 2, 0.4 + s / 2, s])
    p, nr = _box(rng, n, lo, hi)
    low = p[:, 2] < s / 2
    area = 5 * s * s
    objs.append(("box", [Part("box bottom", (0.2, 0.7, 0.25), p[low], nr[low], _spacing(area, n)),
                         Part("box top", (0.95, 0.8, 0.15), p[~low], nr[~low], _spacing(area, n))]))

    # ball: one part, at (0.0, -0.1)
    r = j(0.17)
    p, nr = _sphere(rng, n, np.array([0.0, -0.1, r]), r, zmin=0.01)
    objs.append(("ball", [Part("ball", (0.95, 0.5, 0.1), p, nr, _spacing(4 * np.pi * r * r, n))]))

    # lamp: grey base column + white shade sphere, at (-0.45, -0.45)
    c = np.array([-0.45, -0.45])
    hb = j(0.28)
    nb = n // 2
    pb, nrb = _cylinder(rng, nb, c, 0.06, 0.0, hb, caps=False)
    rs = j(0.15)
    ps, nrs = _sphere(rng, n - nb, np.array([c[0], c[1], hb + rs * 0.8]), rs)
    objs.append(("lamp", [Part("lamp base", (0.45, 0.45, 0.5), pb, nrb, _spacing(2 * np.pi * 0.06 * hb, nb)),
                          Part("lamp shade", (0.97, 0.95, 0.9), ps, nrs, _spacing(4 * np.pi * rs * rs, n - nb))]))

    # tall block: one part, purple, at (0.5, -0.45)
    w = j(0.16)
    lo, hi = np.array([0.5 - w / 2, -0.45 - w / 2, 0.0]), np.array([0.5 + w / 2, -0.45 + w / 2, 0.45])
    p, nr = _box(rng, n, lo, hi)
    objs.append(("block", [Part("block", (0.55, 0.2, 0.7), p, nr, _spacing(4 * w * 0.45 + w * w, n))]))
    return objs


def build_scene(cfg: SyntheticConfig) -> SyntheticScene:
    """Generates splats, cameras and per-Gaussian labels (no rendering)."""
    rng = np.random.default_rng(cfg.seed)
    parts: list[tuple[int, Part]] = []
    object_names = ["table"]
    for oid, (name, obj_parts) in enumerate(_objects(rng, cfg.gaussians_per_object), start=1):
        object_names.append(name)
        parts += [(oid, p) for p in obj_parts]
    # table top: a 2 x 2 square with two wood tones in stripes (texture, not parts)
    nt = cfg.table_gaussians
    tp = np.concatenate([rng.uniform(-1.0, 1.0, (nt, 2)), np.full((nt, 1), -0.002)], 1)
    stripes = (np.floor((tp[:, 0] + 1.0) * 6) % 2)[:, None]
    table_rgb = 0.55 * np.array([0.75, 0.55, 0.35]) + 0.45 * np.where(stripes > 0, np.array([0.62, 0.42, 0.25]), np.array([0.8, 0.62, 0.42]))
    table = Part("table", (0.0, 0.0, 0.0), tp, np.tile([0.0, 0.0, 1.0], (nt, 1)), _spacing(4.0, nt))

    means, quats, log_scales, sh0, obj_ids, part_ids, part_names, part_object = [], [], [], [], [], [], [], []
    all_parts = [(TABLE_ID, table)] + parts
    for pid, (oid, part) in enumerate(all_parts):
        q, ls, dc = _disc_gaussians(part.points, part.normals, part.spacing, part.rgb, rng)
        if oid == TABLE_ID:
            dc = (np.clip(table_rgb + rng.normal(0, 0.02, (nt, 3)), 0, 1) - 0.5) / SH_C0
        means.append(part.points)
        quats.append(q)
        log_scales.append(ls)
        sh0.append(dc)
        obj_ids.append(np.full(len(part.points), oid))
        part_ids.append(np.full(len(part.points), pid))
        part_names.append(part.name)
        part_object.append(oid)
    n = sum(len(m) for m in means)
    splats = Splats(
        means=np.concatenate(means).astype(np.float32),
        quats=np.concatenate(quats).astype(np.float32),
        log_scales=np.concatenate(log_scales).astype(np.float32),
        opacity_logits=np.full(n, 4.0, np.float32),  # opacity ~0.98
        sh0=np.concatenate(sh0).astype(np.float32)[:, None, :],
        shN=np.zeros((n, 0, 3), np.float32),
    )
    return SyntheticScene(
        splats=splats,
        cameras=ring_cameras(cfg.num_cameras, cfg.width, cfg.height),
        object_id=np.concatenate(obj_ids).astype(np.int32),
        part_id=np.concatenate(part_ids).astype(np.int32),
        object_names=object_names,
        part_names=part_names,
        part_object=part_object,
    )


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World -> camera [4, 4] (OpenCV axes: x right, y down, z forward) for a camera at `eye`."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(up, float))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])  # rows: camera axes in world coordinates
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def ring_cameras(num: int, width: int, height: int, radius: float = 2.3, fov_x_deg: float = 55.0) -> Cameras:
    """`num` cameras alternating between two rings (heights 1.0 and 1.7) looking at (0, 0, 0.12)."""
    fx = 0.5 * width / np.tan(np.deg2rad(fov_x_deg) / 2)
    K = np.array([[fx, 0, width / 2], [0, fx, height / 2], [0, 0, 1.0]])
    viewmats = []
    for i in range(num):
        th = 2 * np.pi * i / num
        h = 1.0 if i % 2 == 0 else 1.7
        eye = np.array([radius * np.cos(th), radius * np.sin(th), h])
        viewmats.append(look_at(eye, np.array([0.0, 0.0, 0.12])))
    names = [f"view_{i:03d}" for i in range(num)]
    return Cameras(
        viewmats=np.stack(viewmats),
        Ks=np.tile(K, (num, 1, 1)),
        widths=np.full(num, width, np.int64),
        heights=np.full(num, height, np.int64),
        names=names,
        image_paths=[Path("images") / f"{n}.png" for n in names],
    )


def render_views(splats: Splats, cameras: Cameras, channels: np.ndarray | None = None, progress: bool = False):
    """Renders every camera: yields (index, rgb float [H,W,3] or channel map [H,W,D], alpha [H,W]).

    `channels` [N, D] renders arbitrary per-Gaussian values instead of the SH colour.
    """
    from splatseg.render import render

    p = splats.torch_params()
    colors = p["sh"] if channels is None else torch.from_numpy(channels.astype(np.float32))
    sh_degree = splats.sh_degree if channels is None else None
    for i in tqdm(range(len(cameras)), desc="render", disable=not progress, leave=False):
        with torch.no_grad():
            out = render(
                p["means"], p["quats"], p["scales"], p["opacities"], colors,
                torch.from_numpy(cameras.viewmats[i : i + 1]).float(),
                torch.from_numpy(cameras.Ks[i : i + 1]).float(),
                int(cameras.widths[i]), int(cameras.heights[i]), sh_degree=sh_degree,
            )
        yield i, out.colors[0].numpy(), out.alphas[0, ..., 0].numpy()


def _onehot(ids: np.ndarray) -> np.ndarray:
    return np.eye(int(ids.max()) + 1, dtype=np.float32)[ids]


def render_with_labels(scene: "SyntheticScene", progress: bool = False):
    """One pass per view: yields (index, rgb float [H,W,3], object [H,W], part [H,W]) where the
    label maps hold the id with the largest blend weight, -1 where alpha < 0.5.

    SH degree 0 colours are view-independent, so RGB is rendered as plain channels beside the
    one-hot object and part indicators."""
    obj, part = _onehot(scene.object_id), _onehot(scene.part_id)
    channels = np.concatenate([scene.splats.base_rgb, obj, part], axis=1)
    n_obj = obj.shape[1]
    for i, acc, alpha in render_views(scene.splats, scene.cameras, channels, progress):
        labels = []
        for block in (acc[..., 3 : 3 + n_obj], acc[..., 3 + n_obj :]):
            lab = block.argmax(-1).astype(np.int32)
            lab[alpha < 0.5] = -1
            labels.append(lab)
        yield i, acc[..., :3], labels[0], labels[1]


def write_scene(scene: SyntheticScene, root: Path, progress: bool = True) -> Path:
    """Renders images and ground-truth label maps and writes the scene directory (see module doc).

    The directory is assembled under a temporary name and renamed into place, so an interrupted
    run leaves nothing half-written at `root`.
    """
    from PIL import Image

    from splatseg.data import write_transforms_json
    from splatseg.io.ply import write_ply

    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists; choose another output directory")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    (tmp / "images").mkdir()
    (tmp / "labels").mkdir()
    cams = scene.cameras
    if scene.splats.sh_degree != 0:
        raise ValueError("synthetic scenes are written with SH degree 0 colours")
    for i, rgb, objects, parts in render_with_labels(scene, progress):
        Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp / "images" / f"{cams.names[i]}.png")
        np.savez_compressed(tmp / "labels" / f"{cams.names[i]}.npz", object=objects, part=parts)
    np.savez_compressed(tmp / "labels" / "gaussians.npz", object_id=scene.object_id, part_id=scene.part_id)
    (tmp / "labels" / "objects.json").write_text(json.dumps({
        "objects": scene.object_names,
        "parts": scene.part_names,
        "part_object": scene.part_object,
        "table_id": TABLE_ID,
        "background_ids": [int(i) for i in scene.background_ids],
    }, indent=2))
    write_ply(tmp / "splats.ply", scene.splats)
    write_transforms_json(tmp, cams)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; a scene directory is an ordinary folder
    os.replace(tmp, root)
    return root


def generate(root: Path, cfg: SyntheticConfig | None = None, progress: bool = True) -> Path:
    """build_scene + write_scene: a ready-to-use scene directory at `root`."""
    return write_scene(build_scene(cfg or SyntheticConfig()), Path(root), progress=progress)


@dataclass
class GroundTruth:
    """Ground truth of a generated scene, read back from its labels/ directory."""

    object_id: np.ndarray  # [N] int32 per Gaussian
    part_id: np.ndarray  # [N] int32 per Gaussian
    object_names: list[str]
    part_names: list[str]
    part_object: list[int]
    root: Path
    background_ids: list[int] = field(default_factory=lambda: [TABLE_ID])

    @property
    def clickable_ids(self) -> list[int]:
        """Object ids a user would click: every object except the support, room and floaters."""
        return [i for i in range(len(self.object_names)) if i not in self.background_ids]

    def view_labels(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """(object [H, W], part [H, W]) int32 label maps of one view; -1 = nothing drawn."""
        with np.load(self.root / "labels" / f"{stem}.npz") as z:
            return z["object"], z["part"]


def load_ground_truth(root: Path) -> GroundTruth:
    root = Path(root)
    meta_path = root / "labels" / "objects.json"
    if not meta_path.exists():
        raise ValueError(f"{root} has no labels/objects.json: not a generated synthetic scene")
    meta = json.loads(meta_path.read_text())
    with np.load(root / "labels" / "gaussians.npz") as z:
        return GroundTruth(z["object_id"], z["part_id"], meta["objects"], meta["parts"], meta["part_object"], root,
                           [int(i) for i in meta.get("background_ids", [TABLE_ID])])
