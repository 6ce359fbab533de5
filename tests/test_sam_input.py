"""SAM on rendered depth (`--sam-input rgb|depth|both`): the colour-mapped depth SAM is given, and
how the two inputs' masks merge into the segment levels, on a generated scene."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_sam
from splatseg.segments.cache import SegmentsError
from splatseg.segments.depth_colormap import colorize_depth, normalised_inverse_depth, plasma
from splatseg.segments.geometry import Geometry
from splatseg.segments.sam import SamConfig, SamSource, merge_mask_sets


@pytest.fixture(scope="module")
def view(tiny_scene):
    """(rgb, geometry, object map) of the tiny scene's first view, geometry rendered from its splats."""
    from splatseg.data import load_scene
    from splatseg.io.images import load_image
    from splatseg.io.ply import read_ply
    from splatseg.train.segments_stage import render_geometry

    scene = load_scene(tiny_scene)
    cams = scene.cameras
    params = read_ply(tiny_scene / "splats.ply").torch_params()
    geometry = render_geometry(params, cams, 0)
    rgb = load_image(cams.image_paths[0])
    objects = np.load(tiny_scene / "labels" / f"{cams.names[0]}.npz")["object"]
    return rgb, geometry, objects


def test_plasma_is_monotone_in_luminance_and_ends_right():
    rgb = plasma(np.linspace(0, 1, 101)).astype(np.float64)
    luminance = rgb @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0)
    assert tuple(plasma(np.array(0.0))) == (13, 8, 135) and tuple(plasma(np.array(1.0))) == (240, 249, 33)


def test_depth_image_is_normalised_inverse_depth_through_plasma(view):
    rgb, geometry, objects = view
    image = colorize_depth(geometry)
    assert image.shape == rgb.shape and image.dtype == np.uint8
    t, valid = normalised_inverse_depth(geometry)
    assert t[valid].min() == pytest.approx(0.0) and t[valid].max() == pytest.approx(1.0)
    assert np.all(image[~valid] == 0) and not np.any(np.all(image[valid] == 0, axis=-1))
    near, far = np.unravel_index(np.argmin(np.where(valid, geometry.depth, np.inf)), t.shape), \
        np.unravel_index(np.argmax(np.where(valid, geometry.depth, -np.inf)), t.shape)
    assert t[near] == pytest.approx(1.0) and t[far] == pytest.approx(0.0)  # near is bright, far dark
    # depth, not texture: the colour is a function of depth alone, darker with distance, whatever
    # the photo shows there (uint8 rounding aside)
    z = np.asarray(geometry.depth)[valid]
    lum = image[valid].astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    lum = lum[np.argsort(z, kind="stable")]
    assert np.all(np.diff(lum) <= 1.0)
    assert lum[0] - lum[-1] > 150


class ScriptedSam(SamSource):
    """SamSource whose automatic masks are scripted per input image (the image SAM is given is
    recorded): the depth image yields the true objects, the photo their left/right halves plus a
    duplicate of object 1 with a lower score."""

    def __init__(self, config, objects):
        super().__init__(config)
        self.objects = objects
        self.seen = []

    def generate(self, image):
        self.seen.append(image)
        ids = [o for o in np.unique(self.objects) if o > 0]
        if np.all(image[self.objects < 0] == 0):  # black where nothing is rendered: the depth image
            masks = [self.objects == o for o in ids]
            return np.stack(masks), np.full(len(masks), 0.95, np.float32)
        cols = np.arange(self.objects.shape[1])[None, :]
        masks, scores = [], []
        for o in ids:
            obj = self.objects == o
            middle = np.median(np.nonzero(obj)[1])
            masks += [obj & (cols < middle), obj & (cols >= middle)]
            scores += [0.9, 0.9]
        masks.append(self.objects == ids[0])
        scores.append(0.5)
        return np.stack(masks), np.asarray(scores, np.float32)


def _segment_of(levels, mask):
    ids, counts = np.unique(levels[mask], return_counts=True)
    return ids[np.argmax(counts)], counts.max() / mask.sum()


@pytest.mark.parametrize("mode", ["rgb", "depth", "both"])
def test_inputs_and_merged_levels(view, mode):
    rgb, geometry, objects = view
    src = ScriptedSam(SamConfig(sam_input=mode, num_levels=2, min_segment_fraction=0.0), objects)
    seg = src(rgb, geometry)
    assert seg.model.split("/")[0] == {"rgb": "sam-vit_h", "depth": "sam-vit_h+depth", "both": "sam-vit_h+rgbd"}[mode]
    assert len(src.seen) == (2 if mode == "both" else 1)
    if mode != "rgb":
        assert any(np.array_equal(im, colorize_depth(geometry)) for im in src.seen)
    ids = [o for o in np.unique(objects) if o > 0]
    for o in ids:
        obj = objects == o
        whole, cover0 = _segment_of(seg.segmaps[0], obj)
        if mode == "rgb":  # halves only: no level-0 segment covers the object (object 1's duplicate aside)
            assert cover0 < 0.9 or o == ids[0]
        else:  # depth decides the wholes; with "both" the photo's halves are their parts at level 1
            assert cover0 > 0.99 and (seg.segmaps[0] == whole).sum() == obj.sum()
            halves = np.unique(seg.segmaps[1][obj])
            assert len(halves) == (2 if mode == "both" else 1)
    if mode == "both":  # object 1 from the photo duplicated the depth mask at a lower score: dropped
        assert len(seg.scores) == len(ids) + 2 * len(ids) and np.all(seg.scores[: len(ids)] == np.float32(0.95))


def test_merge_rule_keeps_higher_score_of_a_duplicate_pair():
    a = np.zeros((2, 4, 4), bool)
    a[0, :2] = True
    a[1, 2:, :2] = True
    b = np.zeros((3, 4, 4), bool)
    b[0, :2] = True  # duplicate of a[0], higher score: b[0] stays
    b[1, 2:, :2] = True  # duplicate of a[1], lower score: a[1] stays
    b[1, 2, 2] = True  # (IoU 0.8, still a duplicate)
    b[2, 3:, 2:] = True  # distinct
    masks, scores = merge_mask_sets((a, np.array([0.5, 0.9])), (b, np.array([0.8, 0.7, 0.6])), merge_iou=0.8)
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert np.array_equal(masks[0], a[1]) and np.array_equal(masks[1], b[0]) and np.array_equal(masks[2], b[2])


def test_depth_input_needs_geometry_and_tiny_sam_runs_on_both(view):
    rgb, geometry, _ = view
    with pytest.raises(SegmentsError, match="--sam-input depth needs"):
        SamSource(SamConfig(sam_input="depth"), model=tiny_sam())(rgb, None)
    src = SamSource(SamConfig(sam_input="both", points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0), model=tiny_sam())
    seg = src(rgb, geometry)
    assert seg.segmaps.shape == (3, *rgb.shape[:2]) and seg.model.startswith("sam-vit_h+rgbd/")
    assert seg.segmaps.max() + 1 == len(seg.scores)


def test_train_flag_is_checked(tmp_path):
    from splatseg.train import TrainConfig
    from splatseg.train.validation import validate_train_config

    with pytest.raises(ValueError, match="--sam-input depth applies to SAM"):
        validate_train_config(TrainConfig(data=tmp_path, out=tmp_path / "run", sam_input="depth"))
    validate_train_config(TrainConfig(data=tmp_path, out=tmp_path / "run", sam_input="both", mask_source="sam"))
