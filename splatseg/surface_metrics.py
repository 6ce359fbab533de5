"""Surface reconstruction metrics between oriented point sets (meshes are compared through points
sampled on them): Chamfer distance, normal consistency, precision / recall / F-score at a distance
threshold (Tanks and Temples' F-score; Occupancy Networks' Chamfer-L1 and normal consistency).

Points are [P, 3] in world units, normals [P, 3] unit vectors; nearest neighbours by scipy's cKDTree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass
class SurfaceScores:
    """pred -> gt ("accuracy") and gt -> pred ("completeness") figures, in world units or [0, 1]."""

    chamfer: float  # (mean accuracy distance + mean completeness distance) / 2, world units
    accuracy: float  # mean distance from a predicted point to the reference
    completeness: float  # mean distance from a reference point to the prediction
    normal_consistency: float  # mean |cos| between matched normals, both directions averaged
    precision: float  # fraction of predicted points within tau of the reference
    recall: float  # fraction of reference points within tau of the prediction
    fscore: float  # harmonic mean of precision and recall
    tau: float  # the distance threshold, world units

    def as_dict(self) -> dict:
        return asdict(self)


def surface_scores(pred_points: np.ndarray, pred_normals: np.ndarray, gt_points: np.ndarray, gt_normals: np.ndarray,
                   tau: float, precision_points: np.ndarray | None = None) -> SurfaceScores:
    """Scores of a predicted surface against a reference surface.

    `precision_points` (optional [Q, 3]): the reference for the accuracy side when it is larger
    than the part `gt_points` covers; e.g. the whole true surface, while recall is measured on the
    part of it that cameras saw. Normals are matched against `gt_normals` over `gt_points`.
    """
    pred_points, gt_points = np.asarray(pred_points, np.float64), np.asarray(gt_points, np.float64)
    if len(pred_points) == 0 or len(gt_points) == 0:
        raise ValueError("surface scores need non-empty point sets")
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    ref = gt_points if precision_points is None else np.asarray(precision_points, np.float64)
    d_pred, _ = cKDTree(ref).query(pred_points)
    d_gt, nn_pred = cKDTree(pred_points).query(gt_points)
    _, nn_gt = cKDTree(gt_points).query(pred_points)
    cos_gt = np.abs(np.sum(_unit(gt_normals) * _unit(pred_normals)[nn_pred], axis=1))
    cos_pred = np.abs(np.sum(_unit(pred_normals) * _unit(gt_normals)[nn_gt], axis=1))
    precision = float((d_pred <= tau).mean())
    recall = float((d_gt <= tau).mean())
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return SurfaceScores(
        chamfer=float(0.5 * (d_pred.mean() + d_gt.mean())),
        accuracy=float(d_pred.mean()),
        completeness=float(d_gt.mean()),
        normal_consistency=float(0.5 * (cos_gt.mean() + cos_pred.mean())),
        precision=precision,
        recall=recall,
        fscore=float(fscore),
        tau=float(tau),
    )


def sample_mesh(mesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(points [count, 3], face normals [count, 3]) sampled uniformly by area on a trimesh mesh."""
    import trimesh

    points, faces = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points), np.asarray(mesh.face_normals[faces])


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
