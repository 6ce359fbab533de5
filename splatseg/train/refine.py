"""3D reasoning after lifting: scores of barely seen Gaussians from the surface they belong to.

Lifting (`lifting.py`) gives each Gaussian i and query k the blend-weighted mean of the query's
masks over the training views, s_ik = num_ik / den_i, where den_i (the Gaussian's summed blend
weight, in pixels at training resolution) says how much evidence there is. A Gaussian seen only in
a few grazing pixels (the underside of a ball, the inner wall of a bowl, a face hidden behind a
neighbour) has a tiny den_i, and its few pixels mostly show whatever lies behind it, so its own
score is unreliable. Here every Gaussian's score is pulled towards the scores of its neighbours on
the same surface, in proportion to how little it was seen:

    s_ik <- (c_i * s0_ik + lam * sum_j a_ij s_jk) / (c_i + lam * sum_j a_ij),   c_i = den_i / median(den)

iterated to a fixed point (label propagation with a data term, as in semi-supervised learning on
graphs; GaussianCut's graph idea with a soft solution). The graph `surface_graph` links each
Gaussian to its k nearest neighbours with an affinity that is high only for neighbours on the same
smooth surface: near in units of the local spacing, and lying in each other's tangent plane (the
plane of a flat Gaussian's two largest axes), so a ball touching a table at a point stays
separated from the table's plane while its hidden underside joins the ball.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from splatseg.types import Splats


@dataclass(frozen=True)
class RefineConfig:
    """Knobs of the surface-graph propagation (`refine_scores`)."""

    neighbours: int = 16
    """k of the k-nearest-neighbour graph over Gaussian centres."""
    smoothing: float = 1.0
    """lam: weight of the neighbours against a typically seen Gaussian's own evidence."""
    plane_weight: float = 1.0
    """How strongly an offset out of the neighbours' tangent planes (in local spacings) cuts a link."""
    normal_weight: float = 2.0
    """How strongly disagreeing surface normals cut a link."""
    iterations: int = 60
    """Fixed-point iterations."""


def gaussian_normals(splats: Splats) -> np.ndarray:
    """float64 [N, 3] unit axis of each Gaussian's smallest scale (a flat splat's surface normal)."""
    R = Rotation.from_quat(splats.unit_quats.astype(np.float64)[:, [1, 2, 3, 0]]).as_matrix()  # [N, 3, 3]
    axis = np.argmin(splats.scales, axis=1)
    return R[np.arange(len(splats)), :, axis]


def surface_graph(splats: Splats, cfg: RefineConfig = RefineConfig()) -> csr_matrix:
    """Symmetric affinity [N, N] (float32 CSR) between each Gaussian and its k nearest neighbours:
    exp(-d^2) * exp(-plane_weight * p^2) * exp(-normal_weight * (1 - |n_i . n_j|)), with d the
    centre distance and p the mean offset from each other's tangent plane, both in units of the
    local spacing (geometric mean of the two Gaussians' median neighbour distances)."""
    n = len(splats)
    k = min(cfg.neighbours, n - 1)
    if k < 1:
        return csr_matrix((n, n), dtype=np.float32)
    X = splats.means.astype(np.float64)
    dist, nn = cKDTree(X).query(X, k=k + 1)
    dist, nn = dist[:, 1:], nn[:, 1:]
    spacing = np.median(dist, axis=1) + 1e-12
    rows = np.repeat(np.arange(n), k)
    cols = nn.ravel()
    local = np.sqrt(spacing[rows] * spacing[cols])
    diff = X[cols] - X[rows]
    normals = gaussian_normals(splats)
    plane = 0.5 * (np.abs((normals[rows] * diff).sum(1)) + np.abs((normals[cols] * diff).sum(1))) / local
    agree = np.abs((normals[rows] * normals[cols]).sum(1))
    a = np.exp(-(dist.ravel() / local) ** 2 - cfg.plane_weight * plane**2 - cfg.normal_weight * (1.0 - agree))
    A = csr_matrix((a.astype(np.float32), (rows, cols)), shape=(n, n))
    return ((A + A.T) * 0.5).tocsr()


def evidence_confidence(visibility: np.ndarray) -> np.ndarray:
    """c_i = den_i / median over seen Gaussians of den (1 = a typically seen Gaussian), float32 [N]."""
    seen = visibility[visibility > 1e-3]
    median = float(np.median(seen)) if seen.size else 1.0
    return (visibility / max(median, 1e-12)).astype(np.float32)


def refine_scores(scores: np.ndarray, visibility: np.ndarray, graph: csr_matrix, cfg: RefineConfig = RefineConfig()) -> np.ndarray:
    """Propagated scores [N, K] float32 in [0, 1] (see the module docstring).

    scores: [N, K] lifted scores s0 in [0, 1]; visibility: [N] summed blend weights den."""
    s0 = np.ascontiguousarray(scores, dtype=np.float32)
    if cfg.smoothing <= 0 or graph.nnz == 0:
        return s0
    conf = evidence_confidence(visibility)[:, None]
    degree = np.asarray(graph.sum(axis=1), dtype=np.float32).reshape(-1, 1)
    data = conf * s0
    norm = 1.0 / (conf + cfg.smoothing * degree + 1e-12)
    s = s0
    for _ in range(cfg.iterations):
        s = (data + cfg.smoothing * (graph @ s)) * norm
    return np.clip(s, 0.0, 1.0).astype(np.float32)


SPIKE_MARGIN = 0.1
"""How far (as a fraction of the object's bounding-box diagonal) a selected splat's 3-sigma
ellipsoid may reach beyond the object's box before it counts as a spike."""


def sigma3_extent(splats: Splats) -> np.ndarray:
    """float32 [N, 3]: half-extent of each Gaussian's 3-sigma ellipsoid along the world axes,
    3 * sqrt(diag(R diag(s^2) R^T))."""
    R = Rotation.from_quat(splats.unit_quats.astype(np.float64)[:, [1, 2, 3, 0]]).as_matrix()
    var = np.einsum("nij,nj->ni", R**2, splats.scales.astype(np.float64) ** 2)
    return (3.0 * np.sqrt(var)).astype(np.float32)


def spikes(means: np.ndarray, extent: np.ndarray, mask: np.ndarray, margin: float = SPIKE_MARGIN) -> np.ndarray:
    """bool [N]: Gaussians of `mask` whose 3-sigma box reaches beyond the box of the selection's
    centres (1st-99th percentile per axis) by more than `margin` of its diagonal (BEA-GS's boundary
    spikes: splats that paint far outside the object they were selected with)."""
    out = np.zeros(len(mask), bool)
    idx = np.flatnonzero(mask)
    if idx.size < 20:
        return out
    X = means[idx]
    lo, hi = np.percentile(X, 1, axis=0), np.percentile(X, 99, axis=0)
    pad = margin * float(np.linalg.norm(hi - lo))
    ext = extent[idx]
    out[idx] = ((X - ext) < lo - pad).any(axis=1) | ((X + ext) > hi + pad).any(axis=1)
    return out


def footprint_areas(splats: Splats) -> np.ndarray:
    """float32 [N] `Splats.footprint_areas` as the run stores it (field.npz `footprint`, in the frame
    the run places the splats in; the query's large-splat rule uses only ratios of it)."""
    return splats.footprint_areas.astype(np.float32)


def containment(masks: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """float32 [K, K]: C[j, k] = weight of (mask_j and mask_k) / weight of mask_j, the share of query
    j's Gaussians that query k's selection also holds (1 on the diagonal; 0 for an empty j).

    masks: bool [K, N]; weights: [N] (default 1)."""
    m = masks.astype(np.float32)
    w = np.ones(masks.shape[1], np.float32) if weights is None else weights.astype(np.float32)
    inter = (m * w) @ m.T
    size = np.diag(inter).copy()
    out = inter / np.maximum(size[:, None], 1e-12)
    out[size <= 0] = 0.0
    return out.astype(np.float32)
