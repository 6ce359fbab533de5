"""A family of generated scenes: one seed varies everything the tuning must not overfit to.

`build_family_scene(FamilyConfig(seed=s))` returns a `SyntheticScene` (write it with
`splatseg.data.synthetic.write_scene`, as the demo's tabletop is written). What a seed varies:
- environment: objects on a support surface in empty space ("backdrop"), or inside a room with a
  floor and a panelled cylindrical wall ("room");
- the support: square or round, plain, striped, checkered or noisy, its colour;
- 4-8 objects from eleven kinds (mug, box, ball, lamp, block, bottle, cone, stack, bowl, ring,
  book), 1-3 differently coloured parts each, sizes, yaw, colours (sometimes close to the
  support's), placed so that some stand close together and hide each other from some views;
- the Gaussians, the way a trainer leaves them: sizes spread log-normally, anisotropic discs with
  random in-plane rotation, surface-normal jitter, a spread of opacities with a tail of faint
  ones, a few elongated "spike" Gaussians, a few faint floaters in free space, and the row order
  shuffled;
- appearance baked into the colours: Lambert shading from one light and soft shadows cast on the
  support and floor;
- cameras: 40 views on the upper hemisphere with a seed-drawn elevation band (low 8-25 deg, high
  45-70 deg), distance and aim jitter; resolution 256x192 up to 512x384.
Density: "default" draws 2,500-6,000 Gaussians per object (tens of thousands in all), "dense"
25,000-100,000 (hundreds of thousands), or `gaussians_per_object` fixes it.

Ground truth: object 0 is the support ("table"); objects 1..n are the clickable ones; then the
room's floor and wall and the floaters, listed in `SyntheticScene.background_ids` with the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from scipy.spatial.transform import Rotation

from splatseg.data import shapes
from splatseg.data.synthetic import TABLE_ID, SyntheticScene, look_at
from splatseg.types import SH_C0, Cameras, Splats

OBJECT_KINDS = ("mug", "box", "ball", "lamp", "block", "bottle", "cone", "stack", "bowl", "ring", "book")

RESOLUTIONS = ((256, 192), (320, 240), (384, 288), (512, 384))
RESOLUTION_PROBS = (0.55, 0.25, 0.12, 0.08)


@dataclass
class FamilyConfig:
    """One member of the generated family (everything else is drawn from `seed`)."""

    seed: int = 0
    """Random seed: the same seed gives the same scene, bit for bit."""
    density: Literal["default", "dense"] = "default"
    """Gaussians per object: "default" 2,500-6,000, "dense" 25,000-100,000 (drawn per object)."""
    gaussians_per_object: int | None = None
    """Fixes the Gaussians per object instead of drawing them (the support scales with it)."""
    num_cameras: int = 40
    """Views on the upper hemisphere (every 8th is held out by the evaluation split)."""
    resolution: tuple[int, int] | None = None
    """(width, height) of the images; None draws one of 256x192 .. 512x384 from the seed."""
    object_scale: float = 1.0
    """Multiplies every object's drawn size (the support, room and camera distances keep their
    ranges): below 1, small objects in a large scene (`scripts/eval_resolution.py`). 1 gives the
    family's scenes unchanged; another value also changes what the seed draws after placing the
    objects (placement retries draw from the same stream), so compare families, not seeds."""


@dataclass
class _Part:
    name: str
    points: np.ndarray  # [n, 3]
    normals: np.ndarray  # [n, 3]
    area: float  # surface area of the part (world units^2)


# ------------------------------------------------------------------- object kinds (local frame)
# Each builder gets (rng, n, size) and returns parts centred on the origin, standing on z = 0,
# and the footprint radius. `size` is a scale factor around 1 (objects are ~0.2-0.5 units tall).


def _split_count(n: int, areas) -> list[int]:
    areas = np.asarray(areas, float)
    counts = np.floor(n * areas / areas.sum()).astype(int)
    counts[0] += n - counts.sum()
    return [max(int(c), 1) for c in counts]


def _mug(rng, n, s):
    r, h = 0.15 * s, 0.32 * s
    nb, nh = _split_count(n, [2 * np.pi * r * h + np.pi * r * r, 4 * np.pi**2 * 0.085 * s * 0.024 * s])
    pb, nrb = shapes.cylinder(rng, nb, np.zeros(2), r, 0.0, h)
    ph, nrh = shapes.torus(rng, nh, np.array([r + 0.055 * s, 0.0, h * 0.5]), 0.085 * s, 0.024 * s)
    return [_Part("body", pb, nrb, 2 * np.pi * r * h), _Part("handle", ph, nrh, 4 * np.pi**2 * 0.085 * 0.024 * s * s)], r + 0.14 * s


def _box(rng, n, s):
    a = 0.28 * s * rng.uniform(0.8, 1.25, 3)
    a[2] = 0.28 * s * rng.uniform(0.7, 1.3)
    p, nr = shapes.box(rng, n, -a / 2 * np.array([1, 1, 0]), a / 2 * np.array([1, 1, 0]) + np.array([0, 0, a[2]]))
    area = 2 * a[2] * (a[0] + a[1]) + a[0] * a[1]
    if rng.random() < 0.6:
        low = p[:, 2] < a[2] * rng.uniform(0.4, 0.6)
        return [_Part("bottom", p[low], nr[low], area / 2), _Part("top", p[~low], nr[~low], area / 2)], 0.5 * np.hypot(a[0], a[1])
    return [_Part("box", p, nr, area)], 0.5 * np.hypot(a[0], a[1])


def _ball(rng, n, s):
    r = 0.16 * s
    p, nr = shapes.sphere(rng, n, np.array([0.0, 0.0, r]), r, zmin=0.01)
    return [_Part("ball", p, nr, 4 * np.pi * r * r)], r


def _lamp(rng, n, s):
    hb, rb, rs = 0.27 * s, 0.055 * s, 0.14 * s
    nb, ns = _split_count(n, [2 * np.pi * rb * hb, 4 * np.pi * rs * rs])
    pb, nrb = shapes.cylinder(rng, nb, np.zeros(2), rb, 0.0, hb, caps=False)
    ps, nrs = shapes.sphere(rng, ns, np.array([0.0, 0.0, hb + rs * 0.8]), rs)
    return [_Part("base", pb, nrb, 2 * np.pi * rb * hb), _Part("shade", ps, nrs, 4 * np.pi * rs * rs)], rs


def _block(rng, n, s):
    w, h = 0.15 * s, 0.45 * s * rng.uniform(0.8, 1.2)
    p, nr = shapes.box(rng, n, np.array([-w / 2, -w / 2, 0.0]), np.array([w / 2, w / 2, h]))
    return [_Part("block", p, nr, 4 * w * h + w * w)], w * 0.71


def _bottle(rng, n, s):
    r, h, rn, hn = 0.09 * s, 0.3 * s, 0.035 * s, 0.12 * s
    a_body, a_neck = 2 * np.pi * r * h + np.pi * r * r, 2 * np.pi * rn * hn + np.pi * rn * rn
    nb, nn = _split_count(n, [a_body, a_neck])
    pb, nrb = shapes.cylinder(rng, nb, np.zeros(2), r, 0.0, h)
    pn, nrn = shapes.cylinder(rng, nn, np.zeros(2), rn, h, h + hn)
    if rng.random() < 0.5:  # neck and body one colour
        return [_Part("bottle", np.concatenate([pb, pn]), np.concatenate([nrb, nrn]), a_body + a_neck)], r
    return [_Part("body", pb, nrb, a_body), _Part("neck", pn, nrn, a_neck)], r


def _cone_surface(rng, n, r, h, z0=0.0):
    """Lateral surface of a cone (apex up) with base radius r, height h, base at z0."""
    u = np.sqrt(rng.uniform(0, 1, n))  # area-uniform along the slant
    th = rng.uniform(0, 2 * np.pi, n)
    rad = r * u
    z = z0 + h * (1 - u)
    p = np.stack([rad * np.cos(th), rad * np.sin(th), z], 1)
    slope = r / h
    nr = np.stack([np.cos(th), np.sin(th), np.full(n, slope)], 1)
    return p, nr / np.linalg.norm(nr, axis=1, keepdims=True)


def _cone(rng, n, s):
    r, h = 0.14 * s, 0.36 * s
    p, nr = _cone_surface(rng, n, r, h)
    area = np.pi * r * np.hypot(r, h)
    if rng.random() < 0.5:
        band = (p[:, 2] > 0.35 * h) & (p[:, 2] < 0.55 * h)
        return [_Part("cone", p[~band], nr[~band], area * 0.8), _Part("stripe", p[band], nr[band], area * 0.2)], r
    return [_Part("cone", p, nr, area)], r


def _stack(rng, n, s):
    k = int(rng.integers(2, 4))
    sizes = [0.26 * s * (1 - 0.18 * i) for i in range(k)]
    heights = [0.1 * s * rng.uniform(0.8, 1.3) for _ in range(k)]
    areas = [4 * a * h + a * a for a, h in zip(sizes, heights)]
    counts = _split_count(n, areas)
    parts, z = [], 0.0
    for i, (a, h, c) in enumerate(zip(sizes, heights, counts)):
        p, nr = shapes.box(rng, c, np.array([-a / 2, -a / 2, z]), np.array([a / 2, a / 2, z + h]))
        parts.append(_Part(f"layer {i + 1}", p, nr, areas[i]))
        z += h
    return parts, sizes[0] * 0.71


def _bowl(rng, n, s):
    """An open hemispherical shell (outside and inside surfaces): hollow."""
    r, t = 0.17 * s, 0.012 * s
    v = rng.normal(size=(n * 3, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v = v[v[:, 2] < -0.05][:n]
    inside = rng.random(len(v)) < 0.5
    rad = np.where(inside, r - t, r)
    p = v * rad[:, None] + np.array([0.0, 0.0, r])
    nr = np.where(inside[:, None], -v, v)
    return [_Part("bowl", p, nr, 4 * np.pi * r * r)], r


def _ring(rng, n, s):
    R, r = 0.13 * s, 0.04 * s
    p, nr = shapes.torus(rng, n, np.zeros(3), R, r)
    # lay it flat: the torus sampler builds the ring in the x-z plane; rotate it into x-y
    p = p[:, [0, 2, 1]]
    nr = nr[:, [0, 2, 1]]
    p[:, 2] += r
    return [_Part("ring", p, nr, 4 * np.pi**2 * R * r)], R + r


def _book(rng, n, s):
    a = np.array([0.3, 0.22, 0.05]) * s * rng.uniform(0.85, 1.2, 3)
    p, nr = shapes.box(rng, n, np.array([-a[0] / 2, -a[1] / 2, 0.0]), np.array([a[0] / 2, a[1] / 2, a[2]]))
    area = 2 * a[2] * (a[0] + a[1]) + a[0] * a[1]
    cover = (p[:, 2] > a[2] * 0.8) | (np.abs(p[:, 0]) > a[0] * 0.45)
    return [_Part("cover", p[cover], nr[cover], area * 0.7), _Part("pages", p[~cover], nr[~cover], area * 0.3)], 0.5 * np.hypot(a[0], a[1])


_BUILDERS: dict[str, Callable] = {
    "mug": _mug, "box": _box, "ball": _ball, "lamp": _lamp, "block": _block, "bottle": _bottle,
    "cone": _cone, "stack": _stack, "bowl": _bowl, "ring": _ring, "book": _book,
}


# ------------------------------------------------------------------- appearance


def _random_colour(rng, avoid: list[np.ndarray], near: np.ndarray | None = None) -> np.ndarray:
    """A saturated-ish RGB in [0, 1], distinct from `avoid`; close to `near` when given."""
    best, best_d = None, -1.0
    for _ in range(12):
        if near is not None:
            c = np.clip(near + rng.normal(0, 0.08, 3), 0.05, 0.95)
        else:
            h, sat, val = rng.uniform(0, 1), rng.uniform(0.35, 0.95), rng.uniform(0.35, 0.95)
            c = _hsv(h, sat, val)
        d = min((np.abs(c - a).sum() for a in avoid), default=3.0)
        if d > 0.35:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _hsv(h, s, v) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _support_colours(rng, xy: np.ndarray, base: np.ndarray, pattern: str) -> np.ndarray:
    """[n, 3] colours of support points at `xy` [n, 2] for a texture pattern."""
    second = np.clip(base * rng.uniform(0.55, 0.8) + rng.uniform(-0.05, 0.05, 3), 0.02, 0.98)
    if pattern == "checker":
        cell = rng.uniform(0.1, 0.25)
        sel = (np.floor(xy[:, 0] / cell) + np.floor(xy[:, 1] / cell)) % 2 > 0
    elif pattern == "stripes":
        cell = rng.uniform(0.08, 0.2)
        angle = rng.uniform(0, np.pi)
        sel = np.floor((xy @ np.array([np.cos(angle), np.sin(angle)])) / cell) % 2 > 0
    elif pattern == "noise":
        k = rng.normal(size=(3, 2)) * 6
        phase = rng.uniform(0, 2 * np.pi, 3)
        field = np.sin(xy @ k.T + phase).sum(1)
        t = (field - field.min()) / max(np.ptp(field), 1e-9)
        return base * (1 - t[:, None]) + second * t[:, None]
    else:  # plain
        return np.tile(base, (len(xy), 1))
    return np.where(sel[:, None], second, base)


def _shadow_factor(xy: np.ndarray, footprints: list[tuple[np.ndarray, float]], light: np.ndarray, z: float, strength: float) -> np.ndarray:
    """[n] multiplicative darkening of support points by soft shadows of the objects' footprints,
    shifted away from the light (a projection of each object's centre along the light ray)."""
    f = np.ones(len(xy))
    for centre, radius in footprints:
        height = 0.3 - z
        shift = -light[:2] / max(light[2], 0.2) * height * 0.5
        d = np.linalg.norm(xy - (centre + shift), axis=1) / (radius * 1.25)
        f *= 1 - strength * np.exp(-(d**4))
    return f


def _shade(normals: np.ndarray, light: np.ndarray, ambient: float) -> np.ndarray:
    """[n] Lambert shading factor in [ambient, 1]."""
    return ambient + (1 - ambient) * np.clip(normals @ light, 0, 1)


# ------------------------------------------------------------------- Gaussians as a trainer leaves them


def _trainer_like_gaussians(rng, points, normals, spacing, rgb):
    """Surface Gaussians with a realistic spread: returns (means, quats, log_scales, opacity_logits, sh0).

    Sizes log-normal around the sample spacing, anisotropic with a random in-plane rotation,
    surface-normal jitter, opacities mostly high with a faint tail, ~2% elongated spikes."""
    n = len(points)
    nrm = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    means = points + nrm * rng.normal(0, 0.12 * spacing, (n, 1))
    # a tangent frame rotated randomly about the normal: columns (t1, t2, normal)
    helper = np.where(np.abs(nrm[:, 2:3]) < 0.9, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    t1 = np.cross(helper, nrm)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(nrm, t1)
    phi = rng.uniform(0, 2 * np.pi, (n, 1))
    a1 = np.cos(phi) * t1 + np.sin(phi) * t2
    a2 = np.cross(nrm, a1)
    R = np.stack([a1, a2, nrm], axis=2)  # [n, 3, 3], columns are the local axes
    quats = _quat_from_matrix(R)
    s_main = spacing * 0.7 * np.exp(rng.normal(0, 0.35, n))
    aniso = np.exp(np.abs(rng.normal(0, 0.4, n)))
    s1, s2 = s_main * np.sqrt(aniso), s_main / np.sqrt(aniso)
    s3 = spacing * rng.uniform(0.04, 0.15, n)
    spike = rng.random(n) < 0.02
    s1 = np.where(spike, spacing * rng.uniform(3.0, 8.0, n), s1)
    s2 = np.where(spike, spacing * rng.uniform(0.1, 0.3, n), s2)
    log_scales = np.log(np.stack([s1, s2, s3], 1))
    opacity = np.where(rng.random(n) < 0.1, rng.uniform(0.04, 0.45, n), rng.beta(8, 1.2, n) * 0.98 + 0.01)
    colour = np.clip(rgb + rng.normal(0, 0.025, (n, 3)), 0.01, 0.99)
    logits = np.log(opacity / (1 - opacity))
    return means, quats, log_scales, logits, (colour - 0.5) / SH_C0


def _quat_from_matrix(R: np.ndarray) -> np.ndarray:
    """[n, 4] w x y z unit quaternions of rotation matrices [n, 3, 3]."""
    xyzw = Rotation.from_matrix(R).as_quat()
    return np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)


# ------------------------------------------------------------------- layout and cameras


def _place(rng, radii: list[float], half: float, round_top: bool) -> list[np.ndarray]:
    """Object centres on the support: rejection sampling with a gap that is sometimes tiny
    (objects close enough to hide each other), all inside the support."""
    centres: list[np.ndarray] = []
    for r in radii:
        for attempt in range(400):
            c = rng.uniform(-half + r + 0.05, half - r - 0.05, 2) * (0.8 if round_top else 1.0)
            if round_top and np.linalg.norm(c) > half - r - 0.05:
                continue
            gap = 0.02 if rng.random() < 0.35 else 0.12
            if all(np.linalg.norm(c - o) >= r + ro + gap for o, ro in zip(centres, radii)):
                centres.append(c)
                break
        else:
            centres.append(None)  # no room: dropped by the caller
    return centres


def hemisphere_cameras(rng, num: int, width: int, height: int, scale: float) -> Cameras:
    """`num` views on the upper hemisphere around the origin: a seed-drawn elevation band, jittered
    azimuths, distances and aim points. `scale` is the support's half size."""
    low, high = np.deg2rad(rng.uniform(8, 25)), np.deg2rad(rng.uniform(45, 70))
    fov_x = np.deg2rad(rng.uniform(50, 62))
    fx = 0.5 * width / np.tan(fov_x / 2)
    K = np.array([[fx, 0, width / 2], [0, fx, height / 2], [0, 0, 1.0]])
    az0 = rng.uniform(0, 2 * np.pi)
    viewmats = []
    for i in range(num):
        az = az0 + 2 * np.pi * (i * 0.618034 % 1.0) + rng.normal(0, 0.05)
        el = low + (high - low) * ((i * 0.381966 + 0.5 * rng.random()) % 1.0)
        dist = scale * rng.uniform(1.75, 2.25)
        eye = dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        target = np.array([*rng.normal(0, 0.08 * scale, 2), rng.uniform(0.05, 0.22)])
        viewmats.append(look_at(eye, target))
    names = [f"view_{i:03d}" for i in range(num)]
    return Cameras(viewmats=np.stack(viewmats), Ks=np.tile(K, (num, 1, 1)), widths=np.full(num, width, np.int64),
                   heights=np.full(num, height, np.int64), names=names, image_paths=[Path("images") / f"{n}.png" for n in names])


# ------------------------------------------------------------------- the scene


def build_family_scene(cfg: FamilyConfig) -> SyntheticScene:
    """Generates one member of the family (no rendering); see the module docstring."""
    rng = np.random.default_rng([cfg.seed, 9001])
    room = rng.random() < 0.5
    half = rng.uniform(0.95, 1.3)
    round_top = rng.random() < 0.3
    pattern = str(rng.choice(["plain", "stripes", "checker", "noise"], p=[0.2, 0.3, 0.3, 0.2]))
    support_rgb = _random_colour(rng, [])
    light = np.array([*rng.normal(0, 0.5, 2), 1.0])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.45, 0.7)
    shadow_strength = rng.uniform(0.25, 0.55)

    def per_object() -> int:
        if cfg.gaussians_per_object is not None:
            return int(cfg.gaussians_per_object)
        lo, hi = (2500, 6000) if cfg.density == "default" else (25_000, 100_000)
        return int(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    num_objects = int(rng.integers(4, 9))
    kinds = rng.choice(len(OBJECT_KINDS), size=num_objects, replace=num_objects > len(OBJECT_KINDS))
    sizes = rng.uniform(0.7, 1.35, num_objects) * (1.0 if num_objects <= 5 else 0.85) * float(cfg.object_scale)
    built = [(OBJECT_KINDS[k], *_BUILDERS[OBJECT_KINDS[k]](rng, per_object(), s)) for k, s in zip(kinds, sizes)]
    centres = _place(rng, [b[2] for b in built], half, round_top)

    means, quats, log_scales, logits, sh0, obj_ids, part_ids = [], [], [], [], [], [], []
    object_names, part_names, part_object = ["table"], [], []
    used_colours = [support_rgb]
    footprints = []

    def add(oid: int, pid: int, m, q, ls, op, dc):
        means.append(m), quats.append(q), log_scales.append(ls), logits.append(op), sh0.append(dc)
        obj_ids.append(np.full(len(m), oid)), part_ids.append(np.full(len(m), pid))

    # the clickable objects (ids 1..n)
    objects = [(kind, parts, radius, c) for (kind, parts, radius), c in zip(built, centres) if c is not None]
    counts_by_name: dict[str, int] = {}
    part_meta = []
    for oid, (kind, parts, radius, centre) in enumerate(objects, start=1):
        counts_by_name[kind] = counts_by_name.get(kind, 0) + 1
        name = kind if counts_by_name[kind] == 1 else f"{kind} {counts_by_name[kind]}"
        object_names.append(name)
        yaw = rng.uniform(0, 2 * np.pi)
        Rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1.0]])
        footprints.append((centre, radius))
        for part in parts:
            near = support_rgb if rng.random() < 0.12 else None
            rgb = _random_colour(rng, used_colours, near)
            used_colours.append(rgb)
            pts = part.points @ Rz.T + np.array([centre[0], centre[1], 0.0])
            nrm = part.normals @ Rz.T
            part_meta.append((oid, f"{name} {part.name}" if len(parts) > 1 else name, pts, nrm, part.area, rgb))

    n_obj_total = sum(len(p[2]) for p in part_meta)
    # the support top (id 0): as many Gaussians as ~1.5 average objects, larger than the objects'
    n_support = int(max(4000, 1.5 * n_obj_total / max(len(objects), 1)) * (half / 1.1) ** 2)
    if round_top:
        rad = half * np.sqrt(rng.uniform(0, 1, n_support))
        th = rng.uniform(0, 2 * np.pi, n_support)
        sxy = np.stack([rad * np.cos(th), rad * np.sin(th)], 1)
        support_area = np.pi * half * half
    else:
        sxy = rng.uniform(-half, half, (n_support, 2))
        support_area = 4 * half * half
    spts = np.concatenate([sxy, np.full((n_support, 1), -0.002)], 1)
    snrm = np.tile([0.0, 0.0, 1.0], (n_support, 1))
    scol = _support_colours(rng, sxy, support_rgb, pattern) * (ambient + (1 - ambient) * light[2])
    scol *= _shadow_factor(sxy, footprints, light, 0.0, shadow_strength)[:, None]
    part_names.append("table")
    part_object.append(TABLE_ID)
    add(TABLE_ID, 0, *_trainer_like_gaussians(rng, spts, snrm, shapes.spacing(support_area, n_support) * 1.15, 0)[:4],
        (np.clip(scol + rng.normal(0, 0.02, scol.shape), 0.01, 0.99) - 0.5) / SH_C0)

    for pid, (oid, pname, pts, nrm, area, rgb) in enumerate(part_meta, start=1):
        m, q, ls, op, _ = _trainer_like_gaussians(rng, pts, nrm, shapes.spacing(area, len(pts)), rgb)
        col = np.clip(rgb * _shade(nrm, light, ambient)[:, None] + rng.normal(0, 0.02, (len(pts), 3)), 0.01, 0.99)
        add(oid, pid, m, q, ls, op, (col - 0.5) / SH_C0)
        part_names.append(pname)
        part_object.append(oid)

    background_ids = [TABLE_ID]
    next_id, next_pid = len(object_names), len(part_names)
    if room:
        floor_z = -rng.uniform(0.6, 0.8)
        wall_r = half * rng.uniform(2.6, 3.0)
        n_floor = max(3000, n_support // 2)
        rad = wall_r * np.sqrt(rng.uniform(0, 1, n_floor))
        th = rng.uniform(0, 2 * np.pi, n_floor)
        fxy = np.stack([rad * np.cos(th), rad * np.sin(th)], 1)
        floor_rgb = _random_colour(rng, used_colours)
        fcol = _support_colours(rng, fxy, floor_rgb, str(rng.choice(["plain", "checker", "noise"])))
        fcol *= (ambient + (1 - ambient) * light[2]) * _shadow_factor(fxy, [(np.zeros(2), half)], light, floor_z, shadow_strength * 0.6)[:, None]
        fpts = np.concatenate([fxy, np.full((n_floor, 1), floor_z)], 1)
        m, q, ls, op, _ = _trainer_like_gaussians(rng, fpts, np.tile([0.0, 0.0, 1.0], (n_floor, 1)),
                                                  shapes.spacing(np.pi * wall_r**2, n_floor), 0)
        add(next_id, next_pid, m, q, ls, op, (np.clip(fcol, 0.01, 0.99) - 0.5) / SH_C0)
        object_names.append("floor"), part_names.append("floor"), part_object.append(next_id)
        background_ids.append(next_id)
        next_id, next_pid = next_id + 1, next_pid + 1
        n_wall = max(4000, n_support // 2)
        wall_h = rng.uniform(2.2, 2.8)
        th = rng.uniform(0, 2 * np.pi, n_wall)
        z = rng.uniform(floor_z, floor_z + wall_h, n_wall)
        wpts = np.stack([wall_r * np.cos(th), wall_r * np.sin(th), z], 1)
        wnrm = -np.stack([np.cos(th), np.sin(th), np.zeros(n_wall)], 1)  # facing inwards
        wall_rgb = _random_colour(rng, used_colours)
        panels = int(rng.integers(8, 20))
        panel = np.floor(th / (2 * np.pi) * panels) % 2 > 0
        rail = np.abs(z - (floor_z + wall_h * rng.uniform(0.3, 0.45))) < 0.04
        wcol = np.where(panel[:, None], wall_rgb * 0.8, wall_rgb)
        wcol = np.where(rail[:, None], wall_rgb * 0.5, wcol) * (ambient + (1 - ambient) * 0.5)
        m, q, ls, op, _ = _trainer_like_gaussians(rng, wpts, wnrm, shapes.spacing(2 * np.pi * wall_r * wall_h, n_wall), 0)
        add(next_id, next_pid, m, q, ls, op, (np.clip(wcol, 0.01, 0.99) - 0.5) / SH_C0)
        object_names.append("wall"), part_names.append("wall"), part_object.append(next_id)
        background_ids.append(next_id)
        next_id, next_pid = next_id + 1, next_pid + 1

    # faint floaters in the free space above the support
    n_float = int(0.004 * sum(len(m) for m in means)) + 20
    fpts = np.concatenate([rng.uniform(-half, half, (n_float, 2)), rng.uniform(0.05, 1.0, (n_float, 1))], 1)
    fq = rng.normal(size=(n_float, 4))
    fls = np.log(rng.uniform(0.01, 0.05, (n_float, 3)))
    fop = np.log(0.08 / 0.92) + rng.normal(0, 0.4, n_float)
    fcol = rng.uniform(0.2, 0.8, (n_float, 3))
    add(next_id, next_pid, fpts, fq, fls, fop, (fcol - 0.5) / SH_C0)
    object_names.append("floaters"), part_names.append("floaters"), part_object.append(next_id)
    background_ids.append(next_id)

    n = sum(len(m) for m in means)
    order = rng.permutation(n)  # rows shuffled, as a trainer's densification leaves them

    def cat(xs, dtype=np.float32):
        return np.concatenate(xs).astype(dtype)[order]

    splats = Splats(means=cat(means), quats=cat(quats), log_scales=cat(log_scales), opacity_logits=cat(logits),
                    sh0=cat(sh0)[:, None, :], shN=np.zeros((n, 0, 3), np.float32))
    width, height = cfg.resolution or RESOLUTIONS[int(rng.choice(len(RESOLUTIONS), p=RESOLUTION_PROBS))]
    cameras = hemisphere_cameras(rng, cfg.num_cameras, int(width), int(height), half)
    return SyntheticScene(splats=splats, cameras=cameras, object_id=cat(obj_ids, np.int32), part_id=cat(part_ids, np.int32),
                          object_names=object_names, part_names=part_names, part_object=part_object,
                          background_ids=background_ids)


def generate_family_scene(root: Path, cfg: FamilyConfig | None = None, progress: bool = True) -> Path:
    """build_family_scene + `synthetic.write_scene`: a scene directory with images, splats.ply and
    ground-truth labels (labels/objects.json lists `background_ids`)."""
    from splatseg.data.synthetic import write_scene

    return write_scene(build_family_scene(cfg or FamilyConfig()), Path(root), progress=progress)
