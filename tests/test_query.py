"""Query functions on a hand-made field whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splatseg.query import Click, QueryError, combine, discover_objects, pick_query, pixel_feature, select_by_clicks, select_by_text
from splatseg.run import Field


def make_field(with_clip: bool = False) -> Field:
    """12 Gaussians: object A = 0..5 with part A1 = 0..2, object B = 6..9, background 10..11.
    Queries: 0 = A (whole), 1 = A1 (part), 2 = B, 3 = background. Feature space D = 4:
    one axis per query, so a pixel's feature says which queries are active there."""
    n, d = 12, 4
    lifted = np.zeros((4, n), np.uint8)
    lifted[0, 0:6] = 230
    lifted[1, 0:3] = 240
    lifted[2, 6:10] = 250
    lifted[3, 10:12] = 200
    lifted[0, 6] = 100  # a little leakage below threshold
    queries = np.eye(4, d, dtype=np.float32) * 4
    bias = np.full(4, -2.0, np.float32)
    # one 4x2 view: column 0 row 0 is on part A1 (A and A1 active), row 1 on A only, row 2 on B, row 3 background
    maps = np.zeros((1, 4, 2, d), np.float16)
    maps[0, 0, :] = [1, 1, 0, 0]
    maps[0, 1, :] = [1, 0, 0, 0]
    maps[0, 2, :] = [0, 0, 1, 0]
    maps[0, 3, :] = [0, 0, 0, 1]
    clip = np.eye(4, 8, dtype=np.float32) if with_clip else None
    return Field(
        run_dir=Path("."), info={"num_gaussians": n, "clip_has_weights": with_clip}, features=np.zeros((n, d), np.float32),
        queries=queries, query_bias=bias, query_clip=clip, lifted=lifted,
        query_size=lifted.astype(np.float32).sum(1) / 255, visibility=np.ones(n, np.float32),
        view_names=["v0"], view_maps=maps, image_sizes=np.array([[20, 40]]),
    )


def test_pixel_feature_scales_click_to_map_and_checks_bounds():
    fld = make_field()
    # image 20x40 -> map 2x4: y in [10, 20) is map row 1
    assert np.allclose(pixel_feature(fld, Click("v0", 3.0, 15.0)), [1, 0, 0, 0])
    with pytest.raises(QueryError, match="unknown image name 'nope'"):
        pixel_feature(fld, Click("nope", 1, 1))
    for x, y in [(-0.1, 1), (20, 1), (1, 40), (float("nan"), 1)]:
        with pytest.raises(QueryError, match="outside image"):
            pixel_feature(fld, Click("v0", x, y))


def test_whole_takes_largest_active_query_and_part_the_smaller():
    fld = make_field()
    on_part = pixel_feature(fld, Click("v0", 1, 1))
    assert pick_query(fld, on_part, "whole") == 0
    assert pick_query(fld, on_part, "part") == 1
    on_a_only = pixel_feature(fld, Click("v0", 1, 11))
    assert pick_query(fld, on_a_only, "part") == 0  # no smaller active query: the whole itself


def test_click_selection_matches_object_and_threshold():
    fld = make_field()
    sel = select_by_clicks(fld, [Click("v0", 1, 1)], "whole", 0.5)
    assert np.array_equal(np.flatnonzero(sel.mask), np.arange(6))
    sel = select_by_clicks(fld, [Click("v0", 1, 1)], "whole", 0.3)  # leakage 100/255 = 0.39 now passes
    assert np.array_equal(np.flatnonzero(sel.mask), np.arange(7))
    sel = select_by_clicks(fld, [Click("v0", 1, 1)], "part", 0.5)
    assert np.array_equal(np.flatnonzero(sel.mask), np.arange(3))


def test_multiple_positive_and_negative_clicks():
    fld = make_field()
    sel = select_by_clicks(fld, [Click("v0", 1, 11), Click("v0", 1, 25)], "whole")
    assert np.array_equal(np.flatnonzero(sel.mask), np.arange(10))
    # a negative click on the part removes it from the whole (part scores 240 >= whole's 230)
    sel = select_by_clicks(fld, [Click("v0", 1, 11), Click("v0", 1, 1, positive=False)], "whole", 0.5)
    assert np.array_equal(np.flatnonzero(sel.mask), np.arange(3, 6))
    with pytest.raises(QueryError, match="positive"):
        select_by_clicks(fld, [Click("v0", 1, 1, positive=False)])
    with pytest.raises(QueryError, match="positive"):
        combine(fld, [])


def test_text_refused_without_clip_weights_and_works_with_them():
    with pytest.raises(QueryError, match="CLIP"):
        select_by_text(make_field(False), np.ones(8, np.float32), np.ones((2, 8), np.float32))
    fld = make_field(True)
    text = np.eye(8, dtype=np.float32)[2]  # aligned with query 2's CLIP vector (object B)
    negatives = np.eye(8, dtype=np.float32)[[6, 7]]
    sel = select_by_text(fld, text, negatives)
    assert sel.queries == [2]
    assert np.array_equal(np.flatnonzero(sel.mask), np.arange(6, 10))


def test_discover_objects_keeps_wholes_and_drops_contained_parts():
    fld = make_field()
    objects = discover_objects(fld, 0.5, min_gaussians=2)
    found = {k: tuple(np.flatnonzero(m)) for k, m in objects}
    assert found == {0: tuple(range(6)), 2: tuple(range(6, 10)), 3: (10, 11)}
