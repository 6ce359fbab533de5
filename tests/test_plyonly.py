"""A splat file alone, end to end through the CLI: `train --splats FILE` without `--data`, then
`segment --point`, clicks in the made-up views, the viewer on such a run, resume, and the one-line
refusals (nothing visible, a point outside the scene)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
from test_viewer_browser import browser, drive_viewer  # noqa: F401 - `browser` is a fixture

from splatseg.cli import main
from splatseg.data import load_scene
from splatseg.data.synthetic import load_ground_truth
from splatseg.io.ply import read_ply, read_vertex_table, write_ply
from splatseg.metrics import iou
from splatseg.run import load_field
from splatseg.types import Splats

TRAIN_FLAGS = ["--iterations", "300", "--no-progress", "--virtual.num-views", "12", "--virtual.max-side", "160"]


def run_cli(args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def plyonly(tiny_scene, tmp_path_factory):
    """(run dir, splats file, train stdout, ground truth): conftest's tiny scene given as its PLY
    alone, in a folder with nothing else."""
    root = tmp_path_factory.mktemp("plyonly")
    ply = root / "only.ply"
    shutil.copy(tiny_scene / "splats.ply", ply)
    code, out, err = run_cli(["train", "--splats", ply, "--out", root / "run", *TRAIN_FLAGS])
    assert code == 0, err
    return root / "run", ply, out, load_ground_truth(tiny_scene)


def test_train_without_data_makes_and_records_the_views(plyonly):
    run, ply, out, _ = plyonly
    note = [line for line in out.splitlines() if line.startswith("no photos given")]
    assert len(note) == 1 and "virtual views" in note[0]
    info = json.loads((run / "run.json").read_text())
    assert info["ply_only"] is True and info["config"]["data"] is None
    vv = info["virtual_views"]
    assert vv["kind"] == "object" and vv["views"] >= 12 and vv["coverage"] > 0.9
    assert f"made {vv['views']} virtual views" in note[0]
    assert info["scene"] == str((run / "views").resolve()) and info["splats"] == str(ply.resolve())
    assert len(list((run / "views" / "images").glob("*.png"))) == vv["views"]
    assert len(list((run / "views" / "segments").glob("*.npz"))) == vv["views"]
    fld = load_field(run)
    assert fld.view_names == [f"virtual_{i:03d}" for i in range(vv["views"])] and info["heldout_views"] == []


def object_point(gt, splats, oid: int, where: str) -> list[float]:
    """A 3D prompt for object `oid`: "surface" (the object's Gaussian nearest its centroid), "off"
    (that point moved 2% of the scene size away from the centroid), "centre" (the centroid: inside
    the hollow ball)."""
    pts = splats.means[gt.object_id == oid].astype(np.float64)
    c = pts.mean(0)
    s = pts[np.argmin(np.linalg.norm(pts - c, axis=1))]
    if where == "centre":
        return c.tolist()
    if where == "surface":
        return s.tolist()
    size = np.linalg.norm(np.quantile(splats.means, 0.99, 0) - np.quantile(splats.means, 0.01, 0))
    return (s + 0.02 * size * (s - c) / np.linalg.norm(s - c)).tolist()


@pytest.mark.parametrize("where", ["surface", "off", "centre"])
def test_segment_point_selects_the_object(plyonly, tmp_path, where):
    run, ply, _, gt = plyonly
    splats = read_ply(ply)
    ball = gt.object_names.index("ball")
    out = tmp_path / "ball.ply"
    code, stdout, err = run_cli(["segment", "--run", run, "--point", *object_point(gt, splats, ball, where), "--out", out])
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert {"selected", "total", "seconds"} <= summary.keys()
    table = read_vertex_table(out)
    assert len(table) == summary["selected"]
    # rows copied from the input: every exported centre is a centre of the ball's Gaussians mostly
    selected = np.isin(splats.means[:, 0], table["x"]) & np.isin(splats.means[:, 1], table["y"])
    assert iou(selected, gt.object_id == ball) > 0.6, where


def test_clicks_in_virtual_views_and_several_points(plyonly, tmp_path):
    run, ply, _, gt = plyonly
    splats = read_ply(ply)
    fld = load_field(run)
    mug, ball = gt.object_names.index("mug"), gt.object_names.index("ball")

    def selected(*prompt) -> np.ndarray:
        out = tmp_path / "sel.ply"
        code, stdout, err = run_cli(["segment", "--run", run, *prompt, "--out", out])
        assert code == 0, err
        table = read_vertex_table(out)
        assert len(table) == json.loads(stdout.strip().splitlines()[-1])["selected"]
        return np.isin(splats.means[:, 0], table["x"]) & np.isin(splats.means[:, 1], table["y"])

    on_ball = ["--point", *object_point(gt, splats, ball, "surface")]
    on_mug = ["--point", *object_point(gt, splats, mug, "surface")]
    alone = selected(*on_ball)
    both = selected(*on_ball, *on_mug)
    assert (both & (gt.object_id == mug)).mean() > 0.5 * (gt.object_id == mug).mean() and (both & alone).sum() == alone.sum()
    without = selected(*on_ball, "--negative-point", *object_point(gt, splats, mug, "surface"))
    assert (without & (gt.object_id == mug)).sum() < 0.1 * (gt.object_id == mug).sum()
    # a click in one of the made-up views, mixed with a point
    w, h = (int(v) for v in fld.image_sizes[0])
    mixed = selected("--click", fld.view_names[0], w / 2, h / 2, *on_ball)
    assert mixed.sum() >= alone.sum()


def test_point_outside_the_scene_is_a_one_line_error(plyonly, tmp_path):
    run, _, _, _ = plyonly
    code, _, err = run_cli(["segment", "--run", run, "--point", 100, 100, 100, "--out", tmp_path / "o.ply"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "outside the scene bounds" in err
    code, _, err = run_cli(["segment", "--run", run, "--point", 0.0, 0.0, 0.65, "--out", tmp_path / "o.ply"])  # in the air above the table
    assert code == 2 and len(err.strip().splitlines()) == 1 and "from the nearest surface" in err
    assert list(tmp_path.iterdir()) == []


def test_a_file_with_nothing_visible_is_a_one_line_error(tiny_scene, tmp_path):
    s = read_ply(tiny_scene / "splats.ply")
    faint = Splats(s.means, s.quats, s.log_scales, np.full(len(s), -12.0, np.float32), s.sh0, s.shN)
    write_ply(tmp_path / "faint.ply", faint)
    code, _, err = run_cli(["train", "--splats", tmp_path / "faint.ply", "--out", tmp_path / "run", *TRAIN_FLAGS])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no Gaussian would be visible in front of any view" in err
    assert not (tmp_path / "run").exists(), "nothing half-written"
    code, _, err = run_cli(["train", "--out", tmp_path / "run2", *TRAIN_FLAGS])
    assert code == 2 and "--splats FILE alone" in err and len(err.strip().splitlines()) == 1


def test_rerun_reuses_the_views_and_refuses_other_splats(plyonly, tmp_path):
    run, ply, _, _ = plyonly
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    code, out, err = run_cli(["train", "--splats", ply, "--out", copy, *TRAIN_FLAGS])
    assert code == 0, err
    assert "reusing" in out
    other = tmp_path / "other.ply"
    s = read_ply(ply)
    write_ply(other, s.subset(np.arange(len(s) - 5)))
    code, _, err = run_cli(["train", "--splats", other, "--out", copy, *TRAIN_FLAGS])
    assert code == 2 and "different splats" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["train", "--splats", ply, "--out", copy, *TRAIN_FLAGS[:-1], "16"])
    assert code == 2 and "other --virtual settings" in err


def test_viewer_opens_a_plyonly_run_and_a_click_selects(plyonly):
    from test_viewer import free_port

    from splatseg.viewer import ViewerConfig, run_viewer
    from splatseg.viewer.session import SelectionSession

    run, ply, _, gt = plyonly
    app = run_viewer(ViewerConfig(run=run, port=free_port()), block=False)
    try:
        assert app.initial_view == "virtual_000" and not app.warnings
        cams = load_scene(app.field.scene_root).cameras  # the made-up views, read like a capture
        session = SelectionSession(app.field, app.picking)  # what each browser tab owns
        ball = gt.object_names.index("ball")
        centre = read_ply(ply).means[gt.object_id == ball].mean(0)
        eye = cams.centers[0]
        f = float(cams.Ks[0, 0, 0])
        result = session.click(eye, centre - eye, f)
        assert result.hit.alpha > 0.5
        assert iou(session.mask, gt.object_id == ball) > 0.6
    finally:
        app.stop()


@pytest.mark.slow
@pytest.mark.browser
def test_clicks_in_chromium_on_a_plyonly_run(browser, plyonly, tmp_path):
    """The browser session of test_viewer_browser (click, negative, clear, overlay, second tab,
    export) on the PLY-only run: it starts at the first made-up view."""
    run, _, _, gt = plyonly
    copy = tmp_path / "run"
    shutil.copytree(run, copy)  # exports/ stay out of the module's run
    drive_viewer(browser, copy, gt.object_id, min_iou=0.6, screenshot="viewer_selected_plyonly.png", exact_negative=False)


@pytest.mark.slow
def test_sam_segments_the_made_up_views_when_asked(tiny_scene, tmp_path, monkeypatch):
    """`--mask-source sam` on a PLY-only run: SAM (a tiny random one, no weights here) segments the
    renders, and the run records it."""
    from test_segments import tiny_sam

    import splatseg.train.segments_stage as stage
    from splatseg.data.virtual_views import VirtualViewsConfig
    from splatseg.segments.sam import SamConfig, SamSource
    from splatseg.train import TrainConfig, train

    cfg = SamConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.95, min_segment_fraction=0.0)
    asked = []
    monkeypatch.setattr(stage, "make_source", lambda name, **kw: asked.append(name) or SamSource(cfg, model=tiny_sam()))
    run = train(TrainConfig(splats=tiny_scene / "splats.ply", out=tmp_path / "run", mask_source="sam", iterations=20, progress=False,
                            virtual=VirtualViewsConfig(num_views=6, max_side=64)))
    info = json.loads((run / "run.json").read_text())
    assert asked == ["sam"] and info["ply_only"] and info["segments_model"].startswith("sam-vit_h")
    assert len(list((run / "views" / "segments").glob("*.npz"))) == info["virtual_views"]["views"]
