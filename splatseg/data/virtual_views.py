"""Cameras made from the splats themselves, for a splat file that comes with no photos or poses.

`plan_views(splats, cfg)` decides where to look from; `write_virtual_scene(splats, plan, root)` renders
the views and writes them as an ordinary scene directory (transforms.json + images/), so training,
`segment`, `view`, `export-all` and the evaluation scripts read it like any captured scene.

How the views are planned (all in the splats' world frame and units):
1. Robust frame (`robust_frame`). Statistics use the Gaussians that are opaque enough
   (opacity >= `MIN_OPACITY`) and dense: a Gaussian whose 8th nearest neighbour is more than
   `DENSITY_FACTOR` times the median such distance away is a floater. The framed box is the
   opacity-weighted `BOX_QUANTILE` / 1 - `BOX_QUANTILE` quantiles of their centres per axis, so
   isolated floaters and a thin far background stay out of it.
   Up: the dominant normal (the shortest axis of flat Gaussians, weighted by opacity x area) is the
   vertical axis; its sign points away from the end of the box where the non-flat mass gathers
   (objects stand on a table, furniture on a floor). A support plane is a peak of flat, level
   Gaussians at the bottom of the box holding `SUPPORT_MIN_MASS` of the area.
2. Object or room (`kind="auto"`). Two small probe sets are rendered at `planning_side` pixels: an
   outside-in orbit over the whole sphere and cube maps from the interior points with the most free
   space around them. A room encloses its interior point (surfaces in >= `ROOM_ENCLOSURE` of the
   directions) and holds things only the interior probes see (>= `ROOM_HIDDEN_MASS` of the opaque
   core: what the walls hide from outside). A tabletop is not enclosed; a closed hollow object is,
   but hides nothing from outside; both are object captures.
3. Object: cameras on the upper hemisphere (above the support plane; the whole sphere without one)
   at elevations spread by a Fibonacci lattice, each at the distance that fits the box in its
   frame. Room: from interior points spread over the free space (farthest point sampling among
   the points with at least half the best clearance), 4 directions across the room and 2 looking
   down at what stands on the floor, turning from point to point.
4. No camera inside an object: every candidate is probed; one with opaque surfaces nearer than
   `NEAR_FRACTION` of the box radius (inside a room: half its position's clearance) over more than
   `NEAR_MAX_PIXELS` of its image is moved in along its ray (orbits: something such as background
   or a floater cloud sits between it and the scene) or dropped. Interior positions keep their
   clearance from every opaque Gaussian centre.
5. Every object seen: a spread-out choice (orbits: farthest point sampling over directions; rooms:
   greedily the view adding the most opaque mass seen by fewer than two views), then views added
   from the candidate pool while some of the core is seen by no view (`coverage`: the fraction of
   core opacity that some view sees, depth-tested in the probes; `coverage_2_views` likewise).
6. Size: the long image side puts the median Gaussian footprint at about `TARGET_FOOTPRINT_PX`
   pixels at the median camera distance, clamped to [`MIN_SIDE`, `side_limit`] (at most
   `MAX_SIDE`; training sets the limit from its own resolution, `SIDE_PER_TRAIN_SIDE`, since
   segments finer than that are downsampled before use); the number of views grows with log2 of
   the number of Gaussians (`num_views_for`).
Everything the plan decided is in `ViewPlan.report` (written to views.json and run.json).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm

from splatseg.types import Cameras, Splats

MIN_OPACITY = 0.05
"""Gaussians below this opacity are left out of every statistic (they barely render)."""
DENSITY_FACTOR = 8.0
"""A Gaussian whose 8th neighbour is farther than this many median neighbour distances is a floater."""
BOX_QUANTILE = 0.02
"""Opacity-weighted quantile (each side, per axis) that bounds the framed box."""
SUPPORT_MIN_MASS = 0.15
"""Fraction of the core's opacity x area that a level plane at the bottom must hold to be a support."""
NEAR_FRACTION = 0.15
"""Opaque pixels nearer than this fraction of the box radius mean the camera sits in something."""
NEAR_MAX_PIXELS = 0.02
"""Largest fraction of an image that such near pixels may cover."""
ROOM_ENCLOSURE = 0.85
"""A room's interior point sees surfaces in at least this fraction of the directions around it."""
ROOM_HIDDEN_MASS = 0.03
"""...and its interior probes see at least this fraction of the opaque core that no outside probe sees."""
TARGET_FOOTPRINT_PX = 1.4
"""Median Gaussian footprint (geometric mean of the two largest standard deviations) in pixels."""
MIN_SIDE, MAX_SIDE = 128, 512
"""Bounds of the automatic long image side."""
SIDE_PER_TRAIN_SIDE = 2.0
"""`train --splats` alone limits the automatic side to this many times --train-max-side (segments are
downsampled to the training resolution, so larger views only cost time to render and segment).
Chosen on family seeds 100-103 among 2 / 2.5 / 3 / none (4 at the default 128 px): README, "A splat
file alone"."""
ASPECT = 4.0 / 3.0
"""Image width / height of the virtual views."""
VIEW_NAME = "virtual_{:03d}"
"""Image stem of virtual view i."""


class VirtualViewsError(ValueError):
    """A splat file that cannot be framed (nothing opaque, nothing visible); one-line message."""


@dataclass
class VirtualViewsConfig:
    """Virtual cameras for a splat file given without photos (`splatseg train --splats FILE` alone)."""

    kind: Literal["auto", "object", "room"] = "auto"
    """'object': orbits outside-in; 'room': views from inside looking out and across; 'auto' decides
    from the splats (a room encloses its interior and hides things from an outside orbit)."""
    num_views: int = 0
    """Number of views before coverage top-up; 0 picks it from the number of Gaussians."""
    max_side: int = 0
    """Long image side in pixels; 0 picks it from the Gaussians' size at the camera distance."""
    side_limit: int = 0
    """Largest side the automatic choice may pick (pixels; never above MAX_SIDE = 512); 0: MAX_SIDE,
    except that `train` sets it to SIDE_PER_TRAIN_SIDE x --train-max-side."""
    fov_deg: float = 60.0
    """Horizontal field of view of every virtual camera (degrees); images are 4:3."""
    up: tuple[float, float, float] | None = None
    """World up direction (e.g. 0 0 1); default: estimated from the splats."""
    frame_quantile: float = 0.9
    """Orbit cameras frame this opacity-weighted fraction of the scene's core (1: the whole robust
    box); less puts the objects larger in the frame and leaves the outskirts of a support to
    the views that face them."""
    min_elevation_deg: float = 8.0
    """Lowest orbit elevation above a support plane (degrees): lower views see an object's base edge-on."""
    planning_side: int = 64
    """Long side (pixels) of the low-resolution probe renders used to choose and check cameras."""
    max_extra_views: float = 0.25
    """Views added for parts no view sees yet, at most this fraction of the view count."""


@dataclass
class SceneFrame:
    """Robust statistics of the splats (see module doc, step 1). Arrays are float64 world frame."""

    core: np.ndarray  # [N] bool: opaque, dense, inside the box
    lo: np.ndarray  # [3] box corner
    hi: np.ndarray  # [3] box corner
    up: np.ndarray  # [3] unit
    footprint: float  # median footprint of core Gaussians (world units)
    support: bool  # a level plane at the bottom of the box carries the scene
    support_height: float  # its height along `up` (box bottom when there is none)
    floaters: int  # opaque Gaussians dropped by the density test
    outside_box: int  # opaque dense Gaussians outside the box (far background, stray splats)
    sample: np.ndarray  # [S, 3] up to 20k core centres (framing statistics)
    sample_weights: np.ndarray  # [S] their opacities

    @property
    def centre(self) -> np.ndarray:
        return 0.5 * (self.lo + self.hi)

    @property
    def radius(self) -> float:
        """Half diagonal of the box."""
        return float(0.5 * np.linalg.norm(self.hi - self.lo))

    def corners(self) -> np.ndarray:
        """[8, 3] box corners."""
        return np.array([[x, y, z] for x in (self.lo[0], self.hi[0]) for y in (self.lo[1], self.hi[1]) for z in (self.lo[2], self.hi[2])])


@dataclass
class ViewPlan:
    """Virtual cameras and what was decided (`report`, JSON-serialisable)."""

    cameras: Cameras
    frame: SceneFrame
    kind: str
    report: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- statistics


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """q-quantile of `values` [M] under non-negative `weights` [M] (lower interpolation)."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order], dtype=np.float64)
    if cum[-1] <= 0:
        return float(np.quantile(values, q))
    k = int(np.searchsorted(cum, q * cum[-1], side="left"))
    return float(values[order[min(k, len(order) - 1)]])


def gaussian_axes(splats: Splats) -> tuple[np.ndarray, np.ndarray]:
    """(normals [N, 3] unit: each Gaussian's shortest axis, sign arbitrary; sorted scales [N, 3]
    ascending)."""
    from splatseg.render.projection import quat_to_rotmat

    R = quat_to_rotmat(torch.from_numpy(splats.unit_quats.astype(np.float32))).double().numpy()  # [N, 3, 3]
    scales = splats.scales.astype(np.float64)
    shortest = np.argmin(scales, axis=1)
    normals = R[np.arange(len(scales)), :, shortest]
    return normals, np.sort(scales, axis=1)


def footprint_area(splats: Splats) -> np.ndarray:
    """[N] opacity x the product of the two largest standard deviations: how much surface a
    Gaussian covers (the weight of area-weighted IoU)."""
    return splats.opacities.astype(np.float64) * splats.footprint_areas


def _estimate_up(means: np.ndarray, normals: np.ndarray, sorted_scales: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Unit up vector: the dominant normal of flat Gaussians, signed away from the end of the
    scene where the non-flat mass gathers (see module doc)."""
    flat = sorted_scales[:, 0] < 0.5 * sorted_scales[:, 1]
    area = weights * sorted_scales[:, 1] * sorted_scales[:, 2]
    if flat.sum() >= 10:
        n, a = normals[flat], area[flat]
        tensor = (n * a[:, None]).T @ n
        _, vecs = np.linalg.eigh(tensor)
        axis = vecs[:, -1]
    else:  # no flat Gaussians: the direction of least spread
        centred = means - np.average(means, axis=0, weights=weights)
        _, vecs = np.linalg.eigh((centred * weights[:, None]).T @ centred)
        axis = vecs[:, 0]
    h = means @ axis
    lo, hi = weighted_quantile(h, weights, BOX_QUANTILE), weighted_quantile(h, weights, 1 - BOX_QUANTILE)
    span = max(hi - lo, 1e-12)
    level = flat & (np.abs(normals @ axis) > math.cos(math.radians(20)))
    other = ~level
    low_mass = weights[other & (h < lo + 0.3 * span)].sum()
    high_mass = weights[other & (h > hi - 0.3 * span)].sum()
    return axis if low_mass >= high_mass else -axis


def robust_frame(splats: Splats, up: tuple[float, float, float] | None = None) -> SceneFrame:
    """The scene's robust box, up direction and support plane (module doc, step 1)."""
    n = len(splats)
    if n == 0:
        raise VirtualViewsError("the splat file has no Gaussians")
    means = splats.means.astype(np.float64)
    op = splats.opacities.astype(np.float64)
    finite = np.isfinite(means).all(1) & np.isfinite(op) & np.isfinite(splats.log_scales).all(1) & np.isfinite(splats.quats).all(1)
    opaque = finite & (op >= MIN_OPACITY)
    if opaque.sum() < 4:
        raise VirtualViewsError(
            f"no Gaussian would be visible in front of any view: {int(opaque.sum())} of {n} have opacity >= {MIN_OPACITY} and finite values")
    idx = np.flatnonzero(opaque)
    k = min(9, len(idx))
    tree = cKDTree(means[idx])
    dist, _ = tree.query(means[idx], k=k)
    dk = dist[:, -1]
    dense_local = dk <= DENSITY_FACTOR * max(float(np.median(dk)), 1e-12)
    dense = np.zeros(n, bool)
    dense[idx[dense_local]] = True
    floaters = int(opaque.sum() - dense.sum())
    w_all = np.where(dense, op, 0.0)
    lo = np.array([weighted_quantile(means[dense, a], w_all[dense], BOX_QUANTILE) for a in range(3)])
    hi = np.array([weighted_quantile(means[dense, a], w_all[dense], 1 - BOX_QUANTILE) for a in range(3)])
    pad = 0.02 * np.linalg.norm(hi - lo) + 1e-9
    lo, hi = lo - pad, hi + pad
    inside = dense & (means >= lo).all(1) & (means <= hi).all(1)
    if inside.sum() < 4:
        raise VirtualViewsError("the splats have no dense opaque core to frame (every Gaussian is an isolated floater)")
    normals, sorted_scales = gaussian_axes(splats)
    c_means, c_w = means[inside], op[inside]
    if up is None:
        up_vec = _estimate_up(c_means, normals[inside], sorted_scales[inside], c_w)
    else:
        up_vec = np.asarray(up, np.float64)
        if up_vec.shape != (3,) or not np.isfinite(up_vec).all() or np.linalg.norm(up_vec) < 1e-9:
            raise VirtualViewsError(f"--virtual.up must be three finite numbers, not all zero; got {up}")
    up_vec = up_vec / np.linalg.norm(up_vec)
    footprint = float(np.median(np.sqrt(sorted_scales[inside, 1] * sorted_scales[inside, 2])))
    # support plane: level flat Gaussians peaking in the bottom fifth of the box
    h = c_means @ up_vec
    h_lo, h_hi = weighted_quantile(h, c_w, BOX_QUANTILE), weighted_quantile(h, c_w, 1 - BOX_QUANTILE)
    span = max(h_hi - h_lo, 1e-12)
    area = c_w * sorted_scales[inside, 1] * sorted_scales[inside, 2]
    level = (sorted_scales[inside, 0] < 0.5 * sorted_scales[inside, 1]) & (np.abs(normals[inside] @ up_vec) > math.cos(math.radians(20)))
    bins = np.linspace(h_lo - 0.05 * span, h_hi + 0.05 * span, 61)
    hist, _ = np.histogram(h[level], bins=bins, weights=area[level])
    smooth = np.convolve(hist, np.ones(3), mode="same")
    peak = int(np.argmax(smooth))
    peak_h = 0.5 * (bins[peak] + bins[peak + 1])
    support = bool(smooth[peak] >= SUPPORT_MIN_MASS * area.sum() and peak_h <= h_lo + 0.2 * span)
    pick = np.flatnonzero(inside)
    pick = pick[np.random.default_rng(0).permutation(len(pick))[:20000]]
    return SceneFrame(core=inside, lo=lo, hi=hi, up=up_vec, footprint=footprint, support=support,
                      support_height=float(peak_h if support else h_lo), floaters=floaters,
                      outside_box=int((dense & ~inside).sum()), sample=means[pick], sample_weights=op[pick])


# ---------------------------------------------------------------------------- cameras


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """World -> camera [4, 4] (OpenCV axes) at `eye` looking at `target`; `up` is only used for the
    roll (any direction not parallel to the optical axis)."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    up = np.asarray(up, np.float64)
    if abs(float(fwd @ up)) > 0.999:  # looking straight up or down: any perpendicular roll
        up = np.eye(3)[int(np.argmin(np.abs(fwd)))]
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def intrinsics(side: int, fov_deg: float) -> tuple[np.ndarray, int, int]:
    """(K [3, 3], width, height) of a 4:3 camera whose long side is `side` px."""
    width = int(side)
    height = max(1, int(round(side / ASPECT)))
    fx = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return np.array([[fx, 0.0, width / 2], [0.0, fx, height / 2], [0.0, 0.0, 1.0]]), width, height


def fit_distance(points: np.ndarray, target: np.ndarray, direction: np.ndarray, up: np.ndarray, fov_deg: float, margin: float = 0.05,
                 weights: np.ndarray | None = None, quantile: float = 1.0) -> float:
    """Smallest distance along `direction` (unit, target -> camera) from which `points` [P, 3]
    project inside a 4:3 image of horizontal fov `fov_deg` with `margin` to spare: all of them
    (`quantile` 1), or that weighted fraction of them."""
    tan_x = math.tan(math.radians(fov_deg) / 2) * (1 - margin)
    tan_y = tan_x / ASPECT
    R = look_at(target + direction, target, up)[:3, :3]
    rel = (points - target) @ R.T  # camera axes; the camera sits at -t along its z
    t = np.maximum(np.abs(rel[:, 0]) / tan_x, np.abs(rel[:, 1]) / tan_y) - rel[:, 2]
    if quantile >= 1.0:
        return float(max(t.max(), 1e-6))
    w = np.ones(len(t)) if weights is None else weights
    return float(max(weighted_quantile(t, w, quantile), 1e-6))


def fibonacci_directions(count: int, up: np.ndarray, min_elev_deg: float, max_elev_deg: float) -> np.ndarray:
    """[count, 3] unit directions spread evenly (Fibonacci lattice) over the band of elevations
    [min, max] (degrees above the plane perpendicular to `up`)."""
    up = up / np.linalg.norm(up)
    a = np.eye(3)[int(np.argmin(np.abs(up)))]
    e1 = np.cross(up, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    z0, z1 = math.sin(math.radians(min_elev_deg)), math.sin(math.radians(max_elev_deg))
    i = np.arange(count) + 0.5
    z = z0 + (z1 - z0) * i / count  # uniform in sin(elevation) = uniform area
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(np.clip(1 - z * z, 0, 1))
    return (r * np.cos(phi))[:, None] * e1 + (r * np.sin(phi))[:, None] * e2 + z[:, None] * up


def cameras_from_poses(viewmats: list[np.ndarray], side: int, fov_deg: float) -> Cameras:
    K, width, height = intrinsics(side, fov_deg)
    names = [VIEW_NAME.format(i) for i in range(len(viewmats))]
    return Cameras(viewmats=np.stack(viewmats).astype(np.float64), Ks=np.tile(K, (len(viewmats), 1, 1)),
                   widths=np.full(len(viewmats), width, np.int64), heights=np.full(len(viewmats), height, np.int64),
                   names=names, image_paths=[Path("images") / f"{n}.png" for n in names])


def num_views_for(num_gaussians: int) -> int:
    """Default view count: 32 at 20k Gaussians, +8 per doubling, within [24, 64]."""
    return int(np.clip(round(32 + 8 * math.log2(max(num_gaussians, 1) / 20000)), 24, 64))


# ---------------------------------------------------------------------------- probes


@dataclass
class Probe:
    """A low-resolution look from one camera: which Gaussians it sees and how near its surfaces are."""

    seen: np.ndarray  # [N] bool: centre in the image and not behind the rendered surface
    coverage: float  # fraction of pixels with alpha >= 0.5
    near_fraction: float  # fraction of pixels with alpha >= 0.5 nearer than the near limit


def probe(params: dict, viewmat: np.ndarray, K: np.ndarray, width: int, height: int, near_limit: float) -> Probe:
    """Renders alpha and depth of one camera and depth-tests every Gaussian centre against them: a
    Gaussian is seen when its centre projects into the image in front of the camera and lies no
    farther than the surface rendered at that pixel (tolerance 2% of the depth plus twice its
    largest standard deviation), or the pixel is empty. Depth tests, unlike blend weights, do not
    depend on the probe's resolution (at low resolution the front Gaussians of a surface take a
    pixel's whole weight)."""
    from splatseg.render import render

    n = params["means"].shape[0]
    with torch.no_grad():
        out = render(params["means"], params["quats"], params["scales"], params["opacities"], params["means"].new_zeros(n, 1),
                     torch.from_numpy(viewmat[None]).float(), torch.from_numpy(K[None]).float(), width, height)
    alpha = out.alphas[0, ..., 0].numpy()
    depth = out.depths[0, ..., 0].numpy()
    hit = alpha >= 0.5
    means = params["means_np"]
    cam = means @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    front = z > 1e-6
    u = np.where(front, cam[:, 0] / np.where(front, z, 1.0) * K[0, 0] + K[0, 2], -1.0)
    v = np.where(front, cam[:, 1] / np.where(front, z, 1.0) * K[1, 1] + K[1, 2], -1.0)
    inside = front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    col = np.clip(u.astype(np.int64), 0, width - 1)
    row = np.clip(v.astype(np.int64), 0, height - 1)
    surface = np.where(hit[row, col], depth[row, col], np.inf)
    seen = inside & (z <= surface + 0.02 * z + 2.0 * params["reach_np"])
    return Probe(seen, float(hit.mean()), float((hit & (depth < near_limit)).mean()))


def _planning_params(splats: Splats) -> dict:
    p = splats.torch_params()
    finite = torch.isfinite(p["means"]).all(1) & torch.isfinite(p["scales"]).all(1) & torch.isfinite(p["opacities"])
    if not bool(finite.all()):  # non-finite rows cannot be projected: render them transparent far away
        p["means"] = torch.where(finite[:, None], p["means"], torch.zeros_like(p["means"]))
        p["scales"] = torch.where(finite[:, None], p["scales"], torch.full_like(p["scales"], 1e-6))
        p["opacities"] = torch.where(finite, p["opacities"], torch.zeros_like(p["opacities"]))
    p["means_np"] = p["means"].double().numpy()
    p["reach_np"] = p["scales"].amax(1).double().numpy()
    return p


def _seen_mass(seen: np.ndarray, weights: np.ndarray) -> float:
    return float(weights[seen].sum() / max(weights.sum(), 1e-12))


def _farthest_point_order(directions: np.ndarray, first: int, count: int) -> list[int]:
    """Indices of `count` directions [M, 3] picked by farthest point sampling from `first`."""
    chosen = [first]
    best = directions @ directions[first]
    while len(chosen) < min(count, len(directions)):
        best_clip = best.copy()
        best_clip[chosen] = np.inf
        nxt = int(np.argmin(best_clip))  # smallest max-cosine = farthest from every chosen one
        chosen.append(nxt)
        best = np.maximum(best, directions @ directions[nxt])
    return chosen


def free_points(splats: Splats, frame: SceneFrame, count: int, grid: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` interior points with free space around them: the grid point in the lower 60%
    of the box (along up) with the most clearance (distance to the nearest opaque Gaussian centre),
    then farthest point sampling among the points there with at least half that clearance, so the
    positions spread over the free space. Returns (points [P, 3], clearance [P])."""
    opaque = splats.opacities >= MIN_OPACITY
    tree = cKDTree(splats.means[opaque].astype(np.float64))
    inset = 0.1 * (frame.hi - frame.lo)
    axes = [np.linspace(frame.lo[a] + inset[a], frame.hi[a] - inset[a], grid) for a in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    clearance, _ = tree.query(pts, k=1)
    # at most 60% of the way up: an eye-height camera sees the sides of what stands on the floor
    height = (pts - frame.lo) @ frame.up
    span = float(np.abs(frame.hi - frame.lo) @ np.abs(frame.up))
    low = height <= 0.6 * span
    clearance = np.where(low, clearance, 0.0)
    eligible = np.flatnonzero(clearance >= 0.5 * clearance.max())
    chosen = [int(eligible[np.argmax(clearance[eligible])])]
    dist = np.linalg.norm(pts[eligible] - pts[chosen[0]], axis=1)
    while len(chosen) < min(count, len(eligible)):
        j = int(np.argmax(dist))
        if dist[j] <= 0:
            break
        chosen.append(int(eligible[j]))
        dist = np.minimum(dist, np.linalg.norm(pts[eligible] - pts[eligible[j]], axis=1))
    return pts[chosen], clearance[chosen]


def _cube_directions(up: np.ndarray) -> list[np.ndarray]:
    e = np.eye(3)[int(np.argmin(np.abs(up)))]
    x = np.cross(up, e)
    x /= np.linalg.norm(x)
    y = np.cross(up, x)
    return [x, -x, y, -y, up, -up]


def _room_directions(up: np.ndarray, offset_deg: float) -> list[np.ndarray]:
    """4 directions across the room (10 degrees down), azimuths offset by `offset_deg`, and 2
    looking down at 45 degrees between them."""
    e = np.eye(3)[int(np.argmin(np.abs(up)))]
    x = np.cross(up, e)
    x /= np.linalg.norm(x)
    y = np.cross(up, x)
    out = []
    for k, (az, pitch) in enumerate([(0, 10), (90, 10), (180, 10), (270, 10), (45, 45), (225, 45)]):
        th = math.radians(az + offset_deg)
        h = math.cos(th) * x + math.sin(th) * y
        out.append(math.cos(math.radians(pitch)) * h - math.sin(math.radians(pitch)) * up)
    return out


# ---------------------------------------------------------------------------- planning


def _object_candidates(frame: SceneFrame, count: int, fov_deg: float, min_elevation_deg: float = 8.0,
                       quantile: float = 1.0) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Orbit poses (viewmats) around the box, their unit directions [M, 3] (target -> camera), and
    the same poses at the distance that fits the whole box (where a tighter one is blocked).
    `quantile` < 1 frames that opacity-weighted fraction of the core's centres (FRAME_QUANTILE)."""
    band = (min_elevation_deg, 70.0) if frame.support else (-70.0, 70.0)
    dirs = fibonacci_directions(count, frame.up, *band)
    corners, target = frame.corners(), frame.centre
    poses, whole = [], []
    for d in dirs:
        t_box = fit_distance(corners, target, d, frame.up, fov_deg)
        t = t_box if quantile >= 1.0 else min(t_box, fit_distance(frame.sample, target, d, frame.up, fov_deg,
                                                                  weights=frame.sample_weights, quantile=quantile))
        poses.append(look_at(target + t * d, target, frame.up))
        whole.append(look_at(target + t_box * d, target, frame.up))
    return poses, dirs, whole


def pulled_in(viewmat: np.ndarray, target: np.ndarray, fraction: float) -> np.ndarray:
    """The same camera orientation moved to `fraction` of its distance from `target`."""
    R = viewmat[:3, :3]
    centre = -R.T @ viewmat[:3, 3]
    out = viewmat.copy()
    out[:3, 3] = -R @ (target + fraction * (centre - target))
    return out


def _greedy_twice_seen(probes: list, usable: list[int], weights: np.ndarray, first: int, count: int) -> list[int]:
    """`count` views from `usable`, starting at `first`, each adding the most opaque mass that fewer
    than two chosen views see yet (then the most mass overall once everything is seen twice)."""
    chosen = [first]
    counts = probes[first].seen.astype(np.int32)
    while len(chosen) < min(count, len(usable)):
        rest = [i for i in usable if i not in chosen]
        need = weights * (counts < 2)
        gain = np.array([need[probes[i].seen].sum() for i in rest])
        if gain.max() <= 0:
            gain = np.array([weights[probes[i].seen].sum() for i in rest])
        best = rest[int(np.argmax(gain))]
        chosen.append(best)
        counts += probes[best].seen
    return chosen


def _room_candidates(splats: Splats, frame: SceneFrame, points: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Interior poses (6 per free point, azimuths turning by the golden angle from point to point),
    their optical axes [M, 3], the clearance of each pose's position [M] and the points used."""
    pts, clearance = free_points(splats, frame, points)
    poses, axes, clear = [], [], []
    for j, p in enumerate(pts):
        for d in _room_directions(frame.up, j * 137.5):
            poses.append(look_at(p, p + d, frame.up))
            axes.append(d)
            clear.append(clearance[j])
    return poses, np.array(axes).reshape(-1, 3), np.array(clear), pts


def classify(splats: Splats, frame: SceneFrame, params: dict, cfg: VirtualViewsConfig, near_limit: float) -> tuple[str, dict]:
    """("object" | "room", evidence) from an outside orbit and interior cube maps (module doc, step 2):
    a room encloses its interior point in nearly every direction (`enclosure`) and holds things
    that only the interior probes see (`seen_only_inside`: what the walls hide from outside).
    A tabletop is not enclosed; a closed hollow object is, but hides nothing from outside."""
    weights = np.where(frame.core, splats.opacities, 0.0).astype(np.float64)
    poses, _, _ = _object_candidates(replace(frame, support=False), 12, 60.0)
    Ko, wo, ho = intrinsics(cfg.planning_side, 60.0)
    outside = np.zeros(len(splats), bool)
    for vm in poses:
        outside |= probe(params, vm, Ko, wo, ho, near_limit).seen
    K, w, h = intrinsics(cfg.planning_side, 90.0)
    pts, clearance = free_points(splats, frame, 2)
    inside = np.zeros(len(splats), bool)
    enclosure = 0.0
    for p in pts:
        cover = []
        for d in _cube_directions(frame.up):
            pr = probe(params, look_at(p, p + d, frame.up), K, w, h, near_limit)
            inside |= pr.seen
            cover.append(pr.coverage)
        enclosure = max(enclosure, float(np.mean(cover)))
    seen_out, seen_in = _seen_mass(outside, weights), _seen_mass(inside, weights)
    only_inside = _seen_mass(inside & ~outside, weights)
    kind = "room" if (enclosure >= ROOM_ENCLOSURE and only_inside >= ROOM_HIDDEN_MASS) else "object"
    return kind, {"seen_from_outside": round(seen_out, 4), "seen_from_inside": round(seen_in, 4),
                  "seen_only_inside": round(only_inside, 4), "enclosure": round(enclosure, 4),
                  "interior_clearance": round(float(clearance[0]) if len(clearance) else 0.0, 6)}


def choose_side(cameras_viewmats: list[np.ndarray], frame: SceneFrame, fov_deg: float, limit: int = MAX_SIDE) -> int:
    """Long image side putting the median core footprint at TARGET_FOOTPRINT_PX pixels at the
    median distance from the cameras to the box centre, within [MIN_SIDE, min(limit, MAX_SIDE)]
    (a limit below MIN_SIDE gives MIN_SIDE; module doc, step 6)."""
    dists = [float(np.linalg.norm(np.linalg.inv(vm)[:3, 3] - frame.centre)) for vm in cameras_viewmats]
    d = float(np.median(dists))
    # footprint_px = f * footprint / d with f = side / (2 tan(fov/2))
    side = TARGET_FOOTPRINT_PX * d * 2 * math.tan(math.radians(fov_deg) / 2) / max(frame.footprint, 1e-12)
    hi = min(MAX_SIDE, max(MIN_SIDE, int(limit)))
    return int(np.clip(16 * round(side / 16), MIN_SIDE, hi))


def plan_views(splats: Splats, cfg: VirtualViewsConfig | None = None, progress: bool = False) -> ViewPlan:
    """Virtual cameras for `splats` (module doc); VirtualViewsError when nothing can be seen."""
    cfg = cfg or VirtualViewsConfig()
    if cfg.num_views < 0 or cfg.max_side < 0 or cfg.side_limit < 0 or not 10.0 <= cfg.fov_deg <= 150.0 or cfg.planning_side < 16:
        raise VirtualViewsError("virtual views need --virtual.num-views >= 0, --virtual.max-side >= 0, --virtual.side-limit >= 0, "
                                f"--virtual.fov-deg in [10, 150] and --virtual.planning-side >= 16 (got {cfg.num_views}, "
                                f"{cfg.max_side}, {cfg.side_limit}, {cfg.fov_deg}, {cfg.planning_side})")
    t0 = time.time()
    frame = robust_frame(splats, cfg.up)
    params = _planning_params(splats)
    near_limit = NEAR_FRACTION * frame.radius
    evidence: dict = {}
    kind = cfg.kind
    if kind == "auto":
        kind, evidence = classify(splats, frame, params, cfg, near_limit)
    views = cfg.num_views or num_views_for(len(splats))
    weights = np.where(frame.core, splats.opacities, 0.0).astype(np.float64)
    if kind == "object":
        fov = cfg.fov_deg
        poses, axes, whole = _object_candidates(frame, 2 * views, fov, cfg.min_elevation_deg, cfg.frame_quantile)
        points = None
    else:
        fov = max(cfg.fov_deg, 75.0)  # a wider lens inside a room sees across it
        poses, axes, clear, points = _room_candidates(splats, frame, max(4, math.ceil(views / 3)))
        if not poses:
            raise VirtualViewsError("no free space inside the scene to place a camera (try --virtual.kind object)")
    Kp, wp, hp = intrinsics(cfg.planning_side, fov)
    probes, pulled = [], 0
    for j in tqdm(range(len(poses)), desc="plan views", disable=not progress, leave=False):
        # inside a room the walls may be nearer than an orbit's limit: half the position's clearance
        limit = near_limit if kind == "object" else min(near_limit, 0.5 * float(clear[j]))
        pr = probe(params, poses[j], Kp, wp, hp, limit)
        if kind == "object" and pr.near_fraction > NEAR_MAX_PIXELS and whole[j] is not poses[j]:
            pr_whole = probe(params, whole[j], Kp, wp, hp, near_limit)  # the tight framing came too close
            if pr_whole.near_fraction <= NEAR_MAX_PIXELS:
                poses[j], pr = whole[j], pr_whole
        if kind == "object" and pr.near_fraction > NEAR_MAX_PIXELS:
            # something (background, a floater cloud) sits in front of the orbit: move in along the ray
            for f in (0.8, 0.65, 0.5, 0.35):
                vm = pulled_in(poses[j], frame.centre, f)
                pr_in = probe(params, vm, Kp, wp, hp, near_limit)
                if pr_in.near_fraction <= NEAR_MAX_PIXELS:
                    poses[j], pr = vm, pr_in
                    pulled += 1
                    break
        probes.append(pr)
    usable = [i for i, p in enumerate(probes) if p.near_fraction <= NEAR_MAX_PIXELS and p.coverage > 0.0]
    blocked = len(poses) - len(usable)
    if not usable:
        raise VirtualViewsError(f"no Gaussian is in front of any of the {len(poses)} candidate views "
                                f"(every one sees nothing or sits inside something): nothing to train on")
    gains = np.array([_seen_mass(probes[i].seen, weights) for i in usable])
    first = usable[int(np.argmax(gains))]
    if kind == "object":
        order = _farthest_point_order(axes[usable], usable.index(first), views)
        chosen = [usable[j] for j in order]
    else:
        chosen = _greedy_twice_seen(probes, usable, weights, first, views)
    seen = np.logical_or.reduce([probes[i].seen for i in chosen])
    extra = 0
    max_extra = int(math.floor(cfg.max_extra_views * views))
    while extra < max_extra:
        unseen = weights * ~seen
        rest = [i for i in usable if i not in chosen]
        if not rest or unseen.sum() < 0.005 * weights.sum():
            break
        gain = [float(unseen[probes[i].seen].sum()) for i in rest]
        best = int(np.argmax(gain))
        if gain[best] < 0.002 * weights.sum():
            break
        chosen.append(rest[best])
        seen |= probes[rest[best]].seen
        extra += 1
    counts = np.stack([probes[i].seen for i in chosen]).sum(0)
    coverage = float(weights[counts >= 1].sum() / max(weights.sum(), 1e-12))
    coverage2 = float(weights[counts >= 2].sum() / max(weights.sum(), 1e-12))
    if coverage <= 0.0 or max(probes[i].coverage for i in chosen) < 1e-3:
        raise VirtualViewsError("no Gaussian is in front of any virtual view: nothing to train on")
    chosen_poses = [poses[i] for i in chosen]
    side = cfg.max_side or choose_side(chosen_poses, frame, fov, cfg.side_limit or MAX_SIDE)
    cameras = cameras_from_poses(chosen_poses, side, fov)
    report = {
        "kind": kind,
        "kind_asked": cfg.kind,
        "evidence": evidence,
        "views": len(chosen),
        "views_for_coverage": extra,
        "candidates": len(poses),
        "candidates_blocked": blocked,
        "candidates_moved_in": pulled,
        "width": int(cameras.widths[0]),
        "height": int(cameras.heights[0]),
        "fov_deg": fov,
        "box": [frame.lo.tolist(), frame.hi.tolist()],
        "up": frame.up.tolist(),
        "up_given": cfg.up is not None,
        "support_plane": frame.support,
        "support_height": frame.support_height,
        "footprint": frame.footprint,
        "core_gaussians": int(frame.core.sum()),
        "floaters": frame.floaters,
        "outside_box": frame.outside_box,
        "coverage": round(coverage, 4),
        "coverage_2_views": round(coverage2, 4),
        "interior_points": None if points is None else np.asarray(points).tolist(),
        "config": asdict(cfg),
        "seconds": round(time.time() - t0, 2),
    }
    return ViewPlan(cameras=cameras, frame=frame, kind=kind, report=report)


# ---------------------------------------------------------------------------- rendering and writing


@dataclass
class ViewMaps:
    """One rendered virtual view: rgb uint8 [H, W, 3], alpha float32 [H, W], depth float32 [H, W]
    (camera z, 0 where empty), normals float32 [H, W, 3] (camera frame, facing the camera, zero
    where empty) blended from the Gaussians' shortest axes."""

    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray
    normals: np.ndarray


def render_view(splats: Splats, params: dict, normals: np.ndarray, cameras: Cameras, i: int) -> ViewMaps:
    """RGB (view-dependent SH colour, black background), alpha, depth and normals of camera i."""
    from splatseg.render import render
    from splatseg.render.sh import sh_to_rgb

    viewmat = cameras.viewmats[i]
    centre = np.linalg.inv(viewmat)[:3, 3]
    with torch.no_grad():
        rgb = torch.clamp_min(sh_to_rgb(splats.sh_degree, params["sh"], params["means"] - torch.from_numpy(centre).float()) + 0.5, 0.0)
        n = normals.copy()
        flip = ((splats.means.astype(np.float64) - centre) * n).sum(1) > 0  # make normals face the camera
        n[flip] *= -1
        n_cam = n @ viewmat[:3, :3].T
        channels = torch.cat([rgb, torch.from_numpy(n_cam.astype(np.float32))], 1)
        out = render(params["means"], params["quats"], params["scales"], params["opacities"], channels,
                     torch.from_numpy(viewmat[None]).float(), torch.from_numpy(cameras.Ks[i : i + 1]).float(),
                     int(cameras.widths[i]), int(cameras.heights[i]))
    colors = out.colors[0].numpy()
    alpha = out.alphas[0, ..., 0].numpy()
    depth = out.depths[0, ..., 0].numpy()
    nmap = colors[..., 3:]
    norm = np.linalg.norm(nmap, axis=-1, keepdims=True)
    nmap = np.where(norm > 1e-6, nmap / np.maximum(norm, 1e-6), 0.0).astype(np.float32)
    rgb8 = (np.clip(colors[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)
    return ViewMaps(rgb8, alpha.astype(np.float32), np.where(alpha > 0, depth, 0.0).astype(np.float32), nmap)


VIEWS_JSON = "views.json"
"""The plan's report inside a virtual scene directory (beside transforms.json)."""


def write_virtual_scene(splats: Splats, plan: ViewPlan, root: Path, extra_info: dict | None = None, progress: bool = True) -> Path:
    """Renders every planned view and writes the scene directory `root` (assembled under a temporary
    name, then renamed into place):
        transforms.json          the virtual cameras (nerfstudio layout, like any captured scene)
        images/<stem>.png        RGB renders
        geometry/<stem>.npz      alpha [H, W] float16, depth [H, W] float32, normals [H, W, 3] float16
        views.json               `plan.report` plus `extra_info` (e.g. the splats file and its SHA-256)
    """
    from splatseg.data import write_transforms_json
    from splatseg.io.images import save_image

    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "geometry").mkdir()
        params = _planning_params(splats)
        normals, _ = gaussian_axes(splats)
        cams = plan.cameras
        covered = []
        for i in tqdm(range(len(cams)), desc="render views", disable=not progress, leave=False):
            maps = render_view(splats, params, normals, cams, i)
            covered.append(float((maps.alpha >= 0.5).mean()))
            save_image(tmp / "images" / f"{cams.names[i]}.png", maps.rgb)
            np.savez_compressed(tmp / "geometry" / f"{cams.names[i]}.npz", alpha=maps.alpha.astype(np.float16),
                                depth=maps.depth, normals=maps.normals.astype(np.float16))
        if max(covered) < 1e-3:
            raise VirtualViewsError("no Gaussian is in front of any virtual view: nothing to train on")
        write_transforms_json(tmp, cams)
        report = {**plan.report, "image_coverage": round(float(np.mean(covered)), 4), **(extra_info or {})}
        (tmp / VIEWS_JSON).write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def read_views_report(root: Path) -> dict | None:
    """The views.json of a virtual scene directory, or None when it is not one."""
    path = Path(root) / VIEWS_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def ensure_virtual_scene(splats: Splats, root: Path, cfg: VirtualViewsConfig, identity: dict, progress: bool = True,
                         extra_info: dict | None = None) -> tuple[dict, bool]:
    """The virtual scene directory at `root` for these splats: made (plan + render + write) when
    missing, reused when its views.json records the same `identity` (e.g. the splats' SHA-256) and
    the same `cfg`. `extra_info` is recorded too but not compared (e.g. the file's path). Returns
    (report, reused); VirtualViewsError when `root` holds views of other splats or settings."""
    root = Path(root)
    wanted = json.loads(json.dumps(asdict(cfg)))
    if root.exists():
        report = read_views_report(root)
        if report is None or not (root / "transforms.json").is_file():
            raise VirtualViewsError(f"{root} exists but is not a complete virtual scene; delete it or choose another --out")
        for key, value in identity.items():
            if report.get(key) != value:
                raise VirtualViewsError(f"{root} holds views made from a different {key}; choose another --out or delete it")
        if report.get("config") != wanted:
            raise VirtualViewsError(f"{root} holds views made with other --virtual settings; choose another --out or delete it")
        return report, True
    plan = plan_views(splats, cfg, progress=progress)
    write_virtual_scene(splats, plan, root, extra_info={**identity, **(extra_info or {})}, progress=progress)
    return read_views_report(root) or plan.report, False
