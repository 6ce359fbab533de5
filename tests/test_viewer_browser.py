"""`splatseg view` as a user meets it: headless Debian Chromium (software WebGL) driven by Playwright.

Starts the viewer on a free 127.0.0.1 port for a run on a small built-in scene (a hand-made field
from the ground truth, and, marked slow, a run trained on conftest's tiny scene), loads the page,
clicks on an object (found by projecting objects' centres with the tab's camera and keeping one
that is frontmost there), checks the server-side selection of that tab against the ground truth,
Shift-clicks (negative), clears with the page's button, sees a text prompt refused (no CLIP
weights), toggles the server-rendered overlay, opens a second tab whose selection stays separate
and closes it again, and exports with the page's buttons (the selection's PLY and its mesh as .glb:
file on the server and download in the browser). Screenshots of the selected state go to test-artifacts/viewer_selected*.png.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from conftest import require_tool
from test_viewer import free_port, iou, make_handmade_run

from splatseg.data import load_scene
from splatseg.data.synthetic import load_ground_truth
from splatseg.io.ply import read_ply, read_vertex_table, standard_property_names
from splatseg.viewer import ViewerConfig, run_viewer
from splatseg.viewer.camera import project, quat_to_matrix, viewer_matrices

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]
VIEWPORT = {"width": 1100, "height": 720}
PANEL_WIDTH = 380
"""Right-hand part of the canvas covered by viser's control panel (CSS pixels), avoided by clicks."""
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    require_tool(CHROMIUM.exists(), f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_tool(False, "playwright is not installed (pip install playwright)")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    except Exception as e:  # noqa: BLE001 - any launch failure means no browser here
        pw.stop()
        require_tool(False, f"chromium failed to launch: {str(e).splitlines()[0]}")
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    """(run dir, per-Gaussian object ids) of the hand-made run on the built-in scene."""
    run, obj, _ = make_handmade_run(tmp_path_factory.mktemp("browser"))
    return run, obj


def wait_for(predicate, timeout: float, what: str, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def open_tab(browser, app):
    """A new page on the viewer, its canvas drawn; returns (page, canvas locator, client id)."""
    before = set(app.client_ids())
    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    page.goto(app.url)
    canvas = page.locator("canvas").last
    canvas.wait_for(state="visible", timeout=30_000)
    new = wait_for(lambda: set(app.client_ids()) - before, 30, "the tab to connect")
    cid = new.pop()
    # the software-WebGL notice covers part of the page: dismiss it when it shows
    notice = page.locator(".mantine-Notification-root", has_text="Software WebGL")
    try:
        notice.first.wait_for(state="visible", timeout=3_000)
        notice.first.locator("button").click()
    except Exception:  # noqa: BLE001 - not shown (hardware WebGL): nothing to dismiss
        pass
    # the first splat frame: the canvas is no longer a flat background
    wait_for(lambda: canvas_contrast(canvas) > 10, 20, "splats to be drawn", 0.3)
    return page, canvas, cid


def canvas_contrast(canvas) -> float:
    """Standard deviation of the canvas's grey levels (0 for a blank canvas)."""
    img = Image.open(io.BytesIO(canvas.screenshot())).convert("L")
    return float(np.asarray(img, np.float32).std())


def click_target(app, cid: int, obj: np.ndarray, canvas_box: dict) -> tuple[int, dict]:
    """An object (not the table) whose centre, projected with the tab's camera, is in the free part
    of the canvas and frontmost there; returns (object id, click position in CSS pixels)."""
    cam = app._tab(cid).client.camera
    w, h = cam.image_width, cam.image_height
    viewmat, K = viewer_matrices(cam.wxyz, cam.position, cam.fov, w, h)
    means = app.arrays.centers
    uv_all, z_all = project(means, viewmat, K)
    for oid in (3, 5, 2, 4, 1):  # ball, block, box, lamp, mug: convex shapes first
        uv, _ = project(means[obj == oid].mean(0, keepdims=True), viewmat, K)
        x, y = uv[0] / [w, h] * [canvas_box["width"], canvas_box["height"]]
        if not (20 < x < canvas_box["width"] - PANEL_WIDTH and 20 < y < canvas_box["height"] - 20):
            continue
        near = np.flatnonzero((np.abs(uv_all - uv[0]).max(1) < 4) & (z_all > 0))
        if near.size and obj[near[np.argmin(z_all[near])]] == oid:
            return oid, {"x": float(x), "y": float(y)}
    raise AssertionError("no object is visible in the free part of the canvas from the initial view")


def drive_viewer(browser, run: Path, obj: np.ndarray, min_iou: float, screenshot: str, exact_negative: bool) -> None:
    """The user session of the module doc on `run`, whose Gaussians' true object ids are `obj`."""
    app = run_viewer(ViewerConfig(run=run, port=free_port()), block=False)
    try:
        page, canvas, cid = open_tab(browser, app)
        # the tab starts at the first training view (viser and splatseg both use OpenCV axes)
        cams = load_scene(app.field.scene_root).cameras
        first = cams.names.index(app.field.info["train_views"][0])
        cam = app._tab(cid).client.camera
        assert np.allclose(cam.position, cams.centers[first], atol=1e-3)
        assert np.allclose(quat_to_matrix(cam.wxyz)[:, 2], cams.camtoworlds[first][:3, 2], atol=1e-3)

        box = canvas.bounding_box()
        oid, pos = click_target(app, cid, obj, box)
        truth = obj == oid

        # click -> that object is selected for this tab
        canvas.click(position=pos)
        sel = wait_for(lambda: app.selection(cid), 10, "the click's selection")
        assert (sel.mask & truth).sum() > 0.5 * sel.count, "most selected Gaussians belong to the clicked object"
        assert iou(sel.mask, truth) > min_iou
        page.get_by_text(f"Selected {sel.count:,} of").first.wait_for(timeout=10_000)

        # Shift+click adds a negative point, the page's button clears
        canvas.click(position=pos, modifiers=["Shift"])
        wait_for(lambda: len(app.session(cid).negatives) == 1, 10, "the negative click")
        if exact_negative:  # the hand-made field: a negative on a one-part object removes all of it
            assert app.session(cid).count == 0
        page.get_by_role("button", name="Clear selection").click()
        wait_for(lambda: app.selection(cid) is None and not app.session(cid).negatives, 10, "the selection to clear")

        canvas.click(position=pos)
        sel = wait_for(lambda: app.selection(cid), 10, "the click's selection")
        assert iou(sel.mask, truth) > min_iou
        time.sleep(0.5)  # let the recoloured splats reach the canvas
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / screenshot))

        # text prompts without CLIP weights are refused in the page, the selection stays
        phrase = page.locator("xpath=//label[text()='Phrase']/ancestor::div[contains(@class,'mantine-Flex-root')][1]//input")
        phrase.fill("a ball")
        page.get_by_role("button", name="Select by text").click()
        page.locator(".mantine-Notification-root", has_text="CLIP").first.wait_for(timeout=10_000)
        assert np.array_equal(app.selection(cid).mask, sel.mask)

        # the server-side overlay replaces the browser's splats while it is on
        page.get_by_role("combobox", name="Overlay").click()
        page.get_by_role("option", name="selection").click()
        wait_for(lambda: app._tab(cid).overlay_frames > 0, 30, "a server-rendered overlay frame")
        assert not app._tab(cid).splats.visible
        page.get_by_role("combobox", name="Overlay").click()
        page.get_by_role("option", name="off").click()
        wait_for(lambda: app._tab(cid).splats.visible, 10, "the splats to come back")

        # a second tab has its own selection; closing it frees its state
        page2, canvas2, cid2 = open_tab(browser, app)
        assert cid2 != cid and app.selection(cid2) is None
        canvas2.click(position=pos)
        wait_for(lambda: app.selection(cid2), 10, "tab 2's selection")
        page2.get_by_role("button", name="Clear selection").click()
        wait_for(lambda: app.selection(cid2) is None, 10, "tab 2's selection to clear")
        assert np.array_equal(app.selection(cid).mask, sel.mask) and not app.session(cid).negatives
        page2.close()
        wait_for(lambda: cid2 not in app.client_ids(), 10, "the closed tab to be dropped")

        # export from the page: a file on the server and a download in the browser
        with page.expect_download(timeout=30_000) as download:
            page.get_by_role("button", name="Export selection").click()
        out = run / "exports" / f"selection-tab{cid}.ply"
        saved = Path(download.value.path())
        assert download.value.suggested_filename == out.name and saved.read_bytes() == out.read_bytes()
        table = read_vertex_table(out)
        assert len(table) == sel.count == len(read_ply(out))
        assert standard_property_names(table) == standard_property_names(read_vertex_table(app.field.splats_path))
        src = read_vertex_table(app.field.splats_path)
        assert np.array_equal(table.view(np.uint8).reshape(len(table), -1), src[sel.mask].view(np.uint8).reshape(len(table), -1))
        page.get_by_text(f"Exported {sel.count:,} Gaussians").first.wait_for(timeout=10_000)

        # the selection as a mesh: a .glb on the server and in the browser, readable, where the object is
        with page.expect_download(timeout=120_000) as download:
            page.get_by_role("button", name="Export mesh").click()
        glb = run / "exports" / f"selection-tab{cid}.glb"
        assert download.value.suggested_filename == glb.name and Path(download.value.path()).read_bytes() == glb.read_bytes()
        mesh = trimesh.load(glb, force="mesh", process=False)
        means = read_ply(app.field.splats_path).means[sel.mask]
        assert len(mesh.faces) > 0 and np.all(mesh.bounds[0] > means.min(0) - 0.1) and np.all(mesh.bounds[1] < means.max(0) + 0.1)
        page.get_by_text(f"Exported a mesh of {len(mesh.vertices):,} vertices").first.wait_for(timeout=10_000)
        page.close()
    finally:
        app.stop()


def test_click_select_export_in_chromium(browser, scene_run):
    """Hand-made field (features and lifted scores from the ground truth): exact answers, fast."""
    run, obj = scene_run
    drive_viewer(browser, run, obj, min_iou=0.99, screenshot="viewer_selected.png", exact_negative=True)


@pytest.mark.slow
def test_click_select_export_on_a_trained_run(browser, tiny_run, tiny_scene, tmp_path):
    """The same session on a run trained by `splatseg.train` (a copy of conftest's tiny run, so
    its exports/ stay out of the shared fixture)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    obj = load_ground_truth(tiny_scene).object_id
    drive_viewer(browser, run, obj, min_iou=0.7, screenshot="viewer_selected_trained.png", exact_negative=False)
