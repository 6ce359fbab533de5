"""The query's large-splat rule (query.py, step 5; issue 9): a selected splat whose footprint is far
above the selection's median stays only with a confident score. Cases: a large background splat
touching the object with a middling score goes, a large splat the query is sure of stays, small
splats with the same middling score stay, the factor and the score at their boundaries, a user
threshold above the rule's score, negatives, export-all's discovery, and runs without footprints
(the rule is off), through a real trained run's field.npz too."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from splatseg.query import (LARGE_SPLAT_FACTOR, LARGE_SPLAT_SCORE, MEDIAN_SAMPLE, combine, discover_objects,
                            drop_unsure_large_splats, score_cut)
from splatseg.run import Field, load_field
from splatseg.train.refine import footprint_areas
from splatseg.types import Splats

from test_query_edges import field as edges_field

N_OBJECT = 40


def field(lifted, footprint=None) -> Field:
    return edges_field(lifted, footprint=footprint)


def object_with_neighbours(extra_scores, extra_footprints):
    """Query 0: 40 object splats (footprint 1e-4, score 230), then the extra splats given."""
    scores = [230] * N_OBJECT + list(extra_scores)
    foot = [1e-4] * N_OBJECT + list(extra_footprints)
    return field([scores], foot)


def test_a_large_splat_with_a_middling_score_goes_and_a_confident_one_stays():
    # a table splat 50x the object's splats, scored 0.45 by the object's query: a sheet of background
    fld = object_with_neighbours([115, 240, 115], [5e-3, 5e-3, 1e-4])
    sel = combine(fld, [0], (), 0.3)
    assert sel.mask[:N_OBJECT].all()
    assert sel.mask[N_OBJECT:].tolist() == [False, True, True]  # the small 0.45 splat stays: only large ones must be sure
    assert sel.large_dropped == 1


def test_without_stored_footprints_the_rule_is_off():
    fld = object_with_neighbours([115], [5e-3])
    assert combine(replace(fld, footprint=None), [0], (), 0.3).mask.all()


@pytest.mark.parametrize("factor, large", [(LARGE_SPLAT_FACTOR * 0.99, False), (LARGE_SPLAT_FACTOR * 1.01, True)])
def test_the_factor_is_relative_to_the_selections_median_footprint(factor, large):
    fld = object_with_neighbours([115], [1e-4 * factor])
    assert combine(fld, [0], (), 0.3).mask[-1] == (not large)
    # the same splats in other units (scene scaled by 10: footprints by 100) decide the same
    scaled = replace(fld, footprint=fld.footprint * 100)
    assert combine(scaled, [0], (), 0.3).mask[-1] == (not large)


def test_the_rule_score_boundary():
    cut = int(score_cut(LARGE_SPLAT_SCORE))
    fld = object_with_neighbours([cut, cut + 1], [1e-2, 1e-2])
    assert combine(fld, [0], (), 0.3).mask[-2:].tolist() == [False, True]


def test_a_user_threshold_above_the_rule_score_applies_to_large_splats_too():
    fld = object_with_neighbours([240, 250], [1e-2, 1e-2])
    sel = combine(fld, [0], (), 0.95)  # cut 242: the threshold itself removes the 240, the rule nothing more
    assert sel.mask[-2:].tolist() == [False, True] and sel.large_dropped == 0


def test_the_median_is_the_selections_not_the_scenes():
    # many large unselected splats (a wall scored 0) do not move the reference
    fld = object_with_neighbours([0] * 500 + [115], [1e-2] * 500 + [5e-3])
    mask = combine(fld, [0], (), 0.3).mask
    assert mask[:N_OBJECT].all() and not mask[N_OBJECT:].any()


def test_selections_too_small_for_a_median_are_left_alone():
    fld = field([[230] * 10 + [115]], [1e-4] * 10 + [1e-2])
    assert combine(fld, [0], (), 0.3).mask.all()
    mask = np.ones(11, bool)
    assert drop_unsure_large_splats(fld, mask, fld.lifted[0]).all()


def test_the_median_of_a_large_selection_is_sampled_but_exact_enough():
    rng = np.random.default_rng(0)
    n = 20 * MEDIAN_SAMPLE
    foot = rng.lognormal(-9, 0.5, n).astype(np.float32)
    big = np.float32(np.median(foot) * LARGE_SPLAT_FACTOR * 1.5)
    fld = field([np.r_[np.full(n, 230), 115, 115]], np.r_[foot, big, np.float32(np.median(foot))])
    mask = combine(fld, [0], (), 0.3).mask
    assert mask[:n].sum() >= n - 10 and mask[-2:].tolist() == [False, True]


def test_negatives_and_the_rule_together():
    fld = field([[230] * N_OBJECT + [115, 230], [0] * N_OBJECT + [0, 240]], [1e-4] * N_OBJECT + [5e-3, 1e-4])
    mask = combine(fld, [0], [1], 0.3).mask
    assert mask[:N_OBJECT].all() and mask[-2:].tolist() == [False, False]


def test_export_all_discovery_applies_the_rule():
    fld = object_with_neighbours([115], [5e-3])
    (k, mask), = discover_objects(fld, 0.3, min_gaussians=10)
    assert k == 0 and mask[:N_OBJECT].all() and not mask[-1]


def test_footprint_areas_are_the_product_of_the_two_largest_scales():
    scales = np.array([[0.1, 0.02, 0.003], [0.001, 0.5, 0.2]], np.float32)
    splats = Splats(means=np.zeros((2, 3), np.float32), quats=np.tile([1, 0, 0, 0], (2, 1)).astype(np.float32),
                    log_scales=np.log(scales), opacity_logits=np.zeros(2, np.float32), sh0=np.zeros((2, 1, 3), np.float32),
                    shN=np.zeros((2, 0, 3), np.float32))
    np.testing.assert_allclose(footprint_areas(splats), [0.1 * 0.02, 0.5 * 0.2], rtol=1e-6)


def test_a_trained_run_stores_footprints_and_its_clicks_use_them(tiny_run):
    fld = load_field(tiny_run)
    assert fld.footprint is not None and fld.footprint.shape == (fld.num_gaussians,)
    from splatseg.io.ply import read_ply

    np.testing.assert_allclose(fld.footprint, footprint_areas(read_ply(fld.splats_path)), rtol=1e-6)


def test_segment_reports_what_the_rule_took_out(tiny_run, tmp_path, capsys, monkeypatch):
    import json

    import splatseg.query as query
    from splatseg.cli import main

    fld = load_field(tiny_run)
    w, h = (int(v) for v in fld.image_sizes[0])
    args = ["segment", "--run", str(tiny_run), "--click", fld.view_names[0], str(w / 2), str(h / 2), "--threshold", "0.1"]

    def segment(out):
        assert main([*args, "--out", str(tmp_path / out)]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    on = segment("on.ply")
    monkeypatch.setattr(query, "LARGE_SPLAT_FACTOR", np.inf)
    off = segment("off.ply")
    assert isinstance(on["large_splats_dropped"], int) and off["large_splats_dropped"] == 0
    assert on["selected"] + on["large_splats_dropped"] == off["selected"]
