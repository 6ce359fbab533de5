"""The generated scene family: deterministic per seed, varied across seeds, valid ground truth;
and the SAM failure simulator's scene-aware failure modes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from splatseg.data.family import FamilyConfig, build_family_scene, hemisphere_cameras
from splatseg.data.synthetic import TABLE_ID
from splatseg.segments.noisy import NOISE_LEVELS, NoiseConfig, simulate_segments


def test_family_is_deterministic_per_seed_and_varies_across_seeds():
    a = build_family_scene(FamilyConfig(seed=4))
    b = build_family_scene(FamilyConfig(seed=4))
    assert np.array_equal(a.splats.means, b.splats.means) and np.array_equal(a.object_id, b.object_id)
    assert np.array_equal(a.cameras.viewmats, b.cameras.viewmats)
    scenes = [build_family_scene(FamilyConfig(seed=s)) for s in range(8)]
    counts = {len(s.object_names) - len(s.background_ids) for s in scenes}
    rooms = {("wall" in s.object_names) for s in scenes}
    sizes = {(int(s.cameras.widths[0]), int(s.cameras.heights[0])) for s in scenes}
    assert len(counts) >= 3 and counts <= set(range(4, 9))  # 4-8 objects, several counts drawn
    assert rooms == {True, False}  # both environments occur
    assert len(sizes) >= 2


def test_object_scale_shrinks_the_objects_and_nothing_else_of_the_room():
    """object_scale 1 is the family as it is; 0.4 gives objects about 0.4x as large on a support of
    the same size range."""
    base = build_family_scene(FamilyConfig(seed=5))
    assert np.array_equal(build_family_scene(FamilyConfig(seed=5, object_scale=1.0)).splats.means, base.splats.means)

    def extents(scene):
        ids = [i for i in range(1, len(scene.object_names)) if i not in scene.background_ids]
        table = np.ptp(scene.splats.means[scene.object_id == TABLE_ID][:, :2], axis=0).max()
        return np.median([np.ptp(scene.splats.means[scene.object_id == i], axis=0).max() for i in ids]), table

    (big, table_a), (small, table_b) = extents(base), extents(build_family_scene(FamilyConfig(seed=5, object_scale=0.4)))
    assert 0.3 < small / big < 0.5 and 0.85 < table_b / table_a < 1.2


def test_family_ground_truth_is_consistent():
    scene = build_family_scene(FamilyConfig(seed=1))
    n = len(scene.splats)
    assert scene.object_id.shape == (n,) and scene.part_id.shape == (n,)
    assert TABLE_ID in scene.background_ids and "floaters" in [scene.object_names[i] for i in scene.background_ids]
    for pid, oid in enumerate(scene.part_object):  # every part belongs to the object its Gaussians carry
        assert np.all(scene.object_id[scene.part_id == pid] == oid)
    clickable = [i for i in range(len(scene.object_names)) if i not in scene.background_ids]
    for oid in clickable:
        assert (scene.object_id == oid).sum() >= 2000  # default density: 2,500-6,000 per object (a few rows may fall off a part)
    # rows are shuffled, as a trainer leaves them: object ids are not in blocks
    assert np.count_nonzero(np.diff(scene.object_id)) > n // 4
    # the Gaussians are not all alike: a spread of sizes and opacities, some faint, some spikes
    op = scene.splats.opacities
    assert (op < 0.5).mean() > 0.05 and (op > 0.9).mean() > 0.3
    s = np.sort(scene.splats.scales, axis=1)
    assert (s[:, 2] / s[:, 1] > 8).mean() > 0.005  # elongated spikes


def test_family_density_and_fixed_count():
    dense = build_family_scene(FamilyConfig(seed=2, density="dense"))
    fixed = build_family_scene(FamilyConfig(seed=2, gaussians_per_object=1000))
    oid = 1
    assert (dense.object_id == oid).sum() >= 20_000
    assert 800 <= (fixed.object_id == oid).sum() <= 1000


def test_hemisphere_cameras_look_at_the_scene_from_above():
    cams = hemisphere_cameras(np.random.default_rng(0), 40, 256, 192, 1.1)
    centres = cams.centers
    assert np.all(centres[:, 2] > 0)  # upper hemisphere
    # the origin projects inside every image
    for i in range(len(cams)):
        p = cams.viewmats[i] @ np.array([0.0, 0.0, 0.1, 1.0])
        assert p[2] > 0
        u, v = (cams.Ks[i] @ (p[:3] / p[2]))[:2]
        assert 0 < u < 256 and 0 < v < 192


# ------------------------------------------------------------------ simulator's scene-aware modes


def _view():
    """A 60x80 view: support (id 0) everywhere, a two-part object 1 and a one-part object 2."""
    obj = np.zeros((60, 80), np.int64)
    part = np.zeros((60, 80), np.int64)
    obj[10:40, 10:30] = 1
    part[10:25, 10:30], part[25:40, 10:30] = 1, 2
    obj[20:50, 45:70] = 2
    part[20:50, 45:70] = 3
    return obj, part


def test_support_is_cut_into_pieces_per_level():
    obj, part = _view()
    cfg = replace(NOISE_LEVELS["none"], support_pieces=(5, 5))
    seg = simulate_segments(obj, part, seed=0, config=cfg, support_ids=[0])
    for level in seg.segmaps:
        assert len(np.unique(level[obj == 0])) == 5
        assert len(np.unique(level[obj == 1])) >= 1 and not set(np.unique(level[obj == 1])) & set(np.unique(level[obj == 0]))
    # without support ids the support is one segment, as before
    plain = simulate_segments(obj, part, seed=0, config=cfg)
    assert len(np.unique(plain.segmaps[0][obj == 0])) == 1


def test_erode_dilate_moves_boundaries_by_at_most_px():
    obj, part = _view()
    ref = simulate_segments(obj, part, seed=0, config=replace(NOISE_LEVELS["none"], num_levels=1))
    noisy = simulate_segments(obj, part, seed=0, config=replace(NOISE_LEVELS["none"], num_levels=1, erode_dilate_px=3))
    from scipy import ndimage as ndi

    lab = ref.segmaps[0]
    edge = ndi.maximum_filter(lab, 3) != ndi.minimum_filter(lab, 3)
    changed = ref.segmaps[0] != noisy.segmaps[0]
    # compare partitions, not ids: a changed pixel is one whose segment differs in membership
    moved = np.zeros_like(changed)
    for s in np.unique(lab):
        m = lab == s
        vals, counts = np.unique(noisy.segmaps[0][m], return_counts=True)
        moved |= m & (noisy.segmaps[0] != vals[np.argmax(counts)])
    assert moved.any()
    assert np.all(ndi.binary_dilation(edge, iterations=3)[moved])


def test_bleed_spills_an_object_over_the_support_and_part_as_whole_drops_the_whole():
    obj, part = _view()
    cfg = replace(NOISE_LEVELS["none"], num_levels=2, bleed_prob=1.0)
    seg = simulate_segments(obj, part, seed=1, config=cfg, support_ids=[0])
    level0 = seg.segmaps[0]
    ids = np.unique(level0[obj == 2])
    assert len(ids) == 1
    grown = level0 == ids[0]
    assert grown.sum() > (obj == 2).sum() + 50 and np.all(obj[grown] != 1)  # over the support, never another object
    whole = replace(NOISE_LEVELS["none"], num_levels=2, part_as_whole_prob=1.0)
    seg = simulate_segments(obj, part, seed=1, config=whole, support_ids=[0])
    assert len(np.unique(seg.segmaps[0][obj == 1])) == 2  # object 1 comes out as its two parts at level 0
    assert len(np.unique(seg.segmaps[0][obj == 2])) == 1  # a one-part object is unaffected


@pytest.mark.parametrize("level", ["none", "low", "medium", "high"])
def test_noise_levels_follow_the_segments_contract(level):
    obj, part = _view()
    seg = simulate_segments(obj, part, seed=2, config=NOISE_LEVELS[level], support_ids=[0])
    assert seg.segmaps.dtype == np.int32 and seg.segmaps.shape == (3, 60, 80)
    ids = seg.segmaps[seg.segmaps >= 0]
    assert len(ids) and ids.max() + 1 == len(seg.scores)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(np.unique(seg.segmaps[a][seg.segmaps[a] >= 0])) & set(np.unique(seg.segmaps[b][seg.segmaps[b] >= 0]))
    assert isinstance(NOISE_LEVELS[level], NoiseConfig)
