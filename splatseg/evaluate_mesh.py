"""Mesh quality on generated scenes: one click per object (the protocol of `splatseg.evaluate`), the
selection meshed by `splatseg.mesh`, scored against the object's true surface.

The true surface: the generator puts every Gaussian of an object on its surface as a flat disc
tangent to it (`splatseg.data.synthetic`), so the surface is sampled densely by points on those
discs (the mean plus `per_gaussian` points within `disc_radius` of the disc's spacing; the disc's
normal is the surface normal there). The reference for completeness is the part of it that the
training views see: a point counts as seen when, in at least one training view, it lies in the
image, in front of the camera and no farther than `tolerance` behind the median depth of the whole
true scene at its pixel (other objects and the table occlude it). Accuracy is measured against the
whole true surface of the object: a mesh point on a true face no photo shows is not an error.
Distances are in scene units; the F-score threshold is `fscore_fraction` of the diagonal of the
object's true bounding box (2% by default).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from splatseg.data.synthetic import load_ground_truth
from splatseg.evaluate import evaluate_one_click_per_object
from splatseg.io.ply import read_ply
from splatseg.mesh import MeshOptions, mesh_selection, render_observation
from splatseg.mesh_command import run_cameras
from splatseg.render.projection import quat_to_rotmat
from splatseg.run import load_field
from splatseg.surface_metrics import sample_mesh, surface_scores
from splatseg.types import Cameras, Splats


def disc_surface_samples(splats: Splats, per_gaussian: int = 8, disc_radius: float = 0.5, spacing_per_sigma: float = 1 / 0.75,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(points [N * (1 + per_gaussian), 3], normals [same, 3]): each Gaussian's mean and points
    spread uniformly over a disc of radius `disc_radius` * spacing in its tangent plane (local x-y,
    normal = local z). spacing = tangential standard deviation * `spacing_per_sigma` (the generator
    makes sigma = 0.75 * spacing)."""
    rng = np.random.default_rng(seed)
    R = quat_to_rotmat(torch.from_numpy(splats.unit_quats)).numpy().astype(np.float64)  # [N, 3, 3] local -> world
    spacing = splats.scales[:, :2].mean(1).astype(np.float64) * spacing_per_sigma
    r = disc_radius * spacing[:, None] * np.sqrt(rng.uniform(size=(len(splats), per_gaussian)))
    theta = rng.uniform(0.0, 2 * np.pi, (len(splats), per_gaussian))
    offsets = (r * np.cos(theta))[..., None] * R[:, None, :, 0] + (r * np.sin(theta))[..., None] * R[:, None, :, 1]
    means = splats.means.astype(np.float64)[:, None]
    points = np.concatenate([means, means + offsets], 1).reshape(-1, 3)
    normals = np.repeat(R[:, None, :, 2], per_gaussian + 1, axis=1).reshape(-1, 3)
    return points, normals


class SceneDepths:
    """Median depth and alpha of the whole scene in each camera (computed once, queried per point set)."""

    def __init__(self, splats: Splats, cameras: Cameras, upscale: float = 2.0):
        self.cameras = cameras.downscaled(1.0 / upscale)
        params = splats.torch_params()
        self.maps = []
        for i in range(len(self.cameras)):
            obs = render_observation(params, splats.sh_degree, self.cameras.viewmats[i], self.cameras.Ks[i],
                                     int(self.cameras.widths[i]), int(self.cameras.heights[i]))
            self.maps.append((obs.depth.numpy(), obs.alpha.numpy()))

    def seen(self, points: np.ndarray, tolerance: float) -> np.ndarray:
        """bool [P]: points that at least one camera sees (module doc)."""
        seen = np.zeros(len(points), bool)
        for i, (depth, alpha) in enumerate(self.maps):
            vm, K = self.cameras.viewmats[i], self.cameras.Ks[i]
            p = points @ vm[:3, :3].T + vm[:3, 3]
            z = p[:, 2]
            zs = np.where(z > 1e-9, z, 1.0)
            col = np.floor(K[0, 0] * p[:, 0] / zs + K[0, 2]).astype(np.int64)
            row = np.floor(K[1, 1] * p[:, 1] / zs + K[1, 2]).astype(np.int64)
            h, w = depth.shape
            idx = np.flatnonzero((z > 1e-9) & (col >= 0) & (col < w) & (row >= 0) & (row < h))
            d, a = depth[row[idx], col[idx]], alpha[row[idx], col[idx]]
            seen[idx[(a < 0.5) | (z[idx] <= d + tolerance)]] = True
        return seen


@dataclass
class MeshObjectResult:
    """One object's click, mesh and scores (distances in scene units)."""

    name: str
    object_id: int
    selected: int
    true_gaussians: int
    iou_3d: float
    vertices: int
    faces: int
    voxel_size: float
    seconds: float  # wall time of mesh_selection
    cpu_seconds: float  # process CPU time of mesh_selection (all threads)
    seen_fraction: float  # of the true surface samples, the part the training views see
    tau: float
    chamfer: float
    normal_consistency: float
    precision: float
    recall: float
    fscore: float

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_meshes(scene_dir: Path, run_dir: Path, options: MeshOptions | None = None, threshold: float = 0.3,
                    selection: str = "click", fscore_fraction: float = 0.02, samples: int = 100_000,
                    progress: bool = False) -> list[MeshObjectResult]:
    """Every object of a generated scene (the table excepted) meshed and scored (module doc).

    selection: "click" (one click per object, `splatseg.evaluate`'s protocol) or "truth" (the
    object's true Gaussians: the fusion alone, without selection errors)."""
    if selection not in ("click", "truth"):
        raise ValueError(f"selection must be 'click' or 'truth', got {selection!r}")
    gt = load_ground_truth(scene_dir)
    splats = read_ply(Path(scene_dir) / "splats.ply")
    fld = load_field(run_dir)
    cameras = run_cameras(fld)
    if selection == "click":
        ev = evaluate_one_click_per_object(scene_dir, run_dir, threshold)
        masks = ev.selections
    else:
        masks = {oid: gt.object_id == oid for oid in range(1, len(gt.object_names))}
    depths = SceneDepths(splats, cameras)  # the training views, as the mesh uses them
    results = []
    for oid, mask in masks.items():
        truth = gt.object_id == oid
        true_splats = splats.subset(truth)
        points, normals = disc_surface_samples(true_splats, seed=oid)
        lo, hi = true_splats.means.min(0), true_splats.means.max(0)
        tau = fscore_fraction * float(np.linalg.norm(hi - lo))
        seen = depths.seen(points, tau)
        t0, c0 = time.time(), time.process_time()
        result = mesh_selection(splats, mask, cameras, options, progress=progress)
        seconds, cpu = time.time() - t0, time.process_time() - c0
        pred_points, pred_normals = sample_mesh(result.mesh, samples, seed=oid)
        scores = surface_scores(pred_points, pred_normals, points[seen], normals[seen], tau, precision_points=points)
        inter = int((mask & truth).sum())
        results.append(MeshObjectResult(
            name=gt.object_names[oid], object_id=oid, selected=int(mask.sum()), true_gaussians=int(truth.sum()),
            iou_3d=inter / max(int((mask | truth).sum()), 1), vertices=len(result.mesh.vertices), faces=len(result.mesh.faces),
            voxel_size=result.voxel_size, seconds=seconds, cpu_seconds=cpu, seen_fraction=float(seen.mean()), tau=tau,
            chamfer=scores.chamfer, normal_consistency=scores.normal_consistency, precision=scores.precision,
            recall=scores.recall, fscore=scores.fscore,
        ))
    return results
