"""2D segments: the npz cache, the weights-free felzenszwalb source, SAM (tiny random model through
the real automatic mask generator), compute_segments and the SAM failure simulator."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_sam
from scipy import ndimage as ndi

from splatseg.segments.cache import SegmentsError, read_meta, read_segments, resize_nearest, segments_dir, write_segments
from splatseg.segments.compute import compute_segments, make_source
from splatseg.segments.felzenszwalb import ALGORITHM_VERSION, FelzenszwalbConfig, FelzenszwalbSource, felzenszwalb_segments, geometry_regions, support_plane
from splatseg.segments.geometry import Geometry, backproject, fit_support_plane, normals_from_depth
from splatseg.segments.noisy import NoiseConfig, simulate_segments
from splatseg.segments.sam import SAM_URLS, SamConfig, SamSource, mask_hierarchy, masks_to_levels, resolve_checkpoint
from splatseg.segments.synthetic import render_boxes_scene
from splatseg.types import Segments


# ----------------------------------------------------------------------------- helpers


def best_iou(segmap: np.ndarray, mask: np.ndarray) -> float:
    ids = np.unique(segmap[mask])
    ids = ids[ids >= 0]
    return max([float(((segmap == i) & mask).sum() / ((segmap == i) | mask).sum()) for i in ids] or [0.0])


def check_contract(seg: Segments) -> None:
    """FORMATS.md: int32 [L, H, W], values >= -1, indices unique across levels, tables of size M."""
    s = seg.segmaps
    assert s.dtype == np.int32 and s.ndim == 3
    assert s.min() >= -1
    seen: set[int] = set()
    for level in s:
        ids = set(np.unique(level[level >= 0]).tolist())
        assert not ids & seen, "indices must be unique across levels"
        seen |= ids
    M = seg.num_segments
    if seg.scores is not None:
        assert seg.scores.shape == (M,)
    if seg.embeddings is not None:
        assert seg.embeddings.shape[0] == M


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when label maps a and b are equal up to a bijective renumbering (-1 fixed)."""
    if not np.array_equal(a < 0, b < 0):
        return False
    m = a >= 0
    pairs = np.unique(np.stack([a[m], b[m]], 1), axis=0)
    return len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))


# ----------------------------------------------------------------------------- cache


def test_cache_roundtrip_atomic_and_meta(tmp_path):
    rng = np.random.default_rng(0)
    segmaps = np.full((2, 6, 8), -1, np.int32)
    segmaps[0, :, :4] = 0
    segmaps[0, :, 4:] = 1
    segmaps[1, :3, :4] = 2
    segmaps[1, 3:, :4] = 4  # index 3 has no pixels: allowed
    emb = rng.normal(size=(5, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    seg = Segments(segmaps=segmaps, embeddings=emb.astype(np.float16), scores=np.arange(5, dtype=np.float32), model="unit-test")
    path = write_segments(tmp_path / "segments" / "img.npz", seg, embedding_model="open_clip:X/y")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["img.npz"]  # no temp files left
    back = read_segments(path)
    assert back.segmaps.dtype == np.int32 and np.array_equal(back.segmaps, segmaps)
    assert back.embeddings.dtype == np.float32 and np.allclose(back.embeddings, emb, atol=1e-3)
    assert np.array_equal(back.scores, np.arange(5)) and back.model == "unit-test"
    assert read_meta(path) == {"model": "unit-test", "embedding_model": "open_clip:X/y", "has_embeddings": True}
    with np.load(path) as z:  # the public format, read without splatseg
        assert z["segmaps"].dtype == np.int32 and z["embeddings"].dtype == np.float16 and str(z["model"]) == "unit-test"
    assert segments_dir(tmp_path) == tmp_path / "segments"


def test_cache_accepts_hw_empty_and_resizes(tmp_path):
    np.savez(tmp_path / "a.npz", segmaps=np.array([[0, 1], [1, -1]], np.int64))
    seg = read_segments(tmp_path / "a.npz", size=(4, 2))  # (W, H)
    assert seg.segmaps.shape == (1, 2, 4) and seg.segmaps.dtype == np.int32
    assert seg.segmaps[0].tolist() == [[0, 0, 1, 1], [1, 1, -1, -1]]
    assert seg.model == "unknown" and seg.embeddings is None
    down = resize_nearest(np.arange(16, dtype=np.int32).reshape(1, 4, 4), (2, 2))
    assert down[0].tolist() == [[5, 7], [13, 15]]  # pixel centres (1.0, 3.0) of the 4x4 grid
    np.savez(tmp_path / "empty.npz", segmaps=np.full((3, 5, 5), -1, np.int32), embeddings=np.zeros((0, 4), np.float32))
    empty = read_segments(tmp_path / "empty.npz")
    assert empty.num_segments == 0 and empty.embeddings.shape == (0, 4)


@pytest.mark.parametrize(
    "arrays, needle",
    [
        (dict(embeddings=np.zeros((1, 2), np.float32)), "missing 'segmaps'"),
        (dict(segmaps=np.zeros((1, 1, 2, 2), np.int32)), "[L, H, W]"),
        (dict(segmaps=np.zeros((2, 2), np.float32)), "integer dtype"),
        (dict(segmaps=np.array([[0, -2]], np.int32)), "< -1"),
        (dict(segmaps=np.array([[[0, 1]], [[1, 2]]], np.int32)), "unique across levels"),
        (dict(segmaps=np.array([[0, 1]], np.int32), embeddings=np.zeros((3, 4), np.float32)), "3 rows but segmaps.max()+1 = 2"),
        (dict(segmaps=np.array([[0, 1]], np.int32), embeddings=np.array([[0, np.nan], [1, 0]], np.float32)), "NaN"),
        (dict(segmaps=np.array([[0, 1]], np.int32), scores=np.zeros(5, np.float32)), "'scores'"),
    ],
)
def test_cache_rejects_bad_imports_with_one_line(tmp_path, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SegmentsError) as err:
        read_segments(path)
    msg = str(err.value)
    assert needle in msg and str(path) in msg and "\n" not in msg
    assert isinstance(err.value, ValueError)


def test_cache_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(SegmentsError, match="no such segments file"):
        read_segments(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SegmentsError, match="not a readable .npz"):
        read_segments(tmp_path / "junk.npz")


# ----------------------------------------------------------------------------- geometry


def test_normals_of_planes():
    H, W, f = 40, 50, 60.0
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    n = normals_from_depth(np.full((H, W), 2.0, np.float32), K)
    assert np.allclose(n, [0, 0, -1], atol=1e-5)
    # Plane through (0, 0, 3) with unit normal m: z = 3 / (m . ray).
    m = np.array([0.0, -0.6, -0.8])
    u = np.arange(W) + 0.5
    v = np.arange(H) + 0.5
    ray = np.stack(np.broadcast_arrays((u[None] - W / 2) / f, (v[:, None] - H / 2) / f, np.ones((H, W))), -1)
    depth = (-2.4 / (ray @ m)).astype(np.float32)  # m . p = -2.4 for p = (0, 0, 3)
    n = normals_from_depth(depth, K)
    assert np.allclose(n[2:-2, 2:-2], m, atol=1e-3)
    valid = np.ones((H, W), bool)
    valid[:, :10] = False
    assert np.all(normals_from_depth(depth, K, valid)[:, :10] == 0)


# ----------------------------------------------------------------------------- felzenszwalb


@pytest.fixture(scope="module")
def scene():
    return render_boxes_scene(seed=0)


@pytest.fixture(scope="module")
def fz(scene):
    return felzenszwalb_segments(scene.rgb, scene.geometry)


def test_felzenszwalb_contract(scene, fz):
    check_contract(fz)
    assert fz.model == f"felzenszwalb-rgbd-v{ALGORITHM_VERSION}" and fz.num_levels == 3
    assert fz.segmaps.shape[1:] == scene.rgb.shape[:2]
    empty = scene.geometry.alpha < 0.5
    assert empty.any() and np.all(fz.segmaps[:, empty] == -1)
    min_pixels = FelzenszwalbConfig().min_segment_fraction * empty.size
    ids, counts = np.unique(fz.segmaps[fz.segmaps >= 0], return_counts=True)
    assert counts.min() >= min_pixels
    # Each finer segment lies inside one coarser segment.
    for level in (1, 2):
        fine, coarse = fz.segmaps[level], fz.segmaps[level - 1]
        for i in np.unique(fine[fine >= 0]):
            assert len(np.unique(coarse[fine == i])) == 1


def test_felzenszwalb_level0_separates_objects(scene, fz):
    """Whole objects at level 0: the ground and both boxes, each its own segment (measured 0.98-0.999)."""
    for obj in (0, 1, 2):
        assert best_iou(fz.segmaps[0], scene.object_ids == obj) >= 0.85, obj
    # Colour alone cannot: the two-colour box is never one segment (the reason for geometry).
    colour_only = felzenszwalb_segments(scene.rgb, None)
    assert colour_only.model == f"felzenszwalb-rgb-v{ALGORITHM_VERSION}"
    check_contract(colour_only)
    assert best_iou(colour_only.segmaps[0], scene.object_ids == 1) < 0.7


def test_felzenszwalb_finer_levels_split_the_two_colour_box(scene, fz):
    halves = [scene.part_ids == 0, scene.part_ids == 1]
    for half in halves:
        assert best_iou(fz.segmaps[1], half) >= 0.8  # measured 0.94 / 0.97
    box = scene.object_ids == 1
    for level in (1, 2):
        s = fz.segmaps[level]
        for i in np.unique(s[box & (s >= 0)]):
            inside = s == i
            assert max((inside & halves[0]).sum(), (inside & halves[1]).sum()) >= 0.9 * inside.sum()


def test_felzenszwalb_config_and_source(scene):
    assert FelzenszwalbConfig().model_name(True) == f"felzenszwalb-rgbd-v{ALGORITHM_VERSION}"
    tuned = FelzenszwalbConfig(part_scale=123.0, num_levels=2)
    assert tuned.model_name(True).startswith(f"felzenszwalb-rgbd-v{ALGORITHM_VERSION}/") and tuned.model_name(True) != FelzenszwalbConfig(part_scale=124.0).model_name(True)
    seg = FelzenszwalbSource(tuned)(scene.rgb, scene.geometry)
    assert seg.num_levels == 2
    with pytest.raises(SegmentsError, match="uint8"):
        felzenszwalb_segments(scene.rgb.astype(np.float32), None)
    with pytest.raises(SegmentsError, match="num_levels"):
        FelzenszwalbSource(FelzenszwalbConfig(num_levels=5))
    with pytest.raises(ValueError, match="image size"):
        felzenszwalb_segments(scene.rgb, Geometry(scene.geometry.depth[1:], scene.geometry.alpha[1:], scene.geometry.K))


# ----------------------------------------------------------------------------- level 0 on the built-in tabletop


@pytest.fixture(scope="module")
def tabletop():
    """6 views of the built-in tabletop (`splatseg.data.synthetic`, seed 1, its default 192 x 144):
    (rgb, geometry rendered from the splats exactly as `splatseg/train/segments_stage.py` does,
    object labels, part labels) per view, and the scene (part names, part -> object)."""
    import torch

    from splatseg.data.synthetic import SyntheticConfig, build_scene, render_with_labels
    from splatseg.render import render

    scene = build_scene(SyntheticConfig(seed=1, num_cameras=6))
    p = scene.splats.torch_params()
    cams = scene.cameras
    views = []
    for i, rgb, objects, parts in render_with_labels(scene):
        with torch.no_grad():
            out = render(p["means"], p["quats"], p["scales"], p["opacities"], p["means"].new_zeros(p["means"].shape[0], 1),
                         torch.from_numpy(cams.viewmats[i : i + 1]).float(), torch.from_numpy(cams.Ks[i : i + 1]).float(),
                         int(cams.widths[i]), int(cams.heights[i]))
        geometry = Geometry(depth=out.depths[0, ..., 0].numpy(), alpha=out.alphas[0, ..., 0].numpy(), K=cams.Ks[i].astype(np.float32))
        views.append(((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), geometry, objects, parts))
    return views, scene


def _visible(mask: np.ndarray) -> bool:
    return mask.sum() >= FelzenszwalbConfig().min_segment_fraction * mask.size


def test_level0_separates_tabletop_objects_from_the_table(tabletop):
    """The reported bug: level 0 merged the objects standing on the table with it (box, mug, block:
    best IoU 0.35-0.57, merged in 50-78 % of the views). Each object and the table is now one
    segment (measured here 0.93-0.99; scripts/eval_segments.py on 2 x 40 views: IoU >= 0.8 in
    every view, mean 0.97), and no segment holds more than 30 % of an object and as many table pixels."""
    views, _ = tabletop
    for rgb, geometry, objects, _ in views:
        s0 = felzenszwalb_segments(rgb, geometry).segmaps[0]
        table = objects == 0
        for k in range(6):
            mask = objects == k
            if not _visible(mask):
                continue
            assert best_iou(s0, mask) >= 0.85, k
            if k > 0:
                for i in np.unique(s0[mask & (s0 >= 0)]):
                    both = min(((s0 == i) & mask).sum(), ((s0 == i) & table).sum())
                    assert both <= 0.3 * mask.sum(), k


def test_level1_splits_the_two_colour_tabletop_objects(tabletop):
    """Parts at level 1: box top / bottom, mug body / handle, lamp base / shade (measured 0.70-0.99
    here, the box's thin bottom band lowest; >= 0.8 in 97 % of 2 x 40 views)."""
    views, scene = tabletop
    multi = [k for k, o in enumerate(scene.part_object) if scene.part_object.count(o) > 1]
    found = []
    for rgb, geometry, _, parts in views:
        s1 = felzenszwalb_segments(rgb, geometry).segmaps[1]
        found += [best_iou(s1, parts == k) >= 0.8 for k in multi if _visible(parts == k)]
    assert len(found) >= 30 and np.mean(found) >= 0.85


def test_level0_tolerates_depth_noise(tabletop):
    """1 % multiplicative depth noise (correlated over ~1 pixel, as a reconstruction's bumps):
    objects and table stay whole (measured >= 0.85; >= 0.99 of 2 x 40 views at IoU >= 0.8)."""
    from scipy import ndimage as ndi

    views, _ = tabletop
    rng = np.random.default_rng(0)
    for rgb, geometry, objects, _ in views[:3]:
        noise = ndi.gaussian_filter(rng.normal(size=geometry.depth.shape), 1.0)
        noisy = Geometry((geometry.depth * np.exp(0.01 * noise / noise.std())).astype(np.float32), geometry.alpha, geometry.K)
        s0 = felzenszwalb_segments(rgb, noisy).segmaps[0]
        for k in range(6):
            if _visible(objects == k):
                assert best_iou(s0, objects == k) >= 0.8, k


def test_support_plane_is_not_an_object_face():
    """Close above the big box its top face is the largest plane; the surfaces meeting it without a
    depth step (the box's sides) continue on its far side, so it is rejected and the ground is the
    support (measured 0.99 / 0.995; taking the box top instead gives 0.77 / 0.83)."""
    view = render_boxes_scene(seed=0, eye=(-0.3, -0.1, 1.25), target=(-0.5, 0.25, 0.55), fov_deg=65.0)
    found = support_plane(view.geometry)
    assert found is not None
    on = found[0]
    assert (on & (view.object_ids == 0)).sum() >= 0.95 * on.sum()
    s0 = felzenszwalb_segments(view.rgb, view.geometry).segmaps[0]
    assert best_iou(s0, view.object_ids == 0) >= 0.95 and best_iou(s0, view.object_ids == 1) >= 0.95
    unchecked = felzenszwalb_segments(view.rgb, view.geometry, FelzenszwalbConfig(plane_convex_check=False)).segmaps[0]
    assert best_iou(unchecked, view.object_ids == 0) < 0.9


def test_level0_keeps_a_thin_sliver():
    """A 3-pixel strip between two depth steps (an object seen past another) has no interior once
    the step pixels are dilated; the jump regions used off the support plane still give it its own
    segment (it was -1 before)."""
    H = W = 60
    K = np.array([[60.0, 0, 30], [0, 60.0, 30], [0, 0, 1]])
    depth = np.full((H, W), 2.0, np.float32)
    depth[:, 30:33] = 2.5
    depth[:, 33:] = 3.0
    labels = geometry_regions(Geometry(depth, np.ones((H, W), np.float32), K), creases=False)
    strip = np.zeros((H, W), bool)
    strip[:, 30:33] = True
    assert best_iou(labels, strip) >= 0.9
    assert best_iou(labels, np.arange(W)[None, :].repeat(H, 0) < 30) >= 0.9


def test_edge_aware_normals_and_plane_fit():
    H, W, f = 40, 60, 50.0
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    depth = np.full((H, W), 2.0)
    depth[:, 30:] = 3.0  # a depth step: central differences tilt the normals beside it
    central = normals_from_depth(depth, K)
    aware = normals_from_depth(depth, K, edge_aware=True)
    assert np.allclose(aware, [0, 0, -1], atol=1e-6)
    assert not np.allclose(central[:, 29:31], [0, 0, -1], atol=0.1)
    assert np.allclose(normals_from_depth(depth, K, edge_aware=True, step=3), [0, 0, -1], atol=1e-6)
    # RANSAC: a tilted plane with 30 % of the pixels replaced by clutter in front of it.
    m = np.array([0.0, -0.6, -0.8])
    u, v = np.arange(W) + 0.5, np.arange(H) + 0.5
    ray = np.stack(np.broadcast_arrays((u[None] - W / 2) / f, (v[:, None] - H / 2) / f, np.ones((H, W))), -1)
    depth = -2.4 / (ray @ m)
    rng = np.random.default_rng(0)
    clutter = rng.random((H, W)) < 0.3
    depth[clutter] *= rng.uniform(0.5, 0.9, clutter.sum())
    P = backproject(depth, K)
    normals = normals_from_depth(depth, K, edge_aware=True).astype(np.float64)
    normal, offset = fit_support_plane(P, normals, np.ones((H, W), bool), 0.01, 30.0)
    assert np.dot(normal, m) > np.cos(np.radians(1.0)) and offset == pytest.approx(2.4, rel=1e-3)
    # A plane holding only 15 % of the pixels (the bottom rows; a bumpy surface in front of the
    # rest) is still found: point + normal hypotheses do not need 3 lucky pixels.
    depth = -2.4 / (ray @ m)
    yy, xx = np.mgrid[:H, :W]
    depth[: int(0.85 * H)] = (1.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 4.0))[: int(0.85 * H)]
    normals = normals_from_depth(depth, K, edge_aware=True).astype(np.float64)
    normal, offset = fit_support_plane(backproject(depth, K), normals, np.ones((H, W), bool), 0.01, 30.0)
    assert np.dot(normal, m) > np.cos(np.radians(1.0)) and offset == pytest.approx(2.4, rel=1e-3)


def test_model_string_follows_every_field():
    base = FelzenszwalbConfig()
    assert base.model_name(False) == f"felzenszwalb-rgb-v{ALGORITHM_VERSION}"
    names = {FelzenszwalbConfig(plane_tolerance=0.03).model_name(True), FelzenszwalbConfig(support_plane=False).model_name(True),
             FelzenszwalbConfig(plane_convex_check=False).model_name(True), FelzenszwalbConfig(normal_step=2).model_name(True)}
    assert len(names) == 4 and all(n.startswith(f"felzenszwalb-rgbd-v{ALGORITHM_VERSION}/") for n in names)


# ----------------------------------------------------------------------------- SAM


def _disk(H, W, cy, cx, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_sam_hierarchy_to_levels():
    H, W = 40, 60
    A = np.zeros((H, W), bool)
    A[5:35, 5:30] = True  # object
    A1 = np.zeros((H, W), bool)
    A1[5:20, 5:30] = True  # its two parts (cover it except rows 20-22)
    A2 = np.zeros((H, W), bool)
    A2[23:35, 5:30] = True
    B = _disk(H, W, 10, 45, 6)  # a separate object without parts
    C = np.zeros((H, W), bool)
    C[25:38, 35:55] = True  # C and D overlap; neither is 90 % inside the other
    D = np.zeros((H, W), bool)
    D[30:40, 45:60] = True
    masks = np.stack([A1, B, A, C, A2, D])
    scores = np.array([0.91, 0.92, 0.93, 0.94, 0.95, 0.96], np.float32)
    parent = mask_hierarchy(masks)
    assert parent.tolist() == [2, -1, -1, -1, 2, -1]
    segmaps, seg_scores = masks_to_levels(masks, scores, num_levels=3)
    check_contract(Segments(segmaps=segmaps, scores=seg_scores))

    def shows(level, mask, score, exact=True):
        ids = np.unique(segmaps[level][mask])
        assert len(ids) == 1 and ids[0] >= 0, (level, ids)
        assert seg_scores[ids[0]] == pytest.approx(score)
        if exact:
            assert np.array_equal(segmaps[level] == ids[0], mask)
        return ids[0]

    shows(0, A, 0.93)
    shows(0, B, 0.92)
    shows(0, D, 0.96)  # smaller D overwrites larger C where they overlap
    shows(0, C & ~D, 0.94)
    for level in (1, 2):
        shows(level, A1, 0.91)
        shows(level, A2, 0.95)
        shows(level, B, 0.92)  # a leaf propagates to finer levels under a new index
        shows(level, D, 0.96)
        assert np.all(segmaps[level][20:23, 5:30] == -1)  # A itself is not repeated at the part level
    assert shows(1, B, 0.92) != shows(2, B, 0.92) != shows(0, B, 0.92)
    # Deeper than L-1: the deepest mask wins at the last level.
    nest = np.stack([_disk(H, W, 20, 30, r) for r in (18, 14, 10, 6)])
    s2, _ = masks_to_levels(nest, None, num_levels=2)
    assert np.array_equal(s2[1] == s2[1][20, 30], nest[3]) and len(np.unique(s2[1][s2[1] >= 0])) == 3
    # Tiny remainders are dropped.
    s3, sc3 = masks_to_levels(np.stack([_disk(H, W, 20, 30, 10), _disk(H, W, 20, 30, 9.5)]), None, 1, min_pixels=50)
    assert len(sc3) == 1




def test_sam_tiny_model_through_automatic_mask_generator():
    cfg = SamConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.95, min_segment_fraction=0.0)
    source = SamSource(cfg, model=tiny_sam())
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    anns = source.generator.generate(rgb)
    assert len(anns) > 0
    seg = source(rgb)
    check_contract(seg)
    assert seg.segmaps.shape == (3, 48, 64) and seg.num_segments > 0
    assert seg.model.startswith("sam-vit_h/")  # non-default generator settings are part of the name
    assert np.all((seg.scores >= min(a["predicted_iou"] for a in anns) - 1e-6) & (seg.scores <= max(a["predicted_iou"] for a in anns) + 1e-6))
    again = SamSource(cfg, model=tiny_sam())(rgb)
    assert np.array_equal(again.segmaps, seg.segmaps)
    with pytest.raises(SegmentsError, match="uint8"):
        source(rgb.astype(np.float32))
    with pytest.raises(SegmentsError, match=r"\[H, W, 3\]"):
        source(rgb[..., :2].copy())
    assert SamConfig().model_name() == "sam-vit_h" and SamConfig(model_type="vit_b").model_name() == "sam-vit_b"


def test_sam_checkpoint_download_failure_is_one_line(tmp_path, monkeypatch):
    import torch.hub

    def offline(url, dst, *args, **kwargs):
        Path(dst).write_bytes(b"partial")
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("SPLATSEG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SegmentsError) as err:
        resolve_checkpoint("vit_b")
    msg = str(err.value)
    expected = tmp_path / "cache" / "sam" / "sam_vit_b_01ec64.pth"
    assert "\n" not in msg and SAM_URLS["vit_b"] in msg and str(expected) in msg and "--sam-checkpoint" in msg
    assert list((tmp_path / "cache" / "sam").iterdir()) == []  # no partial file left behind
    with pytest.raises(SegmentsError, match="does not exist"):
        resolve_checkpoint("vit_b", tmp_path / "missing.pth")
    with pytest.raises(SegmentsError, match="unknown SAM model type"):
        resolve_checkpoint("vit_x")

    calls = []

    def fake_download(url, dst, *args, **kwargs):
        calls.append(url)
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = resolve_checkpoint("vit_b")
    assert path == expected and path.read_bytes() == b"weights" and calls == [SAM_URLS["vit_b"]]
    assert resolve_checkpoint("vit_b") == expected and len(calls) == 1  # cached: no second download
    # A corrupt checkpoint is a one-line error too, not a traceback from torch.load.
    from splatseg.segments.sam import load_sam

    with pytest.raises(SegmentsError, match="cannot load SAM vit_b weights"):
        load_sam("vit_b", path, device="cpu")


# ----------------------------------------------------------------------------- compute


class CountingSource(FelzenszwalbSource):
    def __init__(self):
        super().__init__(FelzenszwalbConfig(num_levels=2))
        self.calls = 0

    def __call__(self, rgb, geometry=None):
        self.calls += 1
        return super().__call__(rgb, geometry)


class MeanColourEncoder:
    """A deterministic stand-in for CLIP: the normalised mean colour (+1) of each segment."""

    name = "mean-colour"

    def __init__(self):
        self.calls = 0

    def encode_segments(self, rgb, segmaps, num_segments=None):
        self.calls += 1
        M = num_segments if num_segments is not None else int(segmaps.max()) + 1
        out = np.zeros((M, 4), np.float32)
        for level in segmaps:
            for i in np.unique(level[level >= 0]):
                v = np.append(rgb[level == i].mean(0) / 255.0, 1.0)
                out[i] = v / np.linalg.norm(v)
        return out


def test_compute_segments_writes_skips_and_embeds(tmp_path):
    views = {f"v{s}": render_boxes_scene(seed=s, width=80, height=60) for s in range(2)}
    images = [(stem, v.rgb, v.geometry) for stem, v in views.items()]
    source = CountingSource()
    out = tmp_path / "segments"
    paths = compute_segments(images, out, source, progress=False)
    assert paths == [out / "v0.npz", out / "v1.npz"] and source.calls == 2
    first = read_segments(paths[0])
    check_contract(first)
    assert first.model == source.model_name(True) and first.embeddings is None
    compute_segments(images, out, source, progress=False)
    assert source.calls == 2  # cached with the same model string
    compute_segments(images, out, source, overwrite=True, progress=False)
    assert source.calls == 4
    encoder = MeanColourEncoder()
    compute_segments(iter(images), out, source, encoder=encoder, progress=False)
    assert source.calls == 4 and encoder.calls == 2  # masks reused, embeddings added
    seg = read_segments(paths[1])
    assert seg.embeddings.shape == (seg.num_segments, 4) and np.allclose(np.linalg.norm(seg.embeddings, axis=1), 1, atol=1e-3)
    assert read_meta(paths[1])["embedding_model"] == "mean-colour"
    compute_segments(images, out, source, encoder=encoder, progress=False)
    assert encoder.calls == 2
    # A different source (model string) recomputes.
    compute_segments(images[:1], out, FelzenszwalbConfig(), progress=False)
    assert read_segments(paths[0]).model == f"felzenszwalb-rgbd-v{ALGORITHM_VERSION}"


def test_make_source():
    assert isinstance(make_source(), FelzenszwalbSource)
    assert make_source("felzenszwalb", num_levels=2).config.num_levels == 2
    sam = make_source("sam", model_type="vit_b", checkpoint=Path("x.pth"))
    assert isinstance(sam, SamSource) and sam.model_name() == "sam-vit_b"
    assert isinstance(make_source(SamConfig()), SamSource)
    cli = make_source("sam", sam_model="vit_l", sam_checkpoint="/w/sam.pth")
    assert cli.config.model_type == "vit_l" and cli.config.checkpoint == Path("/w/sam.pth")
    assert isinstance(make_source("felzenszwalb", sam_model="vit_l", sam_checkpoint=None), FelzenszwalbSource)
    with pytest.raises(SegmentsError, match="unknown mask source"):
        make_source("grabcut")


# ----------------------------------------------------------------------------- noisy simulator


@pytest.fixture(scope="module")
def gt():
    v = render_boxes_scene(seed=1, width=96, height=72)
    return v.object_ids, v.part_ids


OFF = NoiseConfig(boundary_px=0, drop_prob=0, merge_prob=0, background_pieces=1, split_prob=0)


def test_noisy_is_deterministic_and_follows_contract(gt):
    a = simulate_segments(*gt, seed=3)
    b = simulate_segments(*gt, seed=3)
    c = simulate_segments(*gt, seed=4)
    assert np.array_equal(a.segmaps, b.segmaps) and np.array_equal(a.scores, b.scores)
    assert not np.array_equal(a.segmaps, c.segmaps)
    check_contract(a)
    assert a.segmaps.shape == (3,) + gt[0].shape


def test_noisy_all_off_reproduces_ground_truth(gt):
    obj, part = gt
    seg = simulate_segments(obj, part, seed=0, config=OFF)
    sky = 99  # one background piece: the empty pixels form one segment
    level0 = np.where(obj < 0, sky, obj)
    level1 = np.where(part >= 0, 10 * (obj + 1) + part, level0)
    assert same_partition(seg.segmaps[0], level0)
    assert same_partition(seg.segmaps[1], level1)
    assert same_partition(seg.segmaps[2], level1)
    # Renumbered per view: the numbering is not the ground truth's.
    other = simulate_segments(obj, part, seed=1, config=OFF)
    assert same_partition(other.segmaps[0], seg.segmaps[0]) and not np.array_equal(other.segmaps, seg.segmaps)


def test_noisy_knobs(gt):
    from dataclasses import replace

    obj, part = gt
    n_obj = len(np.unique(obj))  # ground, 2 boxes, empty sky (one background piece)
    dropped = simulate_segments(obj, part, seed=0, config=replace(OFF, drop_prob=1.0))
    assert np.all(dropped.segmaps == -1)
    some = simulate_segments(obj, part, seed=0, config=replace(OFF, drop_prob=0.5, num_levels=1))
    assert 0 < len(np.unique(some.segmaps[some.segmaps >= 0])) < n_obj
    merged = simulate_segments(obj, part, seed=0, config=replace(OFF, merge_prob=1.0, num_levels=1))
    assert len(np.unique(merged.segmaps)) == 1  # every segment touches another: all one
    pieces = simulate_segments(obj, part, seed=0, config=replace(OFF, background_pieces=5, num_levels=1))
    assert len(np.unique(pieces.segmaps[0][obj < 0])) == 5 and np.all(pieces.segmaps[0][obj < 0] >= 0)
    none = simulate_segments(obj, part, seed=0, config=replace(OFF, background_pieces=0, num_levels=1))
    assert np.all(none.segmaps[0][obj < 0] == -1)
    split = simulate_segments(obj, part, seed=0, config=replace(OFF, split_prob=1.0))
    assert len(np.unique(split.segmaps[2])) == 2 * len(np.unique(split.segmaps[1]))
    jit = simulate_segments(obj, part, seed=0, config=replace(OFF, boundary_px=2.0, num_levels=1))
    ref = simulate_segments(obj, part, seed=0, config=replace(OFF, num_levels=1))
    changed = ~same_label_map(jit.segmaps[0], ref.segmaps[0])
    assert changed.any()
    from scipy import ndimage as ndi

    lab = ref.segmaps[0]
    edge = (ndi.maximum_filter(lab, 3) != ndi.minimum_filter(lab, 3))
    near = ndi.binary_dilation(edge, iterations=3)
    assert np.all(near[changed])  # only pixels near a true boundary move


def same_label_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel agreement of a and b after mapping each label of a to its majority label in b."""
    out = np.zeros(a.shape, bool)
    for i in np.unique(a):
        m = a == i
        vals, counts = np.unique(b[m], return_counts=True)
        out[m] = b[m] == vals[counts.argmax()]
    return out


def test_half_transparent_floater_does_not_join_an_object(scene):
    """A half-opaque floater continuous in depth with the boxes (what a quick reconstruction leaves
    over a white turntable) becomes part of an object at level 0 unless level 0 is built from opaque
    pixels only; blended edge pixels (half-opaque, next to an object) still rejoin their object."""
    depth = scene.geometry.depth.astype(np.float64).copy()
    alpha = scene.geometry.alpha.copy()
    bridge = np.zeros(alpha.shape, bool)
    for r in range(58, 66):  # rows where both boxes are visible
        c0 = np.flatnonzero(scene.object_ids[r] == 1).max()  # box 1's last column
        c1 = np.flatnonzero(scene.object_ids[r] == 2).min()  # box 2's first column
        t = (np.arange(c0 + 1, c1) - c0) / (c1 - c0)
        depth[r, c0 + 1 : c1] = (1 - t) * depth[r, c0] + t * depth[r, c1]
        alpha[r, c0 + 1 : c1] = 0.7
        bridge[r, c0 + 5 : c1 - 4] = True
    box1 = scene.object_ids == 1
    ring = box1 & ~ndi.binary_erosion(box1)
    alpha[ring] = 0.7
    geometry = Geometry(depth.astype(np.float32), alpha, scene.geometry.K)
    boxes = [scene.object_ids == 1, scene.object_ids == 2]

    old = felzenszwalb_segments(scene.rgb, geometry, FelzenszwalbConfig(core_alpha=0.5)).segmaps[0]
    box2 = np.bincount(old[boxes[1] & (old >= 0)]).argmax()
    assert np.mean(old[bridge] == box2) > 0.9  # built from all pixels, level 0 makes the floater part of box 2

    level0 = felzenszwalb_segments(scene.rgb, geometry).segmaps[0]
    ids = [np.bincount(level0[b & (level0 >= 0)]).argmax() for b in boxes]
    assert ids[0] != ids[1]
    for b in boxes:
        assert best_iou(level0, b) >= 0.85
    assert not np.isin(level0[bridge], ids).any()  # the floater's middle joins no box
    assert np.mean(level0[bridge] == -1) > 0.8  # ... and mostly no segment at all
    assert np.mean(level0[ring] == -1) < 0.05 and np.mean(level0[ring] == ids[0]) >= 0.8  # blended edges rejoin (measured 0.88; the rest: the ground they touch)
