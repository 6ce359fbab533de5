"""The viewer's SAM-decoder mode: clicks become 3D prompt points, the live frame decodes them for
any camera, lifting feeds the tab's selection; and, in headless Chromium, the mode driven from
the page (checkbox, click, Lift to 3D).

The imitation field is untrained (its masks mean nothing) with the tiny random SAM's decoder, so
these tests check the plumbing: where the points land, that a frame's mask is the decoder's
answer to the projected points, that hidden points are left out, that the selection arrives."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_tool
from test_imitation import tiny_sam
from test_viewer import free_port, make_handmade_run

from splatseg.data import load_scene
from splatseg.imitation.aggregate import LiftViews, prompts_in_view
from splatseg.imitation.decoder import PromptDecoder
from splatseg.imitation.field import ImitationModel, save_imitation
from splatseg.imitation.views import DecoderRun, View
from splatseg.io.ply import read_ply
from splatseg.query import QueryError, Selection
from splatseg.run import load_field
from splatseg.viewer import ViewerConfig, run_viewer
from splatseg.viewer.camera import pose_from_camera, viewer_matrices
from splatseg.viewer.decoder_mode import DecoderTab
from splatseg.viewer.picking import PickingTensors
from splatseg.viewer.session import SelectionSession


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory):
    """(run dir, object ids [N]) of the hand-made viewer run with an untrained imitation field."""
    run, obj, _ = make_handmade_run(tmp_path_factory.mktemp("decoder_viewer"))
    n = len(obj)
    model = ImitationModel(n, 8, 32, 32, 256, 16, 1, torch.Generator().manual_seed(0))
    save_imitation(run / "imitation.npz", model, PromptDecoder.from_sam(tiny_sam()), {"teacher": "tiny-sam/random-init-0"})
    return run, obj


def _tab(run: Path) -> tuple[DecoderTab, DecoderRun]:
    drun = DecoderRun.load(run, "cpu")
    s = drun.splats
    picking = PickingTensors.build(s.means, s.unit_quats, s.scales, s.opacities, load_field(run).features)
    return DecoderTab(drun, picking, LiftViews(drun), max_side=160), drun


def _pose(drun: DecoderRun, i: int):
    """A viser camera (wxyz, position, fov) equal to scene camera i."""
    from scipy.spatial.transform import Rotation

    c2w = drun.cameras.camtoworlds[i]
    wxyz = np.roll(Rotation.from_matrix(c2w[:3, :3]).as_quat(), 1)
    fov = 2 * np.arctan(0.5 * drun.cameras.heights[i] / drun.cameras.Ks[i, 1, 1])
    return wxyz, c2w[:3, 3], float(fov)


def test_decoder_clicks_land_on_the_surface_and_frames_decode_them(decoder_run):
    run, obj = decoder_run
    tab, drun = _tab(run)
    cams = drun.cameras
    ball = obj == 3
    centre = drun.splats.means[ball].mean(0)
    origin = cams.centers[0]
    point = tab.click(origin, centre - origin, float(cams.Ks[0, 1, 1]))
    # the point is on the ball's near surface: within one radius of its centre, nearer the camera
    radius = np.linalg.norm(drun.splats.means[ball] - centre, axis=1).max()
    assert np.linalg.norm(point.world - centre) < 1.1 * radius
    assert np.linalg.norm(point.world - origin) < np.linalg.norm(centre - origin)
    with pytest.raises(QueryError, match="nothing under the cursor"):
        tab.click(origin, origin - centre, float(cams.Ks[0, 1, 1]))  # looking away from the scene
    wxyz, position, fov = _pose(drun, 0)
    frame = tab.frame(wxyz, position, fov, 960, 720)
    assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8
    assert frame.mask is not None and frame.mask.shape == (120, 160) and frame.scores.shape == (3,)
    # the frame's mask is the decoder's answer to the projected point, for this very camera
    viewmat, K = viewer_matrices(wxyz, position, fov, 160, 120)
    view = View(viewmat, K, 160, 120)
    xy, labels = prompts_in_view(view, drun.geometry(view), tab.points)
    assert labels.tolist() == [1]
    want = drun.decode(view, xy, labels)
    assert np.array_equal(frame.mask, want.masks[want.choose(None)])
    tab.set_mask_choice("2")
    assert np.array_equal(tab.frame(wxyz, position, fov, 960, 720).mask, want.masks[2])
    # from the opposite side of the scene the ball's near point is hidden: no mask
    far = int(np.argmax(np.linalg.norm(cams.centers - cams.centers[0], axis=1)))
    wxyz, position, fov = _pose(drun, far)
    hidden = tab.frame(wxyz, position, fov, 960, 720)
    assert hidden.mask is None and "no positive point is visible" in tab.describe()


@pytest.mark.slow
def test_decoder_lift_feeds_the_session_selection(decoder_run):
    run, obj = decoder_run
    tab, drun = _tab(run)
    with pytest.raises(QueryError, match="positive decoder click"):
        tab.lift()
    cams = drun.cameras
    centre = drun.splats.means[obj == 3].mean(0)
    tab.click(cams.centers[0], centre - cams.centers[0], float(cams.Ks[0, 1, 1]))
    tab.frame(*_pose(drun, 0), 960, 720)
    sel, agg = tab.lift(threshold=0.5)
    assert sel.mask.shape == (len(obj),) and sel.scores.shape == (len(obj),) and len(agg.rounds[0]) >= 1
    session = SelectionSession(load_field(run), None)
    got = session.set_selection(sel, "the SAM decoder")
    assert np.array_equal(got.mask, sel.scores > session.threshold)
    assert "the SAM decoder" in session.describe()
    session.set_threshold(0.9)
    assert np.array_equal(session.mask, sel.scores > 0.9)  # the slider still applies
    session.clear()
    assert session.selection is None


def test_viewer_without_imitation_has_no_decoder_mode(tmp_path):
    run, _, _ = make_handmade_run(tmp_path)
    app = run_viewer(ViewerConfig(run=run, port=free_port()), block=False)
    try:
        assert app.decoder_run is None
    finally:
        app.stop()
    (run / "imitation.npz").write_bytes(b"junk")
    app = run_viewer(ViewerConfig(run=run, port=free_port()), block=False)
    try:
        assert app.decoder_run is None and any("SAM-decoder mode unavailable" in w for w in app.warnings)
    finally:
        app.stop()


@pytest.mark.browser
@pytest.mark.slow
def test_decoder_mode_in_the_browser(decoder_run):
    """Headless Chromium: tick "Decoder clicks", click the scene, see the live decoder frame arrive,
    press "Lift to 3D", and the tab's selection is set from the decoder."""
    from test_viewer_browser import CHROMIUM, CHROMIUM_ARGS, click_target, open_tab, wait_for

    require_tool(CHROMIUM.exists(), f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    run, obj = decoder_run
    app = run_viewer(ViewerConfig(run=run, port=free_port()), block=False)
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page, canvas, cid = open_tab(browser, app)
        tab = app._tab(cid)
        assert tab.decoder is not None and any("RANDOMLY initialised SAM" in w for w in app.warnings)
        box = canvas.bounding_box()
        oid, pos = click_target(app, cid, obj, box)
        page.get_by_text("Decoder clicks").first.click()
        wait_for(lambda: bool(tab.gui["decoder_on"].value), 10, "decoder mode to switch on")
        canvas.click(position=pos)
        wait_for(lambda: len(tab.decoder.points) == 1, 30, "the decoder click")
        # a frame that answers the click (the clicked point is visible from where it was clicked)
        wait_for(lambda: tab.decoder.last is not None and tab.decoder.last.mask is not None, 60, "a decoder frame with the mask")
        assert tab.decoder_frames >= 1 and int(tab.decoder.last.mask.sum()) > 0
        assert not tab.splats.visible  # the server-rendered frame replaces the splats meanwhile
        page.get_by_text("Lift to 3D").first.click()
        wait_for(lambda: tab.session.selection is not None, 120, "the lifted selection")
        # the callback then switches decoder mode off and shows the splats again: wait for all of it
        wait_for(lambda: tab.splats.visible and not tab.gui["decoder_on"].value, 30, "decoder mode to switch off")
        assert "SAM decoder" in tab.session.describe()
        browser.close()
    finally:
        pw.stop()
        app.stop()
