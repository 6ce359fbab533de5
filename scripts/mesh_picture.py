"""Picture of a mesh seen from a scene's cameras, beside the photos: one row per view, photo on the
left, the mesh (vertex colours, head-light shading) on the right.

The mesh is drawn by splatting dense surface samples into a z-buffer (no OpenGL needed on a
headless machine); each sample takes its face's interpolated vertex colour.

    python scripts/mesh_picture.py --mesh runs/mug.glb runs/box.glb --data runs/mesh_eval/scene_3 \\
        --views view_000 view_013 --scale 2 --out docs/mesh_generated.png
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
import tyro
from PIL import Image

from splatseg.data import load_scene
from splatseg.io.atomic import atomic_write


@dataclass
class Args:
    mesh: tuple[Path, ...]
    """Mesh files (.glb, .obj or .ply) in the scene's world frame; several are drawn together."""
    data: Path
    """Scene directory whose cameras (and photos) to use."""
    out: Path
    """PNG to write."""
    views: tuple[str, ...] = ()
    """Image stems to draw (default: three views spread over the scene)."""
    scale: float = 1.0
    """Output size relative to the photos."""
    samples_per_pixel: float = 6.0
    """Surface samples per output pixel the mesh covers (denser: fewer holes)."""


def draw(mesh: trimesh.Trimesh, viewmat: np.ndarray, K: np.ndarray, width: int, height: int, samples: int,
         background=(255, 255, 255)) -> np.ndarray:
    """uint8 [height, width, 3]: the mesh from one camera (OpenCV axes, world -> camera viewmat)."""
    points, face, bary = _sample(mesh, samples)
    colours = mesh.visual.vertex_colors[:, :3].astype(np.float64) / 255.0
    rgb = np.einsum("pk,pkc->pc", bary, colours[mesh.faces[face]])
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    normals = mesh.face_normals[face] @ viewmat[:3, :3].T
    z = cam[:, 2]
    ok = z > 1e-6
    u = np.floor(K[0, 0] * cam[:, 0] / np.where(ok, z, 1) + K[0, 2]).astype(np.int64)
    v = np.floor(K[1, 1] * cam[:, 1] / np.where(ok, z, 1) + K[1, 2]).astype(np.int64)
    ok &= (u >= 0) & (u < width) & (v >= 0) & (v < height)
    to_camera = -cam / np.linalg.norm(cam, axis=1, keepdims=True)
    shade = 0.3 + 0.7 * np.abs(np.sum(normals * to_camera, axis=1))  # head light
    image = np.empty((height, width, 3))
    image[:] = np.asarray(background) / 255.0
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(-z[idx], kind="stable")]  # far first: the nearest sample is written last
    image[v[idx], u[idx]] = np.clip(rgb[idx] * shade[idx, None], 0, 1)
    return (image * 255 + 0.5).astype(np.uint8)


def _sample(mesh: trimesh.Trimesh, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points [count, 3], face index [count], barycentric coordinates [count, 3]), uniform by area."""
    points, face = trimesh.sample.sample_surface(mesh, count, seed=0)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face], points)
    return points, face, np.clip(bary, 0, 1)


def main(args: Args) -> int:
    meshes = [trimesh.load(path, force="mesh", process=False) for path in args.mesh]
    empty = [str(path) for path, m in zip(args.mesh, meshes) if len(m.faces) == 0]
    if not meshes or empty:
        print(f"mesh_picture: error: no mesh given or no faces in {', '.join(empty)}", file=sys.stderr)
        return 2
    mesh = trimesh.util.concatenate(meshes)
    scene = load_scene(args.data)
    cams = scene.cameras
    views = list(args.views) or [cams.names[i] for i in np.linspace(0, len(cams) - 1, 3).astype(int)]
    rows = []
    for stem in views:
        i = cams.index_of(stem)
        w, h = int(round(cams.widths[i] * args.scale)), int(round(cams.heights[i] * args.scale))
        K = cams.Ks[i].copy()
        K[:2] *= [[w / cams.widths[i]], [h / cams.heights[i]]]
        photo = np.asarray(Image.open(cams.image_paths[i]).convert("RGB").resize((w, h), Image.BILINEAR))
        samples = int(args.samples_per_pixel * w * h)
        rows.append(np.concatenate([photo, draw(mesh, cams.viewmats[i], K, w, h, samples)], axis=1))
    picture = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as f:
        Image.fromarray(picture).save(f, format="PNG", optimize=True)
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]}, views {', '.join(views)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
