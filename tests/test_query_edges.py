"""The query rule at its boundaries (issue 12): a score exactly at the threshold, a negative that ties
a positive, a logit exactly 0, a 3D score exactly at MEMBERSHIP, containment exactly at CONTAINS,
and ties in size or confidence. Each case is decided by the documented rule (query.py module doc),
so an off-by-one comparison or another tie-break fails here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splatseg.query import CONTAINS, MEMBERSHIP, combine, pick_from_logits, pick_with_membership
from splatseg.run import Field


def field(lifted, containment=None, footprint=None) -> Field:
    """A Field of K queries over N Gaussians given by its lifted scores [K, N] uint8 alone (and,
    for the large-splat rule, the Gaussians' footprints [N])."""
    lifted = np.asarray(lifted, np.uint8)
    k, n = lifted.shape
    return Field(
        run_dir=Path("."), info={"num_gaussians": n, "clip_has_weights": False}, features=np.zeros((n, k), np.float32),
        queries=np.eye(k, dtype=np.float32), query_bias=np.zeros(k, np.float32), query_clip=None, lifted=lifted,
        query_size=lifted.astype(np.float32).sum(1) / 255, visibility=np.ones(n, np.float32),
        view_names=["v0"], view_maps=np.zeros((1, 1, 1, k), np.float16), image_sizes=np.array([[1, 1]]),
        containment=None if containment is None else np.asarray(containment, np.float32),
        footprint=None if footprint is None else np.asarray(footprint, np.float32),
    )


@pytest.mark.parametrize("threshold, cut", [(0.2, 51), (0.3, 76), (0.5, 127)])
def test_a_score_at_the_threshold_is_out_and_one_step_above_is_in(threshold, cut):
    # selected: lifted score strictly above int(threshold * 255)
    fld = field([[cut - 1, cut, cut + 1, 255, 0]])
    assert np.flatnonzero(combine(fld, [0], (), threshold).mask).tolist() == [2, 3]


def test_threshold_zero_keeps_every_scored_gaussian_and_one_keeps_none():
    fld = field([[0, 1, 128, 255]])
    assert combine(fld, [0], (), 0.0).mask.tolist() == [False, True, True, True]
    assert not combine(fld, [0], (), 1.0).mask.any()


def test_selection_scores_are_the_max_over_positives_over_255():
    fld = field([[10, 200, 90], [30, 100, 90]])
    sel = combine(fld, [0, 1], (), 0.3)
    assert sel.scores.tolist() == pytest.approx([30 / 255, 200 / 255, 90 / 255])
    assert sel.mask.tolist() == [False, True, True]
    assert sel.queries == [0, 1] and sel.negative_queries == []


def test_a_negative_that_ties_the_positive_drops_the_gaussian():
    # "dropped when a negative click's column scores it at least as high"
    fld = field([[200, 200, 200, 200], [199, 200, 201, 0]])
    sel = combine(fld, [0], [1], 0.3)
    assert sel.mask.tolist() == [True, False, False, True]
    assert sel.negative_queries == [1]


def test_a_logit_of_exactly_zero_is_not_active():
    fld = field([[255] * 6, [255] * 3 + [0] * 3])  # query 0 larger than query 1
    assert pick_from_logits(fld, np.array([0.0, 0.5]), "whole") == 1  # query 0 sits at 0: not active
    assert pick_from_logits(fld, np.array([1e-6, 0.5]), "whole") == 0
    # nothing active: the least unconfident query
    assert pick_from_logits(fld, np.array([-0.5, -0.1]), "whole") == 1


def test_2d_rule_ties_take_the_lowest_index():
    fld = field([[255, 255, 0, 0], [0, 0, 255, 255], [255, 0, 0, 0], [0, 255, 0, 0]])  # sizes 2, 2, 1, 1
    logits = np.array([1.0, 3.0, 2.0, 2.0])
    assert pick_from_logits(fld, logits, "whole") == 0  # largest, tied with 1: the lower index, not the more confident
    assert pick_from_logits(fld, logits, "part") == 1  # the most confident of the others
    assert pick_from_logits(fld, np.array([1.0, -1.0, 2.0, 2.0]), "part") == 2  # confidence tie: the lower index


def test_2d_whole_is_the_largest_active_query_not_the_most_confident():
    fld = field([[255] * 2 + [0] * 6, [255] * 8, [255] * 4 + [0] * 4])  # sizes 2, 8, 4
    assert pick_from_logits(fld, np.array([5.0, 0.5, 1.0]), "whole") == 1
    assert pick_from_logits(fld, np.array([5.0, 0.5, 1.0]), "part") == 0
    assert pick_from_logits(fld, np.array([5.0, -0.5, 1.0]), "whole") == 2  # the largest is not active


def containment_field() -> Field:
    """Queries: 0 = a part (2 Gaussians), 1 = its object (6), 2 = the table (12, holds neither).
    containment[j, k]: share of j's selection that k holds."""
    lifted = np.zeros((3, 12), np.uint8)
    lifted[0, 0:2] = 255
    lifted[1, 0:6] = 255
    lifted[2, :] = 255
    c = np.eye(3, dtype=np.float32)
    c[0, 1] = CONTAINS  # exactly at the bar: 1 contains 0
    c[1, 2] = CONTAINS - 1e-3  # just under: 2 does not contain 1
    c[0, 2] = CONTAINS - 1e-3
    return field(lifted, c)


def test_whole_walks_up_to_the_largest_container_not_the_most_confident_query():
    fld = containment_field()
    logits = np.array([4.0, 1.0, 0.5])  # the part is the most confident
    at = np.array([0.9, 0.9, 0.9])  # every query holds the click in 3D
    assert pick_with_membership(fld, logits, at, "whole") == 1  # containment exactly CONTAINS counts; 2 is larger but does not contain
    assert pick_with_membership(fld, logits, at, "part") == 0


def test_a_3d_score_exactly_at_membership_holds_the_click():
    fld = containment_field()
    logits = np.array([4.0, 1.0, 0.5])
    at = np.array([MEMBERSHIP, MEMBERSHIP, 0.9])
    assert pick_with_membership(fld, logits, at, "whole") == 1
    below = np.array([MEMBERSHIP - 1e-3, MEMBERSHIP, 0.9])  # the part no longer holds it: p = the object
    assert pick_with_membership(fld, logits, below, "part") == 1
    assert pick_with_membership(fld, logits, np.array([MEMBERSHIP - 1e-3, MEMBERSHIP - 1e-3, 0.9]), "whole") == 2



# ----------------------------------------------------------------------------- the prompt paths pass what they get


def clicked_field() -> Field:
    """test_lifting's rule_field (0 background, 1 object, 2 part, 3 a mistaken segment) with a 2x2
    feature map: pixel (0, 0) on the part, pixel (1, 0) on the background (features = logits)."""
    import dataclasses

    from test_lifting import rule_field

    maps = np.zeros((1, 2, 2, 4), np.float16)
    maps[0, 0, 0] = [2, 1, 3, -1]
    maps[0, 0, 1] = [3, -1, -1, -1]
    return dataclasses.replace(rule_field(), view_maps=maps)


ON_PART = np.array([2.0, 1.0, 3.0, -1.0], np.float32)
AT_PART = np.array([0.05, 0.95, 0.96, 0.9])  # 3D scores of the clicked surface: object, part, mistaken segment
ON_BACKGROUND = np.array([3.0, -1.0, -1.0, -1.0], np.float32)
AT_BACKGROUND = np.array([0.9, 0.0, 0.0, 0.9])
AT_OBJECT_ONLY = np.array([0.05, 0.95, 0.1, 0.9])  # the part does not hold this click in 3D


def test_defaults_are_whole_and_the_3d_scores_are_used():
    from splatseg.query import pick_query, pick_with_membership, select_by_feature

    fld = clicked_field()
    assert pick_query(fld, ON_PART) == pick_query(fld, ON_PART, "whole") == 0  # 2D rule: the largest active
    assert pick_query(fld, ON_PART, scores_at=AT_PART) == 1  # 3D rule: the object holding the part
    assert pick_with_membership(fld, ON_PART, AT_PART) == 1
    assert pick_from_logits(fld, ON_PART) == 0
    assert select_by_feature(fld, [ON_PART], scores=[AT_PART]).queries == [1]
    assert select_by_feature(fld, [ON_PART]).queries == [0]


def test_select_by_feature_uses_each_clicks_scores_and_part_for_negatives():
    from splatseg.query import select_by_feature

    fld = clicked_field()
    sel = select_by_feature(fld, [ON_BACKGROUND], [ON_PART], scores=[AT_BACKGROUND], negative_scores=[AT_PART])
    assert sel.queries == [0] and sel.negative_queries == [2]  # the negative is picked at "part" with its 3D scores
    sel = select_by_feature(fld, [ON_BACKGROUND], [ON_PART], scores=[AT_BACKGROUND], negative_scores=[AT_OBJECT_ONLY])
    assert sel.negative_queries == [1]  # other 3D scores, another answer: the scores reach the pick
    sel = select_by_feature(fld, [ON_BACKGROUND], [ON_PART])
    assert sel.negative_queries == [2]  # 2D rule, "part": the most confident smaller active query
    # a negative that picks a positive's own query is dropped; the others are kept
    sel = select_by_feature(fld, [ON_PART, ON_BACKGROUND], [ON_PART], "part", 0.5, [AT_PART, AT_BACKGROUND], [AT_PART])
    assert sel.queries == [2, 0] and sel.negative_queries == []
    # the object's selection minus the part's (the part scores 245 over the object's 240)
    sel = select_by_feature(fld, [ON_PART], [ON_PART], "whole", 0.5, [AT_PART], [AT_PART])
    assert sel.queries == [1] and sel.negative_queries == [2]
    assert np.flatnonzero(sel.mask).tolist() == [2, 3]


def test_select_by_clicks_passes_the_3d_scores_of_each_click():
    from splatseg.query import Click, select_by_clicks

    fld = clicked_field()
    at = {(0.5, 0.5): AT_PART, (1.5, 0.5): AT_BACKGROUND}
    scores_at = lambda c: at[(c.x, c.y)]  # noqa: E731
    sel = select_by_clicks(fld, [Click("v", 0.5, 0.5)], scores_at=scores_at)
    assert sel.queries == [1]  # default "whole", 3D rule
    assert select_by_clicks(fld, [Click("v", 0.5, 0.5)]).queries == [0]  # without scores: the 2D rule
    sel = select_by_clicks(fld, [Click("v", 1.5, 0.5), Click("v", 0.5, 0.5, positive=False)], "whole", 0.5, scores_at)
    assert sel.queries == [0] and sel.negative_queries == [2]
    sel = select_by_clicks(fld, [Click("v", 0.5, 0.5), Click("v", 0.5, 0.5, positive=False)], "whole", 0.5, scores_at)
    assert sel.negative_queries == [2] and np.flatnonzero(sel.mask).tolist() == [2, 3]


def test_pixel_feature_edges_and_dtype():
    from splatseg.query import Click, pixel_feature

    from test_query import make_field

    fld = make_field()  # image 20 x 40, feature map 2 x 4
    assert pixel_feature(fld, Click("v0", 0.0, 0.0)).tolist() == [1, 1, 0, 0]  # the corner is inside
    assert pixel_feature(fld, Click("v0", 19.99, 39.99)).tolist() == [0, 0, 0, 1]  # the last texel
    assert pixel_feature(fld, Click("v0", 15.0, 0.0)).tolist() == fld.view_maps[0, 0, 1].astype(np.float32).tolist()
    assert pixel_feature(fld, Click("v0", 1.0, 1.0)).dtype == np.float32


def test_point_logits_are_the_weighted_mean_score_minus_a_half():
    from splatseg.query import pick_query_at_gaussians, point_logits

    fld = field([[255, 0, 102], [51, 204, 0]])
    logits = point_logits(fld, np.array([0, 2]), np.array([0.2, 0.3]))  # weights need not sum to 1
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, [(0.2 * 1.0 + 0.3 * 0.4) / 0.5 - 0.5, (0.2 * 0.2) / 0.5 - 0.5], atol=1e-6)
    # the weighted scores are the 3D scores too: query 0 holds the neighbourhood (0.64 >= 0.5), query 1 does not
    assert pick_query_at_gaussians(fld, np.array([0, 2]), np.array([0.2, 0.3])) == 0
    assert pick_query_at_gaussians(fld, np.array([1]), np.array([1.0]), "part") == 1


def test_text_ranking_skips_queries_that_select_nothing():
    from splatseg.query import rank_queries_by_text, select_by_text

    from test_query import make_field

    fld = make_field(True)
    text, negatives = np.eye(8, dtype=np.float32)[2], np.eye(8, dtype=np.float32)[[6, 7]]
    fld.query_clip[2] *= 5.0  # the norm of a stored CLIP vector does not matter
    assert select_by_text(fld, text, negatives).queries == [2]
    fld.query_size[2] = 0.5  # small but not empty: still eligible
    assert int(np.argmax(rank_queries_by_text(fld, text, negatives))) == 2
    fld.query_size[2] = 0.0
    rel = rank_queries_by_text(fld, text, negatives)
    assert rel[2] == -np.inf and select_by_text(fld, text, negatives).queries != [2]
