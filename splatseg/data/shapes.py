"""Surface samplers and surface-aligned Gaussians shared by the generated scenes.

Every sampler returns (points [n, 3], unit outward normals [n, 3]) in the world frame (+z up),
drawn with the given numpy Generator, so a seed fixes the result bit for bit.
"""

from __future__ import annotations

import numpy as np

from splatseg.types import SH_C0



def sphere(rng, n, center, radius, zmin=None):
    v = rng.normal(size=(n * 2, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    p = center + radius * v
    if zmin is not None:
        keep = p[:, 2] >= zmin
        p, v = p[keep], v[keep]
    return p[:n], v[:n]


def cylinder(rng, n, center_xy, radius, z0, z1, caps=True):
    side_area = 2 * np.pi * radius * (z1 - z0)
    cap_area = np.pi * radius**2
    n_side = int(n * side_area / (side_area + (cap_area if caps else 0)))
    th = rng.uniform(0, 2 * np.pi, n_side)
    z = rng.uniform(z0, z1, n_side)
    nrm = np.stack([np.cos(th), np.sin(th), np.zeros_like(th)], 1)
    p = np.stack([center_xy[0] + radius * np.cos(th), center_xy[1] + radius * np.sin(th), z], 1)
    if caps and n - n_side > 0:
        m = n - n_side
        r = radius * np.sqrt(rng.uniform(0, 1, m))
        t = rng.uniform(0, 2 * np.pi, m)
        cp = np.stack([center_xy[0] + r * np.cos(t), center_xy[1] + r * np.sin(t), np.full(m, z1)], 1)
        p = np.concatenate([p, cp])
        nrm = np.concatenate([nrm, np.tile([0.0, 0.0, 1.0], (m, 1))])
    return p, nrm


def box(rng, n, lo, hi, top=True):
    """Samples on the 4 sides (and top) of an axis-aligned box; returns points, normals."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    size = hi - lo
    faces = []  # (axis, side, area)
    for axis in range(3):
        for side in (0, 1):
            if axis == 2 and (side == 0 or not top):
                continue
            other = [a for a in range(3) if a != axis]
            faces.append((axis, side, size[other[0]] * size[other[1]]))
    areas = np.array([f[2] for f in faces])
    counts = rng.multinomial(n, areas / areas.sum())
    pts, nrms = [], []
    for (axis, side, _), c in zip(faces, counts):
        p = lo + rng.uniform(0, 1, (c, 3)) * size
        p[:, axis] = hi[axis] if side else lo[axis]
        nr = np.zeros((c, 3))
        nr[:, axis] = 1.0 if side else -1.0
        pts.append(p)
        nrms.append(nr)
    return np.concatenate(pts), np.concatenate(nrms)


def torus(rng, n, center, R, r, axis_x=True):
    """Torus in a vertical plane (a mug handle): ring radius R, tube radius r."""
    u = rng.uniform(0, 2 * np.pi, n)
    v = rng.uniform(0, 2 * np.pi, n)
    ring = np.stack([np.cos(u), np.zeros_like(u), np.sin(u)], 1)  # ring in the x-z plane
    tube = np.cos(v)[:, None] * ring + np.sin(v)[:, None] * np.array([0.0, 1.0, 0.0])
    p = center + R * ring + r * tube
    if not axis_x:
        p = center + (p - center)[:, [1, 0, 2]]
        tube = tube[:, [1, 0, 2]]
    return p, tube


def spacing(area: float, n: int) -> float:
    return float(np.sqrt(area / max(n, 1)))



def disc_gaussians(points, normals, spacing, rgb, rng):
    """Flat Gaussians tangent to the surface: quats rotating local z onto the normal."""
    n = len(points)
    z = np.array([0.0, 0.0, 1.0])
    nrm = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    axis = np.cross(np.broadcast_to(z, nrm.shape), nrm)
    s = np.linalg.norm(axis, axis=1)
    c = nrm @ z
    angle = np.arctan2(s, c)
    axis = np.where(s[:, None] > 1e-8, axis / np.maximum(s[:, None], 1e-8), np.array([1.0, 0.0, 0.0]))
    quats = np.concatenate([np.cos(angle / 2)[:, None], axis * np.sin(angle / 2)[:, None]], 1)
    tangential = spacing * 0.75 * rng.uniform(0.8, 1.2, (n, 1))
    log_scales = np.log(np.concatenate([tangential, tangential, np.full((n, 1), spacing * 0.08)], 1))
    colour = np.clip(np.asarray(rgb) + rng.normal(0, 0.03, (n, 3)), 0.02, 0.98)
    return quats, log_scales, (colour - 0.5) / SH_C0
