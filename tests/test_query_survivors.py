"""Cases a mutation run of query.py left alive (README, development): the texel under a click at any
column, the dtypes of scores and logits, the part inside a clicked whole, the most confident
candidate wherever it stands, and the large-splat rule at its exact boundaries."""

from __future__ import annotations

import numpy as np

from splatseg.query import (LARGE_SPLAT_FACTOR, Click, combine, pick_with_membership, pixel_feature, query_logits)
from splatseg.run import Field


def field(lifted=None, k=3, n=4, maps=None, image=(8, 4), containment=None, footprint=None, query_size=None) -> Field:
    """test_query_edges' field with a feature map `maps` [1, h, w, D] for an image of `image` px."""
    import dataclasses

    from test_query_edges import field as edges_field

    fld = edges_field(np.zeros((k, n), np.uint8) if lifted is None else lifted, containment, footprint)
    maps = np.zeros((1, 1, 1, fld.num_queries), np.float16) if maps is None else maps
    return dataclasses.replace(
        fld, features=np.zeros((fld.num_gaussians, maps.shape[-1]), np.float32),
        queries=np.eye(fld.num_queries, maps.shape[-1], dtype=np.float32), view_maps=maps, image_sizes=np.array([list(image)]),
        query_size=fld.query_size if query_size is None else np.asarray(query_size, np.float32))


def test_the_texel_under_a_click_in_every_column_and_row():
    # image 8 x 4 px, feature map 4 wide x 2 high: texel (row, col) holds 10 * row + col in channel 0
    maps = np.zeros((1, 2, 4, 1), np.float16)
    for r in range(2):
        for c in range(4):
            maps[0, r, c, 0] = 10 * r + c
    fld = field(maps=maps, k=1)
    for x in (0.0, 1.9, 2.0, 5.0, 7.99):
        for y in (0.0, 1.99, 2.0, 3.99):
            assert pixel_feature(fld, Click("v0", x, y))[0] == 10 * int(y / 2) + int(x / 2), (x, y)


def test_logits_and_scores_are_float32():
    maps = np.ones((1, 1, 1, 3), np.float16)
    fld = field(lifted=[[0, 255, 100, 200]] * 3, maps=maps)
    assert query_logits(fld, maps[0, 0, 0]).dtype == np.float32
    assert combine(fld, [0]).scores.dtype == np.float32


def test_part_of_a_clicked_whole_is_the_most_confident_query_inside_it():
    # the clicked segment p is itself the largest query holding the click (p == whole): "part" is
    # then the most confident candidate inside it, not p
    C = np.array([[1.0, 0.1, 0.1], [0.9, 1.0, 0.0], [0.8, 0.0, 1.0]])
    fld = field(k=3, containment=C, query_size=[30.0, 5.0, 4.0])
    logits = np.array([3.0, 1.0, 2.0])
    at = np.full(3, 0.9)
    assert pick_with_membership(fld, logits, at, "whole") == 0
    assert pick_with_membership(fld, logits, at, "part") == 2


def test_the_clicked_segment_is_the_most_confident_candidate_not_the_first():
    fld = field(k=3, containment=np.eye(3), query_size=[1.0, 1.0, 1.0])
    at = np.full(3, 0.9)
    assert pick_with_membership(fld, np.array([1.0, 2.0, 0.5]), at, "whole") == 1
    assert pick_with_membership(fld, np.array([1.0, 2.0, 0.5]), at, "part") == 1


def rule_field(n_object: int, big_index=None, big_footprint=2.0, n=None):
    """Object splats of footprint 0.125 scored 230; one middling (115) splat of `big_footprint`."""
    n = n_object + 1 if n is None else n
    scores = np.zeros(n, np.uint8)
    foot = np.full(n, 0.125, np.float32)
    obj = np.arange(n_object) if n == n_object + 1 else np.arange(1, n, 2)[:n_object]
    scores[obj] = 230
    big = n - 1 if big_index is None else big_index
    scores[big], foot[big] = 115, big_footprint
    return field(lifted=[scores], footprint=foot), big


def test_the_rule_needs_20_selected_gaussians():
    fld, big = rule_field(19)  # 20 selected with the big one
    assert not combine(fld, [0], (), 0.3).mask[big]
    fld, big = rule_field(18)  # 19 selected: left alone
    assert combine(fld, [0], (), 0.3).mask[big]


def test_a_footprint_exactly_at_the_factor_is_not_large():
    fld, big = rule_field(40, big_footprint=0.125 * LARGE_SPLAT_FACTOR)  # exact in float32
    assert combine(fld, [0], (), 0.3).mask[big]
    fld, big = rule_field(40, big_footprint=0.125 * LARGE_SPLAT_FACTOR * 1.001)
    assert not combine(fld, [0], (), 0.3).mask[big]


def test_selected_rows_the_stride_steps_over_still_give_the_median():
    # 8,192 selected on odd rows of 16,385: the median's stride of 2 meets none of them
    n = 16385
    fld, big = rule_field(8192, big_index=n - 2, n=n)
    assert fld.lifted[0][1::2].min() > 76 and fld.lifted[0][0::2].max() == 0
    mask = combine(fld, [0], (), 0.3).mask
    assert not mask[big] and mask.sum() == 8191


def test_text_selection_uses_the_given_threshold_and_unit_clip_vectors():
    import dataclasses

    from splatseg.query import select_by_text
    from test_query import make_field

    fld = make_field(with_clip=True)
    # query 2's CLIP vector is long; query 0's short: the ranking must compare directions, not lengths
    clip = np.eye(4, 8, dtype=np.float32)
    clip[2] *= 50.0
    clip[0] = 0.01 * (np.eye(8, dtype=np.float32)[0] + 0.2 * np.eye(8, dtype=np.float32)[2])
    fld = dataclasses.replace(fld, query_clip=clip)
    text = np.eye(8, dtype=np.float32)[0]
    negatives = np.eye(8, dtype=np.float32)[5:7]
    assert select_by_text(fld, text, negatives).queries == [0]
    assert np.flatnonzero(select_by_text(fld, text, negatives).mask).tolist() == np.flatnonzero(fld.lifted[0] > 76).tolist()
    assert select_by_text(fld, text, negatives, threshold=0.95).count == 0  # 230 / 255 = 0.90 is below 0.95


def test_clicks_without_3d_scores_take_the_2d_rule_even_with_containment():
    import dataclasses

    from splatseg.query import select_by_clicks
    from test_query import make_field

    fld = dataclasses.replace(make_field(), containment=np.eye(4, dtype=np.float32))
    # on part A1: A (0) and A1 (1) active; the 2D rule's whole is A, the largest active query
    assert select_by_clicks(fld, [Click("v0", 1.0, 1.0)]).queries == [0]
    assert select_by_clicks(fld, [Click("v0", 1.0, 1.0)], granularity="part").queries == [1]
