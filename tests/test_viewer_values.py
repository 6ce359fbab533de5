"""Viewer values, not just shapes (issue 12): the arrays handed to viser are the splats' opacities
(not their logits), positions, colours and covariances worked out by hand; a threshold change on a
field with graded scores moves the selection; the redraw throttle is tested on events, not sleeps."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from splatseg.types import SH_C0, Splats
from splatseg.viewer.display import SplatArrays
from splatseg.viewer.picking import PickingTensors
from splatseg.viewer.session import SelectionSession
from test_query_edges import field


def hand_splats() -> Splats:
    """Three splats: opacity logits 0, ln 3, -ln 4 (opacities 1/2, 3/4, 1/5); scales e^-1 .. ;
    the second turned 90 degrees about z; colours from sh0 = (c - 0.5) / SH_C0."""
    quarter = math.sqrt(0.5)
    rgb = np.array([[0.5, 0.5, 0.5], [1.0, 0.0, 0.25], [0.2, 0.4, 0.6]], np.float32)
    return Splats(
        means=np.array([[0, 0, 0], [1, 2, 3], [-1, 0.5, 4]], np.float32),
        quats=np.array([[1, 0, 0, 0], [quarter, 0, 0, quarter], [2, 0, 0, 0]], np.float32),  # w x y z, the third not unit
        log_scales=np.log(np.array([[1, 2, 3], [0.1, 0.2, 0.3], [0.5, 0.5, 0.5]], np.float32)),
        opacity_logits=np.array([0.0, math.log(3), -math.log(4)], np.float32),
        sh0=((rgb - 0.5) / SH_C0)[:, None, :].astype(np.float32),
        shN=np.zeros((3, 0, 3), np.float32),
    )


def test_viser_gets_opacities_positions_colours_and_covariances_by_value():
    a = SplatArrays.from_splats(hand_splats())
    np.testing.assert_allclose(a.opacities[:, 0], [0.5, 0.75, 0.2], atol=1e-6)  # sigmoid of the logits
    assert a.opacities.shape == (3, 1) and a.opacities.dtype == np.float32
    np.testing.assert_array_equal(a.centers, [[0, 0, 0], [1, 2, 3], [-1, 0.5, 4]])
    assert a.rgbs.tolist() == [[128, 128, 128], [255, 0, 64], [51, 102, 153]]
    np.testing.assert_allclose(a.covariances[0], np.diag([1.0, 4.0, 9.0]), rtol=1e-5)
    # turned 90 degrees about z: x and y swap their variances
    np.testing.assert_allclose(a.covariances[1], np.diag([0.04, 0.01, 0.09]), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(a.covariances[2], np.eye(3) * 0.25, rtol=1e-5)  # the quaternion's norm does not scale


def test_a_threshold_change_moves_a_graded_selection():
    fld = field([[50, 100, 150, 200, 255], [255, 0, 0, 0, 0]])
    n = fld.num_gaussians
    picking = PickingTensors.build(np.zeros((n, 3)), np.tile([1.0, 0, 0, 0], (n, 1)), np.ones((n, 3)), np.ones(n), fld.features)
    s = SelectionSession(fld, picking, threshold=0.3)
    s.add_feature(np.array([1.0, -1.0], np.float32))  # only query 0 active
    assert s.mask.tolist() == [False, True, True, True, True]  # above 76
    s.set_threshold(0.5)
    assert s.mask.tolist() == [False, False, True, True, True]  # above 127
    s.set_threshold(0.7)
    assert s.mask.tolist() == [False, False, False, True, True]  # above 178
    s.set_threshold(150 / 255)
    assert s.mask.tolist() == [False, False, False, True, True]  # a score exactly at the threshold is out
    s.set_threshold(0.0)
    assert s.mask.all()


def test_latest_only_runs_once_more_for_every_burst_of_requests():
    from splatseg.viewer.app import _LatestOnly

    started, release = threading.Event(), threading.Event()
    calls = []

    def fn():
        calls.append(len(calls))
        if len(calls) == 1:  # the first call holds until the burst below has arrived
            started.set()
            assert release.wait(30)

    lo = _LatestOnly(fn)
    first = threading.Thread(target=lo.request)
    first.start()
    assert started.wait(30)
    burst = [threading.Thread(target=lo.request) for _ in range(7)]
    for th in burst:
        th.start()
    for th in burst:
        th.join(30)  # each returns at once: the running call will see the pending flag
        assert not th.is_alive()
    assert calls == [0]
    release.set()
    first.join(30)
    assert calls == [0, 1]  # the seven collapsed into one more run
    lo.request()  # an idle throttle runs a request straight away
    assert calls == [0, 1, 2]
