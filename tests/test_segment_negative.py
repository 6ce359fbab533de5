"""`segment --negative` changes the result (issue 12): a negative click on a part of the clicked
object removes exactly what `query.combine` says it removes, through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splatseg.cli import main
from splatseg.io.ply import read_vertex_table
from splatseg.prompts import click_queries, run_picking
from splatseg.query import DEFAULT_THRESHOLD, Click, combine
from splatseg.run import load_field


def negative_click_that_cuts(fld, picking, stem: str, pos_q: int):
    """A pixel of view `stem` whose negative ("part") query differs from `pos_q` and removes some,
    not all, of pos_q's selection; scanned on a coarse grid."""
    w, h = (int(v) for v in fld.image_sizes[0])
    full = combine(fld, [pos_q], (), DEFAULT_THRESHOLD).count
    for y in np.linspace(2.5, h - 2.5, 12):
        for x in np.linspace(2.5, w - 2.5, 12):
            _, neg = click_queries(fld, [Click(stem, float(x), float(y), False)], "whole", picking)
            if neg[0] != pos_q and 0 < combine(fld, [pos_q], neg, DEFAULT_THRESHOLD).count < full:
                return float(x), float(y), neg[0]
    return None


def test_segment_negative_click_removes_its_part(tiny_run, tmp_path, capsys):
    fld = load_field(tiny_run)
    picking = run_picking(fld)
    stem = fld.view_names[0]
    w, h = (int(v) for v in fld.image_sizes[0])
    pos, _ = click_queries(fld, [Click(stem, w / 2, h / 2)], "whole", picking)
    found = negative_click_that_cuts(fld, picking, stem, pos[0])
    assert found is not None, "no pixel of view 0 picks a part that overlaps the clicked object"
    nx, ny, neg_q = found
    expected = combine(fld, pos, [neg_q], DEFAULT_THRESHOLD)
    positive_only = combine(fld, pos, (), DEFAULT_THRESHOLD)
    assert 0 < expected.count < positive_only.count

    out = tmp_path / "cut.ply"
    code = main([str(a) for a in ["segment", "--run", tiny_run, "--click", stem, w / 2, h / 2, "--negative", stem, nx, ny, "--out", out]])
    stdout = capsys.readouterr().out
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["selected"] == expected.count < positive_only.count
    assert summary["queries"] == pos
    rows = read_vertex_table(out)
    source = read_vertex_table(fld.splats_path)
    assert rows.tobytes() == source[expected.mask].tobytes()  # exactly the rows the negative leaves
