"""Weights-free multi-level segments: scikit-image's `felzenszwalb` on colour, guided by the
geometry the splats render for the view (depth, opacity), so no model weights are needed.

Input: rgb uint8 [H, W, 3] (RGB order); optional `Geometry` (depth = camera-frame z in scene units,
alpha = accumulated opacity, K in pixels; OpenCV camera frame). Output: `Segments` with int32
segmaps [L, H, W] (L = 1..3), -1 = no segment, indices unique across levels, model
"felzenszwalb-rgbd-v3" (with geometry) or "felzenszwalb-rgb-v3" (colour only); the version
(`ALGORITHM_VERSION`) changes whenever the defaults' output does, so older caches are not reused.

Why geometry (DESIGN.md, "Weights-free segments"): colour superpixels split textured objects and
merge them with the background, so a whole-object level rarely exists in colour alone. Rendered
depth has crisp object edges. The cues that separate one object from another are
  - the support: most captures show objects standing on one plane (a table, the ground, a
    turntable). Level 0 finds it (`support_plane`): RANSAC over the back-projected pixels, a pixel
    lies on it when its distance is below `plane_tolerance` pixel footprints (z / f, so the tolerance
    follows the depth noise of splats, not the scene scale) and its normal (edge-aware
    one-sided differences, so pixels next to an object take their normal from the plane) is within
    `plane_angle_deg`. The plane is one segment; the pixels off it are split into objects by
  - depth discontinuities (an object in front of whatever lies behind it): relative depth steps
    > `jump_threshold` between neighbouring pixels.
  Near-plane pixels whose normal disagrees (the bottom of an object's side, lower than the
  tolerance) join the adjacent object, at most `plane_tolerance` + 1 pixels far, so normal noise on the
  plane costs at most that band. A plane counts as a support only when what meets it without a
  depth step mostly rises on the camera's side (objects standing on it); the face of an object is
  rejected (a box top seen from above: its sides continue on the far side; a mug's base seen
  end-on: nothing meets it without a step) and the next plane tried (`plane_convex_check`).
  Measured with scripts/eval_segments.py: on the built-in tabletop (2 seeds x 40 views) every
  object and the table is one level-0 segment with IoU >= 0.8 in every view, mean IoU 0.97
  (objects) / 0.99 (table), still in 99 % with 1 % multiplicative depth noise; on maryrose with a
  quick CPU reconstruction (its white turntable is barely reconstructed) the check rejects the
  object's own faces and level 0 mostly falls back to depth jumps (and creases).
  - opacity: a quick reconstruction leaves half-transparent floaters (a white turntable or backdrop
    that the learned background colour half explains) that join an object to its surroundings
    without a depth step. Level 0 is therefore built from the confidently opaque pixels
    (alpha >= `core_alpha`) only; the less opaque ones rejoin an adjacent region within
    `edge_grow_px` pixels when continuous in depth (blended object edges), the rest stay -1. On
    maryrose (288 px, 23 views) this took the object's best level-0 IoU from 0.84 to 0.92 (every
    view >= 0.8) and the trained one-click selection's mIoU from 0.81 to 0.92; on the built-in tabletop
    the objects did not change (0.972 vs 0.973), the table lost a little (0.978 vs 0.990).
  - concave creases (where an object stands on another, or the fallback when no plane holds
    `plane_min_fraction` of the view): edges *inside* an object (a box's faces) are convex, so
    creases cut where normals alone would split a box into its faces:
  concavity  C = f * lap(d) / d,   d = 1 / z  (inverse depth is affine in the pixel coordinates on
  any plane, so C = 0 on planes, C > 0 on a valley seen from the camera, C < 0 on a ridge);
  C is the change in slope (tan of the surface tilt) across a crease: dimensionless, independent of
  scene scale and image resolution. Creases are noisy on splat depth (they split objects), so they
  are used off the plane only with `off_plane_creases`.
Pixels with C > `concave_threshold` or a relative depth step > `jump_threshold` are boundaries;
regions are seeded by the connected interiors (boundaries dilated by `gap_close_px`, which bridges
small gaps; thin interiors that the dilation erases seed their own region) and grown back over the
boundary pixels by a watershed; blended pixels on an occluding contour go to the neighbour closest
in depth.

Levels (each level nests inside the previous one and covers it as completely as it can):
  0 whole objects: the support plane and the geometry regions above (colour felzenszwalb at
    `object_scale` without geometry)
  1 parts: colour (+ optional normals) felzenszwalb at `part_scale`, never crossing level-0 edges
  2 sub-parts: colour felzenszwalb at `subpart_scale`, never crossing level-1 edges
Colour is not smoothed across the parent level's edges, and one-pixel "ribbon" segments of blended
colour along an edge are dissolved into their neighbours. Pixels with alpha < `min_alpha` are -1 at
every level; segments smaller than
`min_segment_fraction` of the image become -1. A region that does not split again reappears at the
finer level under a new index.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage as ndi

from splatseg.segments.cache import SegmentsError, compact_labels
from splatseg.segments.geometry import Geometry, backproject, fit_support_plane, normals_from_depth, smooth_depth
from splatseg.types import Segments

ALGORITHM_VERSION = 3
"""Part of the model string; bump it whenever the default configuration's output changes
(1: creases-only level 0; 2: support plane + depth jumps, edge-aware normals, sigma 0.5;
3: level 0 built on confidently opaque pixels, blended edges grown back)."""

_LABEL_GAP = 1.0e4  # distance in the feature image between pixels of different parent segments


@dataclass(frozen=True)
class FelzenszwalbConfig:
    """Weights-free segments from colour and rendered geometry (scikit-image felzenszwalb)."""

    num_levels: int = 3
    """Number of levels to write (1 to 3): whole objects / parts / sub-parts."""
    object_scale: float = 3000.0
    """Felzenszwalb scale (0-255 colour units, at `scale_reference_pixels`) of level 0 when no geometry
    is given; larger = bigger segments."""
    part_scale: float = 1000.0
    """Felzenszwalb scale of level 1 (parts), on colour inside each level-0 segment."""
    subpart_scale: float = 300.0
    """Felzenszwalb scale of level 2 (sub-parts), on colour inside each level-1 segment."""
    scale_reference_pixels: int = 65536
    """Pixel count (H*W) at which the scales above apply; they grow linearly with H*W, so segments
    keep their relative size across resolutions (felzenszwalb's own scale is in pixels)."""
    sigma: float = 0.5
    """Gaussian smoothing (pixels) of the colour image before felzenszwalb."""
    luminance_weight: float = 0.5
    """Weight of brightness against chroma in the colour distance (1 = plain RGB distance; lower
    values make shading across an object's faces matter less than hue)."""
    part_normal_weight: float = 0.0
    """Weight of the rendered normals (unit vectors) next to colour in [0, 1] for levels 1-2; 0 = colour only."""
    min_segment_fraction: float = 0.002
    """Segments smaller than this fraction of the image's pixels are dropped (-1)."""
    min_alpha: float = 0.5
    """Pixels whose rendered opacity is below this are empty background: -1 at every level."""
    core_alpha: float = 0.9
    """Level-0 regions are built from pixels at least this opaque, so that half-transparent floaters
    (common in quick reconstructions: a white turntable, the backdrop) cannot bridge an object and
    its surroundings; less opaque pixels (down to `min_alpha`) then rejoin an adjacent region."""
    edge_grow_px: int = 1
    """... when within this many pixels of it and continuous in depth (blended object edges); farther
    ones stay -1 (no segment)."""
    jump_threshold: float = 0.04
    """Relative depth step between neighbouring pixels (|ln z1 - ln z2|) that counts as an object edge."""
    concave_threshold: float = 0.25
    """Concavity C = f * laplacian(1/z) / (1/z) (slope change across a crease, dimensionless) above
    which a crease separates objects (e.g. where an object stands on a table)."""
    concave_noise_factor: float = 4.0
    """Noise guard: while the robust standard deviation (1.4826 * MAD) of C over the view exceeds
    concave_threshold / concave_noise_factor, C is measured again with twice the smoothing and step
    (at most 3 times); 0 = never."""
    crease_step: int = 3
    """Step (pixels) of the second differences that measure C; larger = less noise-sensitive, coarser."""
    depth_smoothing: float = 1.5
    """Gaussian smoothing (pixels) of the inverse depth before measuring C; 0 = none."""
    gap_close_px: int = 2
    """Boundary dilation (pixels) when seeding level-0 regions: closes gaps up to about twice this."""
    support_plane: bool = True
    """Level 0 finds the view's dominant plane (a table, the ground, a turntable) by RANSAC and makes
    it one segment; the rest is split into objects by depth jumps (and creases). False = creases only."""
    plane_tolerance: float = 3.5
    """A pixel lies on the support plane when its distance to it is below this many pixel footprints
    (z / f: the size of one pixel at the point's depth; splat depth noise scales with it)."""
    plane_angle_deg: float = 30.0
    """... and its normal is within this many degrees of the plane's normal."""
    plane_min_fraction: float = 0.1
    """The plane is used only when at least this fraction of the valid pixels lie on it."""
    plane_iterations: int = 128
    """RANSAC hypotheses of each kind (planes through 3 pixels / through 1 pixel along its normal) on
    a fixed-seed subsample of the pixels."""
    normal_smoothing: float = 0.0
    """Gaussian smoothing (pixels) of the opacity-weighted depth before computing normals."""
    plane_convex_check: bool = True
    """Accept a plane only when what meets it without a depth step mostly rises on the camera's side
    (objects standing on it); a face of an object (a box top seen from above, a mug's base seen
    end-on) continues on its far side or meets nothing, and is rejected."""
    plane_attempts: int = 2
    """Planes tried in turn (each fit without the previous ones' pixels) until one passes the check."""
    normal_step: int = 1
    """Step (pixels) of the one-sided depth differences that give the normals (larger = less noise)."""
    off_plane_creases: bool = False
    """Also cut off-plane regions at concave creases (objects standing on objects)."""

    def model_name(self, with_geometry: bool) -> str:
        """The `model` string written to the cache: "felzenszwalb-rgbd-v<N>" / "felzenszwalb-rgb-v<N>"
        (N = `ALGORITHM_VERSION`), with "/<8 hex>" appended when any parameter differs from the
        defaults (so caches follow tuning)."""
        base = "felzenszwalb-rgbd" if with_geometry else "felzenszwalb-rgb"
        return f"{base}-v{ALGORITHM_VERSION}" + _config_digest(self)

    def check(self) -> None:
        if not 1 <= self.num_levels <= 3:
            raise SegmentsError(f"felzenszwalb num_levels must be 1, 2 or 3, got {self.num_levels}")
        if self.crease_step < 1:
            raise SegmentsError(f"felzenszwalb crease_step must be >= 1, got {self.crease_step}")
        if not 0 <= self.min_segment_fraction < 1:
            raise SegmentsError(f"felzenszwalb min_segment_fraction must be in [0, 1), got {self.min_segment_fraction}")


def _config_digest(cfg) -> str:
    """"" for a default config, else "/" + 8 hex digits of the non-default fields."""
    default = type(cfg)()
    changed = {f.name: getattr(cfg, f.name) for f in fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name)}
    if not changed:
        return ""
    return "/" + hashlib.sha1(repr(sorted(changed.items())).encode()).hexdigest()[:8]


class FelzenszwalbSource:
    """Callable mask source: `source(rgb, geometry=None) -> Segments` (see the module docstring)."""

    def __init__(self, config: FelzenszwalbConfig | None = None):
        self.config = config or FelzenszwalbConfig()
        self.config.check()

    def model_name(self, with_geometry: bool) -> str:
        return self.config.model_name(with_geometry)

    def __call__(self, rgb: np.ndarray, geometry: Geometry | None = None) -> Segments:
        return felzenszwalb_segments(rgb, geometry, self.config)


def felzenszwalb_segments(rgb: np.ndarray, geometry: Geometry | None = None, config: FelzenszwalbConfig | None = None) -> Segments:
    """Multi-level segments of one view; see the module docstring."""
    cfg = config or FelzenszwalbConfig()
    cfg.check()
    _check_rgb(rgb)
    H, W = rgb.shape[:2]
    min_pixels = max(1, int(np.ceil(cfg.min_segment_fraction * H * W)))
    size_factor = H * W / float(cfg.scale_reference_pixels)
    raw = colour_features(rgb, cfg.luminance_weight)
    colour = raw
    if cfg.sigma > 0:
        colour = ndi.gaussian_filter(raw, sigma=(cfg.sigma, cfg.sigma, 0), mode="reflect")

    if geometry is not None:
        geometry.check((H, W))
        valid = geometry.valid(cfg.min_alpha)
        core = geometry.valid(max(cfg.min_alpha, cfg.core_alpha))
        level0 = support_plane_regions(geometry, cfg, valid=core) if cfg.support_plane else geometry_regions(geometry, cfg, valid=core)
        if cfg.edge_grow_px > 0:  # blended edges (alpha between min_alpha and core_alpha) rejoin their region
            lz = np.where(valid, np.log(np.where(valid, np.asarray(geometry.depth, np.float64), 1.0)), 0.0)
            level0 = _propagate_continuous(level0, lz, valid & ~core, cfg.jump_threshold, max_iters=cfg.edge_grow_px)
        normals = None
        if cfg.part_normal_weight > 0:
            normals = cfg.part_normal_weight * normals_from_depth(np.asarray(geometry.depth, np.float64), np.asarray(geometry.K, np.float64), valid)
    else:
        valid = np.ones((H, W), bool)
        normals = None
        level0 = _felzenszwalb(colour, None, cfg.object_scale * size_factor, min_pixels)
    levels = [_drop_small(level0, valid, min_pixels)]
    radius = int(np.ceil(2 * cfg.sigma))
    for scale in (cfg.part_scale, cfg.subpart_scale)[: cfg.num_levels - 1]:
        parent = levels[-1]
        # No smoothing across the parent's edges: mixed colours there would form thin ring segments.
        feature = np.where(_near_edge(parent, radius)[..., None], raw, colour) if radius > 0 else colour
        if normals is not None:
            feature = np.concatenate([feature, normals], axis=-1)
        child = _nest(parent, _felzenszwalb(feature, parent, scale * size_factor, min_pixels))
        child = _absorb_thin(child, parent, raw)
        levels.append(_drop_small(child, valid, min_pixels))

    segmaps = np.stack(levels).astype(np.int32)
    offset = 0
    for level in range(segmaps.shape[0]):
        m = segmaps[level] >= 0
        segmaps[level][m] += offset
        offset = int(segmaps[level].max()) + 1 if m.any() else offset
    return Segments(segmaps=segmaps, model=cfg.model_name(geometry is not None))


def geometry_edges(geometry: Geometry, config: FelzenszwalbConfig | None = None, valid: np.ndarray | None = None,
                   concavity: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(jump bool [H, W], far bool [H, W], concavity float32 [H, W]) of one view.

    jump: a 4-neighbour has |ln z - ln z'| > jump_threshold (both sides of the step are marked);
    far: the pixel is the farther side of such a step. concavity: C = f * lap(d) / d with d = 1/z
    (smoothed), second differences of step `crease_step` along x (times fx) and y (times fy);
    C = 0 where not measurable, and everywhere when `concavity` is False (not computed).
    """
    cfg = config or FelzenszwalbConfig()
    if valid is None:
        valid = geometry.valid(cfg.min_alpha)
    z = np.asarray(geometry.depth, np.float64)
    K = np.asarray(geometry.K, np.float64)
    lz = np.where(valid, np.log(np.where(valid, z, 1.0)), 0.0)
    jump = np.zeros(z.shape, bool)
    far = np.zeros(z.shape, bool)
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        a, b = tuple(a), tuple(b)
        step = lz[a] - lz[b]
        big = (np.abs(step) > cfg.jump_threshold) & valid[a] & valid[b]
        jump[a] |= big
        jump[b] |= big
        far[a] |= big & (step > 0)
        far[b] |= big & (step < 0)

    if not concavity:
        return jump, far, np.zeros(z.shape, np.float32)
    d0 = np.where(valid, 1.0 / np.where(valid, z, 1.0), 0.0)
    smoothing, step = float(cfg.depth_smoothing), int(cfg.crease_step)
    for attempt in range(4):
        C = _concavity(d0, valid, K, step, smoothing)
        if cfg.concave_noise_factor <= 0 or attempt == 3 or not valid.any():
            break
        c = C[valid]
        noise = 1.4826 * float(np.median(np.abs(c - np.median(c))))
        if noise * cfg.concave_noise_factor <= cfg.concave_threshold:
            break
        smoothing, step = max(2.0 * smoothing, 1.0), 2 * step
    return jump, far, C.astype(np.float32)


def _concavity(d: np.ndarray, valid: np.ndarray, K: np.ndarray, k: int, smoothing: float) -> np.ndarray:
    """C = f * lap(d) / d from inverse depth d [H, W] (0 where invalid), smoothed within `valid`."""
    if smoothing > 0:
        num = ndi.gaussian_filter(d, smoothing, mode="nearest")
        den = ndi.gaussian_filter(valid.astype(np.float64), smoothing, mode="nearest")
        d = np.where(valid, num / np.maximum(den, 1e-12), 0.0)
    C = np.zeros(d.shape, np.float64)
    for axis, f in ((1, K[0, 0]), (0, K[1, 1])):
        n = d.shape[axis]
        if n <= 2 * k:
            continue
        c = [slice(None)] * 2
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        c[axis], lo[axis], hi[axis] = slice(k, n - k), slice(0, n - 2 * k), slice(2 * k, n)
        c, lo, hi = tuple(c), tuple(lo), tuple(hi)
        ok = valid[c] & valid[lo] & valid[hi]
        sec = d[lo] + d[hi] - 2.0 * d[c]
        C[c] += np.where(ok, f * sec / (k * np.maximum(d[c], 1e-30)), 0.0)
    return C


def support_plane(geometry: Geometry, config: FelzenszwalbConfig | None = None, valid: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(on bool [H, W], near bool [H, W], tolerance) for the view's support plane, or None.

    The dominant plane of the valid pixels (RANSAC, `fit_support_plane`) with at least
    `plane_min_fraction` of them on it; with `plane_convex_check` a plane that is the face of an
    object is rejected and the next plane is tried (up to `plane_attempts` in all). near: valid
    pixels within `tolerance` (relative: `plane_tolerance` / f) times their depth of the plane; on: those whose
    normal also agrees with the plane's."""
    cfg = config or FelzenszwalbConfig()
    if valid is None:
        valid = geometry.valid(cfg.min_alpha)
    if not valid.any():
        return None
    K = np.asarray(geometry.K, np.float64)
    z = np.where(valid, np.asarray(geometry.depth, np.float64), 0.0)
    zs = smooth_depth(z, valid, cfg.normal_smoothing, weight=geometry.alpha)
    nrm = normals_from_depth(zs, K, valid, edge_aware=True, step=cfg.normal_step).astype(np.float64)
    P = backproject(zs, K)
    Praw = backproject(z, K)
    lz = np.where(valid, np.log(np.where(valid, z, 1.0)), 0.0)
    tol = float(cfg.plane_tolerance) / float(0.5 * (K[0, 0] + K[1, 1]))
    cos_max = np.cos(np.radians(cfg.plane_angle_deg))
    candidates = valid.copy()
    for _ in range(max(1, cfg.plane_attempts)):
        plane = fit_support_plane(P, nrm, candidates, tol, cfg.plane_angle_deg, cfg.plane_iterations)
        if plane is None:
            return None
        m, c = plane
        rel = (Praw @ m + c) / np.maximum(z, 1e-12)
        near = valid & (np.abs(rel) < tol)
        on = near & (np.abs(nrm @ m) > cos_max)
        if on.sum() < cfg.plane_min_fraction * valid.sum():
            return None
        min_pixels = max(1, int(np.ceil(cfg.min_segment_fraction * valid.size)))
        if not cfg.plane_convex_check or _supports_objects(on, valid, rel, lz, cfg.jump_threshold, min_pixels):
            return on, near, tol
        candidates &= ~near
    return None


def _supports_objects(on: np.ndarray, valid: np.ndarray, rel: np.ndarray, lz: np.ndarray, jump: float,
                      min_pixels: int) -> bool:
    """True when the regions meeting the plane without a depth step mostly rise on the camera's
    side (rel > 0), as objects standing on a support do. A face of an object continues away from
    the camera (a box top seen from above) or meets nothing without a step (a mug's base seen
    end-on, surrounded by its own rim and the background behind it): False.

    Regions: connected components of the valid pixels off the plane (not `near`) with at least
    `min_pixels` pixels (smaller ones are depth noise) and a 4-neighbour in `on` within `jump` in log
    depth; each counts with its pixel count on the side of its median distance. Off the plane means
    not `on`: an object's base lies within the distance tolerance but its normal disagrees."""
    off = valid & ~on
    comp, n = ndi.label(off)
    if n == 0:
        return False
    on8 = on.astype(np.int8)
    contact = np.zeros(on.shape, bool)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        contact |= off & (_shift(on8, dy, dx, 0) > 0) & (np.abs(_shift(lz, dy, dx, np.inf) - lz) < jump)
    touching = np.zeros(n + 1, bool)
    touching[comp[contact]] = True
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    touching[0] = False
    ks = np.flatnonzero(touching & (sizes >= min_pixels))
    if ks.size == 0:
        return False
    side = np.asarray(ndi.median(rel, labels=comp, index=ks)) > 0
    return int(sizes[ks][side].sum()) > int(sizes[ks][~side].sum())


def support_plane_regions(geometry: Geometry, config: FelzenszwalbConfig | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """int64 [H, W] level-0 labels: the support plane as one segment, the rest split by depth jumps
    (and concave creases with `off_plane_creases`); `geometry_regions` when there is no plane.

    Pixels within the plane's distance tolerance are the plane, except where an object meets it:
    objects grow into the adjacent near-plane pixels whose normal disagrees with the plane's (the
    bottom of an object's side, lower than the tolerance), at most `plane_tolerance` + 1 pixels far, so
    normal noise on the plane can only cost a band of that width."""
    cfg = config or FelzenszwalbConfig()
    if valid is None:
        valid = geometry.valid(cfg.min_alpha)
    found = support_plane(geometry, cfg, valid)
    if found is None:
        return geometry_regions(geometry, cfg, valid)
    on, near, tol = found
    labels = geometry_regions(geometry, cfg, valid & ~near, creases=cfg.off_plane_creases)
    lz = np.where(valid, np.log(np.where(valid, np.asarray(geometry.depth, np.float64), 1.0)), 0.0)
    band = int(np.ceil(cfg.plane_tolerance)) + 1
    labels = _propagate_continuous(labels, lz, near & ~on, cfg.jump_threshold, max_iters=band)
    n = int(labels.max()) + 1
    labels[near & (labels < 0)] = n
    # Pixels still unlabelled (blended depth on an occluding contour, between an object and the
    # plane behind it) join the neighbour closest in depth.
    labels = _propagate_continuous(labels, lz, valid, np.inf, max_iters=4)
    return compact_labels(labels)


def geometry_regions(geometry: Geometry, config: FelzenszwalbConfig | None = None, valid: np.ndarray | None = None,
                     creases: bool = True) -> np.ndarray:
    """int64 [H, W] level-0 labels (0..n-1, -1 = none) of the `valid` pixels from depth jumps and (with
    `creases`) concave creases: seeds are the interiors between them, grown back by a watershed."""
    cfg = config or FelzenszwalbConfig()
    from skimage.segmentation import watershed

    if valid is None:
        valid = geometry.valid(cfg.min_alpha)
    H, W = valid.shape
    min_pixels = max(1, int(np.ceil(cfg.min_segment_fraction * H * W)))
    jump, far, C = geometry_edges(geometry, cfg, valid, concavity=creases)
    threshold = cfg.concave_threshold
    boundary = jump | (C > threshold) | ~valid
    interior = ~boundary
    if cfg.gap_close_px > 0:
        r = int(cfg.gap_close_px)
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        interior = ~ndi.binary_dilation(boundary, structure=(xx**2 + yy**2) <= r * r)
    markers, n = ndi.label(interior & valid)
    if n:
        sizes = np.bincount(markers.ravel(), minlength=n + 1)
        small = sizes < max(1, min_pixels // 2)
        small[0] = False
        markers[small[markers]] = 0
    if cfg.gap_close_px > 0:
        # Thin regions (a sliver of an object seen past another) vanish under the dilation: the
        # undilated interiors that hold no seed become seeds of their own.
        thin, m = ndi.label(~boundary & valid)
        if m:
            seeded = np.zeros(m + 1, bool)
            seeded[thin[markers > 0]] = True
            sizes = np.bincount(thin.ravel(), minlength=m + 1)
            new = ~seeded & (sizes >= max(1, min_pixels // 2))
            new[0] = False
            if new.any():
                keep = new[thin]
                markers = markers.copy()
                markers[keep] = thin[keep] + markers.max()
    # Flooding order: the near side of a depth step and the inside of creases first, so the regions
    # meet on the far side of steps and on the crest of concavity.
    cost = np.clip(C / max(threshold, 1e-12), 0.0, None) + far * 10.0
    # The far side of a depth step belongs to the surface behind: flood without it, then hand each
    # far-side pixel to a depth-continuous neighbour.
    labels = watershed(cost, markers=markers, mask=valid & ~far).astype(np.int64) - 1  # 0 -> -1
    lz = np.where(valid, np.log(np.where(valid, np.asarray(geometry.depth, np.float64), 1.0)), 0.0)
    labels = _propagate_continuous(labels, lz, valid & far, cfg.jump_threshold)
    return compact_labels(labels)


def _propagate_continuous(labels: np.ndarray, lz: np.ndarray, todo: np.ndarray, threshold: float, max_iters: int = 16) -> np.ndarray:
    """Give unlabelled pixels in `todo` the label of the 4-neighbour with the closest log depth, among
    labelled neighbours within `threshold`; repeated so labels spread along continuous surfaces."""
    labels = labels.copy()
    H, W = labels.shape
    for _ in range(max_iters):
        pending = todo & (labels < 0)
        if not pending.any():
            break
        best = np.full((H, W), np.inf)
        best_label = np.full((H, W), -1, np.int64)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nl = np.full((H, W), -1, np.int64)
            nz = np.zeros((H, W))
            ys = slice(max(dy, 0), H + min(dy, 0))
            yd = slice(max(-dy, 0), H + min(-dy, 0))
            xs = slice(max(dx, 0), W + min(dx, 0))
            xd = slice(max(-dx, 0), W + min(-dx, 0))
            nl[yd, xd] = labels[ys, xs]
            nz[yd, xd] = lz[ys, xs]
            gap = np.abs(nz - lz)
            better = pending & (nl >= 0) & (gap <= threshold) & (gap < best)
            best[better] = gap[better]
            best_label[better] = nl[better]
        if not (best_label >= 0).any():
            break
        labels = np.where(best_label >= 0, best_label, labels)
    return labels


# ----------------------------------------------------------------------------- helpers


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SegmentsError(
            f"expected an RGB image as uint8 [H, W, 3], got {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}"
        )


def colour_features(rgb: np.ndarray, luminance_weight: float = 0.5) -> np.ndarray:
    """float64 [H, W, 4]: chroma (rgb - mean, 3 channels) and sqrt(3) * mean * luminance_weight, from
    rgb in [0, 1]. With weight 1 the Euclidean distance equals the plain RGB distance."""
    x = rgb.astype(np.float64) / 255.0
    y = x.mean(axis=-1, keepdims=True)
    return np.concatenate([x - y, np.sqrt(3.0) * luminance_weight * y], axis=-1)


def _felzenszwalb(feature: np.ndarray, parent: np.ndarray | None, scale: float, min_pixels: int) -> np.ndarray:
    """felzenszwalb on `feature` [H, W, C] (smoothing already applied); with `parent` labels
    [H, W] (-1 allowed) the graph edges between different parents are made prohibitively costly."""
    from skimage.segmentation import felzenszwalb

    img = feature
    if parent is not None:
        img = np.concatenate([feature, (parent.astype(np.float64) * _LABEL_GAP)[..., None]], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "image with third dimension of 4..."
        return felzenszwalb(img, scale=scale, sigma=0.0, min_size=int(min_pixels), channel_axis=-1).astype(np.int64)


def _absorb_thin(labels: np.ndarray, parent: np.ndarray, feature: np.ndarray, core_fraction: float = 0.2) -> np.ndarray:
    """Dissolve ribbon segments (the blended pixels along a colour edge: less than `core_fraction`
    of the segment survives a 1-pixel erosion) into the neighbours of the same parent whose colour
    is closest, pixel by pixel."""
    n = int(labels.max()) + 1
    if n == 0:
        return labels
    m = labels >= 0
    eroded = m & (labels == _shift(labels, 1, 0)) & (labels == _shift(labels, -1, 0)) & (labels == _shift(labels, 0, 1)) & (labels == _shift(labels, 0, -1))
    area = np.bincount(labels[m], minlength=n)
    core = np.bincount(labels[eroded], minlength=n)
    thin = core < core_fraction * area
    if not thin.any():
        return labels
    todo = m & thin[np.maximum(labels, 0)]
    out = np.where(todo, -1, labels)
    H, W = labels.shape
    for _ in range(64):
        pending = todo & (out < 0)
        if not pending.any():
            break
        best = np.full((H, W), np.inf)
        best_label = np.full((H, W), -1, np.int64)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nl = _shift(out, dy, dx)
            np_ = _shift(parent, dy, dx)
            nf = _shift(feature, dy, dx)
            dist = np.sum((nf - feature) ** 2, axis=-1)
            better = pending & (nl >= 0) & (np_ == parent) & (dist < best)
            best[better] = dist[better]
            best_label[better] = nl[better]
        if not (best_label >= 0).any():
            break
        out = np.where(best_label >= 0, best_label, out)
    out = np.where(todo & (out < 0), labels, out)  # a ribbon with no other neighbour stays
    return compact_labels(out)


def _shift(a: np.ndarray, dy: int, dx: int, fill=-1) -> np.ndarray:
    """out[y, x] = a[y + dy, x + dx] (fill outside)."""
    out = np.full(a.shape, fill, a.dtype)
    H, W = a.shape[:2]
    ys, yd = slice(max(dy, 0), H + min(dy, 0)), slice(max(-dy, 0), H + min(-dy, 0))
    xs, xd = slice(max(dx, 0), W + min(dx, 0)), slice(max(-dx, 0), W + min(-dx, 0))
    out[yd, xd] = a[ys, xs]
    return out


def _near_edge(labels: np.ndarray, radius: int) -> np.ndarray:
    """bool [H, W]: pixels within `radius` (Chebyshev) of a pixel with a different label."""
    size = 2 * radius + 1
    return ndi.maximum_filter(labels, size=size, mode="nearest") != ndi.minimum_filter(labels, size=size, mode="nearest")


def _nest(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
    """Labels of the intersections parent x child (so the finer level nests in the coarser one);
    -1 where parent is -1."""
    key = (parent.astype(np.int64) + 1) * (int(child.max()) + 1) + child
    out = np.unique(key, return_inverse=True)[1].reshape(parent.shape).astype(np.int64)
    out[parent < 0] = -1
    return compact_labels(out)


def _drop_small(labels: np.ndarray, valid: np.ndarray, min_pixels: int) -> np.ndarray:
    """-1 outside `valid` and for segments with fewer than min_pixels pixels; compact 0..n-1."""
    out = np.where(valid, labels, -1)
    if out.max() < 0:
        return out
    sizes = np.bincount(out[out >= 0].ravel())
    small = sizes < min_pixels
    out = np.where((out >= 0) & small[np.maximum(out, 0)], -1, out)
    return compact_labels(out)
