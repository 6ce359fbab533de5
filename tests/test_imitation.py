"""The SAM-decoder path: embedding grid, SAM's decoder on precomputed embeddings, the teacher and
its cache, imitation training, 3D aggregation, the ray-pair refinement, `imitate` / `decode`.

SAM here is a tiny randomly initialised model built from segment-anything's own modules (256 px
input, 16 x 16 embedding of 32 channels); the real registry models only appear where building
them is cheap (no encoder pass: vit_b at 1024 px takes a minute on these CPUs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_sam
from scipy import ndimage

from splatseg.cli import main
from splatseg.data.synthetic import TABLE_ID, load_ground_truth
from splatseg.evaluate import choose_click, render_selection
from splatseg.imitation.aggregate import Box2D, LiftViews, Point2D, aggregate
from splatseg.imitation.config import ImitateConfig
from splatseg.imitation.decoder import PromptDecoder, PromptError, check_prompts
from splatseg.imitation.distill import imitate, interpolate_camera, new_target_schedule
from splatseg.imitation.field import CellView, load_imitation
from splatseg.imitation.fidelity import grid_points, view_fidelity
from splatseg.imitation.refine import refine_scores
from splatseg.imitation.teacher import EmbeddingGrid, Teacher, TeacherSpec, build_teacher_model, cached_embedding
from splatseg.imitation.views import DecoderRun, View, visible
from splatseg.io.images import load_image, load_mask
from splatseg.io.ply import read_ply
from splatseg.metrics import boundary_iou, iou
from splatseg.run import file_sha256




def smooth_image(seed: int, h: int = 72, w: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((h, w, 3)), (6, 6, 0))
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def write_run_json(run_dir: Path, scene: Path, holdout_every: int = 4) -> Path:
    """The part of a MaskField run the decoder path reads: run.json (scene, splats, views)."""
    names = sorted(p.stem for p in (scene / "images").iterdir())
    held = [n for i, n in enumerate(names) if i % holdout_every == holdout_every - 1]
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"version": 1, "scene": str(scene), "splats": str(scene / "splats.ply"), "splats_sha256": file_sha256(scene / "splats.ply"),
            "num_gaussians": len(read_ply(scene / "splats.ply")),
            "train_views": [n for n in names if n not in held], "heldout_views": held}
    (run_dir / "run.json").write_text(json.dumps(info))
    return run_dir


@pytest.fixture(scope="module")
def bare_run(tiny_scene, tmp_path_factory) -> Path:
    return write_run_json(tmp_path_factory.mktemp("imitation") / "run", tiny_scene)


@pytest.fixture(scope="module")
def untrained(bare_run, tmp_path_factory) -> Path:
    """A run with an untrained imitation field and the tiny SAM's decoder: every code path of
    `decode` runs (its masks mean nothing), without paying for training."""
    from splatseg.imitation.field import ImitationModel, save_imitation

    run = tmp_path_factory.mktemp("untrained") / "run"
    shutil.copytree(bare_run, run)
    model = ImitationModel(4000, 8, 32, 32, 256, 16, 1, torch.Generator().manual_seed(0))
    meta = {"teacher": "tiny-sam/random-init-0", "sam_model": "tiny"}
    save_imitation(run / "imitation.npz", model, PromptDecoder.from_sam(tiny_sam()), meta)
    return run


@pytest.fixture(scope="module")
def imitated(bare_run, tmp_path_factory) -> tuple[Path, dict]:
    """An imitation field trained on the tiny scene against the tiny SAM (copied run dir)."""
    run = tmp_path_factory.mktemp("imitated") / "run"
    shutil.copytree(bare_run, run)
    cfg = ImitateConfig(run=run, steps=150, augment_targets=2, progress=False, seed=0)
    return run, imitate(cfg, teacher=Teacher(tiny_sam(), "tiny-sam/random-init-0"))


# ----------------------------------------------------------------------------- grid and decoder


@pytest.mark.parametrize("width, height", [(192, 144), (288, 288), (100, 37), (37, 100)])
def test_embedding_grid_follows_sam_preprocessing(width, height):
    from segment_anything.utils.transforms import ResizeLongestSide

    grid = EmbeddingGrid(width, height)
    h, w = ResizeLongestSide(1024).apply_image(np.zeros((height, width, 3), np.uint8)).shape[:2]
    assert grid.input_size == (h, w) and max(h, w) == 1024
    assert grid.valid == (int(np.ceil(h / 16)), int(np.ceil(w / 16)))
    # A point at pixel (u, v) of the image lands on cell ((u w'/W) / 16, (v h'/H) / 16).
    K = np.array([[80.0, 0, width / 2], [0, 75.0, height / 2], [0, 0, 1]])
    cam = np.array([0.3, -0.2, 2.0])
    u, v, _ = K @ cam / cam[2]
    cu, cv, _ = grid.cell_K(K) @ cam / cam[2]
    assert np.allclose([cu, cv], [u * w / width / 16, v * h / height / 16])
    cu2, cv2, _ = grid.cell_K(K, supersample=2) @ cam / cam[2]
    assert np.allclose([cu2, cv2], [2 * cu, 2 * cv])


def test_decoder_on_the_exact_embedding_equals_the_encoder_path():
    """SamPredictor.set_image + predict and PromptDecoder on the encoder's embedding give the same
    masks and scores, for points, negative points and boxes, also after the decoder's weights went
    through `state` / `from_state`."""
    from segment_anything import SamPredictor

    sam = tiny_sam(1)
    rgb = smooth_image(0)
    H, W = rgb.shape[:2]
    ref = SamPredictor(sam)
    ref.set_image(rgb)
    embedding = Teacher(sam, "tiny").encode(rgb)
    assert embedding.shape == (32, 16, 16)
    dec = PromptDecoder.from_sam(sam)
    rebuilt = PromptDecoder.from_state(dec.spec(), {k: v.copy() for k, v in dec.state().items()})
    prompts = [
        (np.array([[40.5, 30.5]]), np.array([1]), None),
        (np.array([[10.0, 60.0], [80.0, 12.0]]), np.array([1, 0]), None),
        (None, None, np.array([5.0, 8.0, 60.0, 50.0])),
    ]
    for points, labels, box in prompts:
        want, want_scores, _ = ref.predict(
            point_coords=None if points is None else dec.to_sam_coords(points, W, H), point_labels=labels,
            box=None if box is None else dec.to_sam_coords(box.reshape(2, 2), W, H).reshape(4), multimask_output=True)
        for d in (dec, rebuilt):
            got = d.predict(torch.from_numpy(embedding)[None], W, H, points, labels, box)
            assert got.masks.shape == (3, H, W) and got.masks.dtype == bool
            assert np.array_equal(got.masks, want)
            assert np.allclose(got.scores, want_scores, atol=1e-6)
    # A perturbed embedding changes the masks (the comparison above can fail).
    noisy = torch.from_numpy(embedding + np.random.default_rng(0).normal(0, 1.0, embedding.shape).astype(np.float32))[None]
    exact = dec.predict(torch.from_numpy(embedding)[None], W, H, *prompts[0]).masks
    assert not np.array_equal(dec.predict(noisy, W, H, *prompts[0]).masks, exact)
    # Batched single points (the fidelity grid) agree with one-by-one prediction.
    pts = grid_points(W, H, 3)
    masks, scores = dec.predict_single_points(torch.from_numpy(embedding)[None], W, H, pts, batch=4)
    one = dec.predict(torch.from_numpy(embedding)[None], W, H, pts[4:5], np.array([1]))
    assert masks.shape == (9, 3, H, W) and np.array_equal(masks[4], one.masks) and np.allclose(scores[4], one.scores, atol=1e-6)


def test_prompt_coordinates_follow_the_pixel_convention():
    """SAM adds half an input pixel to coordinates after resizing; to_sam_coords undoes it, so
    splatseg's continuous (x, y) arrives at x w'/W in the input."""
    dec = PromptDecoder.from_sam(tiny_sam())
    W, H = 96, 72
    xy = np.array([[10.25, 33.0]])
    h, w = dec.grid(W, H).input_size
    sam_xy = dec.predictor.transform.apply_coords(dec.to_sam_coords(xy, W, H), (H, W)) + 0.5
    assert np.allclose(sam_xy, xy * [w / W, h / H])


@pytest.mark.parametrize("points, labels, box, needle", [
    (None, None, None, "at least one positive point or a box"),
    (np.array([[10.0, 10.0]]), np.array([0]), None, "at least one positive point or a box"),
    (np.array([[96.0, 10.0]]), np.array([1]), None, "outside the 96x72 image"),
    (np.array([[np.nan, 10.0]]), np.array([1]), None, "outside"),
    (np.array([[1.0, 1.0]]), np.array([2]), None, "1 (positive) or 0"),
    (np.array([[1.0, 1.0]]), None, None, "need labels"),
    (None, None, np.array([50.0, 10.0, 20.0, 30.0]), "0 <= x0 < x1"),
    (None, None, np.array([1.0, 2.0, 3.0]), "four finite numbers"),
])
def test_bad_prompts_are_refused_in_one_line(points, labels, box, needle):
    with pytest.raises(PromptError) as err:
        check_prompts(points, labels, box, 96, 72)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- teacher


def test_random_init_teacher_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_teacher_model(TeacherSpec("vit_b", random_init=0), "cpu")
    assert torch.rand(1).item() == before.item()  # the caller's random state is untouched
    b = build_teacher_model(TeacherSpec("vit_b", random_init=0), "cpu")
    c = build_teacher_model(TeacherSpec("vit_b", random_init=1), "cpu")
    for name in ("image_encoder.patch_embed.proj.weight", "mask_decoder.iou_prediction_head.layers.0.weight",
                 "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"):
        sa, sb, sc = a.state_dict()[name], b.state_dict()[name], c.state_dict()[name]
        assert torch.equal(sa, sb) and not torch.equal(sa, sc)
    assert a.image_encoder.img_size == 1024 and tuple(a.prompt_encoder.image_embedding_size) == (64, 64)


def test_missing_or_unloadable_weights_are_one_line_errors(tmp_path, monkeypatch):
    from splatseg.segments.cache import SegmentsError

    with pytest.raises(ValueError, match="either --sam-checkpoint or --sam-random-init"):
        TeacherSpec("vit_b", checkpoint=tmp_path / "x.pth", random_init=0)
    with pytest.raises(SegmentsError, match="does not exist"):
        build_teacher_model(TeacherSpec("vit_b", checkpoint=tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SegmentsError, match="cannot load SAM vit_b weights") as err:
        build_teacher_model(TeacherSpec("vit_b", checkpoint=tmp_path / "junk.pth"))
    assert "\n" not in str(err.value)

    def offline(url, dst, progress=True):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setenv("SPLATSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    with pytest.raises(SegmentsError, match="could not download the SAM vit_h checkpoint") as err:
        build_teacher_model(TeacherSpec("vit_h"))
    assert "--sam-checkpoint" in str(err.value) and "\n" not in str(err.value)


def test_teacher_cache_reuses_only_same_teacher_and_pixels(tmp_path):
    sam = tiny_sam(2)
    t = Teacher(sam, "tiny-a")
    rgb = smooth_image(1)
    first, fresh = cached_embedding(tmp_path, "v0", rgb, t)
    assert fresh and (tmp_path / "v0.npz").is_file()
    with np.load(tmp_path / "v0.npz") as z:
        assert z["embedding"].dtype == np.float16 and str(z["teacher"]) == "tiny-a"
    again, fresh = cached_embedding(tmp_path, "v0", rgb, t)
    assert not fresh and np.allclose(again, first, atol=2e-2)
    other = rgb.copy()
    other[0, 0] ^= 1
    _, fresh = cached_embedding(tmp_path, "v0", other, t)
    assert fresh  # one changed pixel: encoded again
    _, fresh = cached_embedding(tmp_path, "v0", other, Teacher(sam, "tiny-b"))
    assert fresh  # another teacher: encoded again
    (tmp_path / "v1.npz").write_bytes(b"broken")
    _, fresh = cached_embedding(tmp_path, "v1", rgb, t)
    assert fresh and sorted(p.name for p in tmp_path.iterdir()) == ["v0.npz", "v1.npz"]
    with pytest.raises(ValueError, match="uint8"):
        t.encode(rgb.astype(np.float32))


# ----------------------------------------------------------------------------- imitation training


def test_new_target_schedule_and_interpolated_cameras(tiny_scene):
    s = new_target_schedule(100, 4, 0.25, 10)
    assert s.sum() == 10 and s.max() == 1 and np.flatnonzero(s)[0] == 0 and np.flatnonzero(s)[-1] >= 80
    assert new_target_schedule(100, 4, 0.25, 10_000).sum() == 100  # uncapped: one new of four every step
    assert new_target_schedule(100, 4, 0.25, 0).sum() == 0
    from splatseg.data import load_scene

    cams = load_scene(tiny_scene).cameras
    for t, k in ((0.0, 0), (1.0, 1)):
        vm, K, W, H = interpolate_camera(cams, 0, 1, t)
        assert np.allclose(vm, cams.viewmats[k], atol=1e-9) and np.allclose(K, cams.Ks[k])
    vm, _, _, _ = interpolate_camera(cams, 0, 1, 0.5)
    centre = np.linalg.inv(vm)[:3, 3]
    assert np.allclose(centre, cams.centers[:2].mean(0))
    assert np.allclose(vm[:3, :3] @ vm[:3, :3].T, np.eye(3), atol=1e-9)


def test_sampled_cells_equal_the_whole_grid_at_those_cells():
    from splatseg.imitation.field import ImitationModel

    model = ImitationModel(10, 8, 32, 16, 256, 16, 1, torch.Generator().manual_seed(0))
    torch.nn.init.normal_(model.pad)  # distinct pad cells, so a misplaced index shows
    cells = torch.randn(12, 9, 8)  # 12 x 9 valid cells of the 16 x 16 grid
    full = model.embed(cells)[0].reshape(32, -1)
    index = torch.tensor([0, 8, 9, 15, 191, 192, 255])
    assert torch.allclose(model.embed_some(cells, index), full[:, index], atol=1e-6)
    assert torch.allclose(full[:, 9], full[:, 255], atol=1e-6) and not torch.allclose(full[:, 8], full[:, 9])


@pytest.mark.slow
def test_imitation_trains_saves_and_renders_consistently(imitated, tiny_scene):
    run, summary = imitated
    assert summary["augmented_targets"] == 2 and summary["teacher_views"] == 12 and summary["final_mse"] < 0.6
    assert (run / "teacher_cache").is_dir() and len(list((run / "teacher_cache").glob("*.npz"))) == 12
    imi = load_imitation(run, 4000)
    assert imi.meta["teacher"] == "tiny-sam/random-init-0" and imi.random_teacher
    with np.load(run / "imitation.npz") as z:
        assert z["features"].dtype == np.float16 and z["features"].shape == (4000, 32)
        assert not any(z[k].dtype == object for k in z.files)
    drun = DecoderRun.load(run, "cpu", imitation=imi)
    view = drun.view("view_003")  # held out
    rendered = drun.embedding(view)
    assert rendered.shape == (1, 32, 16, 16)
    # The training path (cached blend weights) and the any-camera path (render) agree.
    cell = CellView.build(imi.model, drun.params, view.viewmat, view.K, view.width, view.height)
    with torch.no_grad():
        assert torch.allclose(cell.embedding(imi.model), rendered, atol=1e-4)
    # Fidelity on held-out views beats the untrained field's, against the teacher's own embedding.
    teacher = Teacher(tiny_sam(), "tiny")
    untrained = type(imi.model)(4000, 32, 32, 256, 256, 16, 2, torch.Generator().manual_seed(0)).eval()
    trained_f, untrained_f = [], []
    for stem in drun.info["heldout_views"]:
        v = drun.view(stem)
        enc = torch.from_numpy(teacher.encode(load_image(drun.cameras.image_paths[drun.cameras.index_of(stem)])))[None]
        trained_f.append(view_fidelity(imi.decoder, drun.embedding(v), enc, v.width, v.height).token_mean)
        with torch.no_grad():
            raw = untrained.render_embedding(drun.params, v.viewmat, v.K, v.width, v.height)
        untrained_f.append(view_fidelity(imi.decoder, raw, enc, v.width, v.height).token_mean)
    assert np.mean(trained_f) > np.mean(untrained_f) + 0.1, (trained_f, untrained_f)


def test_imitation_refuses_mismatched_runs(untrained, tmp_path):
    run = untrained
    with pytest.raises(ValueError, match="features for 4000 Gaussians but the splats have 10"):
        load_imitation(run, 10)
    with pytest.raises(ValueError, match="has no imitation.npz"):
        load_imitation(tmp_path)
    (tmp_path / "imitation.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read") as err:
        load_imitation(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="--new-fraction"):
        imitate(ImitateConfig(run=run, new_fraction=2.0))


# ----------------------------------------------------------------------------- 3D aggregation


class Oracle:
    """Exact 2D masks from the generated scene's label maps: the object under the first positive
    point, minus the parts under negative points; optionally dilated (a mask that overshoots)."""

    def __init__(self, scene: Path, dilate: int = 0):
        self.gt = load_ground_truth(scene)
        self.dilate = dilate
        self.calls: list[tuple[str, np.ndarray]] = []

    def __call__(self, view, points, labels, box, mask_index):
        obj, part = self.gt.view_labels(view.name)
        self.calls.append((view.name, labels.copy()))
        x, y = points[labels == 1][0]
        mask = obj == obj[int(y), int(x)]
        for (nx, ny) in points[labels == 0]:
            mask &= part != part[int(ny), int(nx)]
        if self.dilate:
            mask = ndimage.binary_dilation(mask, iterations=self.dilate)
        return mask, 0, 1.0


def _click_on(run: DecoderRun, gt, oid: int, part: int | None = None) -> Point2D:
    def region(i):
        obj, prt = gt.view_labels(run.cameras.names[i])
        return (obj == oid) if part is None else (prt == part)

    best = max(run.train_views, key=lambda i: int(region(i).sum()))
    x, y = choose_click(region(best).astype(np.int32), 1)
    return Point2D(run.cameras.names[best], x, y, True)


@pytest.fixture(scope="module")
def geometry_run(bare_run):
    return DecoderRun.load(bare_run, "cpu", with_imitation=False)


def _heldout_iou(run: DecoderRun, gt, mask: np.ndarray, oid: int, metric=iou) -> float:
    vals = []
    for stem in run.info["heldout_views"]:
        i = run.cameras.index_of(stem)
        truth = gt.view_labels(stem)[0] == oid
        if truth.any():
            vals.append(metric(render_selection(run.params, mask, run.cameras, i), truth))
    return float(np.mean(vals))


@pytest.mark.slow
def test_aggregation_recovers_objects_from_exact_masks(geometry_run, tiny_scene):
    run = geometry_run
    oracle = Oracle(tiny_scene)
    gt = oracle.gt
    lift_views = LiftViews(run)
    for oid in (1, 5):  # mug, block
        click = _click_on(run, gt, oid)
        agg = aggregate(run, [click], source=oracle, lift_views=lift_views, rounds=2)
        truth = gt.object_id == oid
        assert iou(agg.mask, truth) >= 0.9, (gt.object_names[oid], iou(agg.mask, truth))
        assert _heldout_iou(run, gt, agg.mask, oid) >= 0.95
        assert len(agg.rounds[0]) >= 2 and sum(map(len, agg.rounds)) > len(agg.rounds[0])  # round 2 reached more views
        assert agg.source_stem == click.stem and agg.source_mask.shape == (72, 96)
    one_round = aggregate(run, [click], source=oracle, lift_views=lift_views, rounds=1)
    assert iou(agg.mask, truth) >= iou(one_round.mask, truth) - 0.005


@pytest.mark.slow
def test_negative_clicks_reach_other_views_and_remove_a_part(geometry_run, tiny_scene):
    run = geometry_run
    oracle = Oracle(tiny_scene)
    gt = oracle.gt
    lamp = gt.object_names.index("lamp")
    shade, base = gt.part_names.index("lamp shade"), gt.part_names.index("lamp base")
    pos = _click_on(run, gt, lamp, shade)
    neg = _click_on(run, gt, lamp, base)
    neg = Point2D(neg.stem, neg.x, neg.y, False)
    oracle.calls.clear()
    agg = aggregate(run, [pos, neg], source=oracle)
    with_negative = [name for name, labels in oracle.calls if (labels == 0).any()]
    assert len(with_negative) >= 3  # projected into other views as negative points, not only its own
    in_shade, in_base = gt.part_id == shade, gt.part_id == base
    whole = aggregate(run, [pos], source=oracle)
    assert whole.mask[in_base].mean() > 0.8  # without the negative click the base is part of the lamp
    # A negative point acts in the views that see it: the base's far side, seen only where the
    # point is hidden, stays (measured: 0.31 of the base left, 0.996 of the shade kept).
    assert agg.mask[in_shade].mean() > 0.9 and agg.mask[in_base].mean() < 0.5 * whole.mask[in_base].mean()


def test_aggregation_errors(geometry_run):
    run = geometry_run
    with pytest.raises(PromptError, match="hits empty space"):
        aggregate(run, [Point2D("view_000", 1.0, 1.0)], source=Oracle(Path(run.info["scene"])))
    with pytest.raises(PromptError, match="outside image"):
        aggregate(run, [Point2D("view_000", 500.0, 1.0)], source=Oracle(Path(run.info["scene"])))
    with pytest.raises(PromptError, match="at least one positive click or a box"):
        aggregate(run, [Point2D("view_000", 40.0, 40.0, False)], source=Oracle(Path(run.info["scene"])))
    with pytest.raises(ValueError, match="unknown image name"):
        aggregate(run, [Point2D("nope", 40.0, 40.0)], source=Oracle(Path(run.info["scene"])))


def test_visibility_uses_the_depth_test(geometry_run):
    run = geometry_run
    view = run.view("view_000")
    geo = run.geometry(view)
    row, col = np.unravel_index(np.argmax(geo.alpha * (geo.depth > 0)), geo.alpha.shape)
    surface = view.backproject(col + 0.5, row + 0.5, float(geo.depth[row, col]))
    centre = np.linalg.inv(view.viewmat)[:3, 3]
    behind = surface + 0.3 * (surface - centre) / np.linalg.norm(surface - centre)  # hidden behind the surface
    ok, uv = visible(view, geo, np.stack([surface, behind]))
    assert ok.tolist() == [True, False] and np.allclose(uv[0], [col + 0.5, row + 0.5], atol=1e-6)


@pytest.mark.slow
def test_ray_pair_refinement_lowers_boundary_error(geometry_run, tiny_scene):
    """Masks that overshoot the object by 2 pixels in every view: lifting keeps the table ring
    around it; the ray-pair loss moves the edge onto the colour edge (measured on held-out views)."""
    run = geometry_run
    lift_views = LiftViews(run)
    rgb = run.splats.base_rgb
    gt = load_ground_truth(tiny_scene)
    oid = 3  # the orange ball on the wooden table
    click = _click_on(run, gt, oid)
    agg = aggregate(run, [click], source=Oracle(tiny_scene, dilate=2), lift_views=lift_views)
    refined = refine_scores(agg.scores, lift_views, agg.view_masks, rgb) > 0.5
    before = _heldout_iou(run, gt, agg.mask, oid, boundary_iou)
    after = _heldout_iou(run, gt, refined, oid, boundary_iou)
    assert after > before + 0.08, (before, after)
    assert _heldout_iou(run, gt, refined, oid) > _heldout_iou(run, gt, agg.mask, oid)
    # With exact masks there is nothing to fix: refinement keeps the selection.
    exact = aggregate(run, [click], source=Oracle(tiny_scene), lift_views=lift_views)
    kept = refine_scores(exact.scores, lift_views, exact.view_masks, rgb) > 0.5
    assert iou(kept, exact.mask) > 0.97


# ----------------------------------------------------------------------------- commands


def test_decode_command_writes_mask_and_object(untrained, tmp_path, capsys):
    run = untrained
    scene = Path(json.loads((run / "run.json").read_text())["scene"])
    gt = load_ground_truth(scene)
    obj = gt.view_labels("view_000")[0]
    x, y = choose_click(obj, 3)
    mask_png, out = tmp_path / "masks" / "m.png", tmp_path / "obj.ply"
    rc = main(["decode", "--run", str(run), "--click", "view_000", str(x), str(y), "--mask-out", str(mask_png),
               "--out", str(out), "--max-views", "4", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert "RANDOMLY initialised SAM" in captured.err
    mask = load_mask(mask_png)
    assert mask.shape == (72, 96) and int(mask.sum()) == summary["mask_pixels"] and len(summary["scores"]) == 3
    assert summary["selected"] == len(read_ply(out)) > 0 and summary["total"] == 4000
    # A held-out view's mask from a click in a training view (carried over through its 3D point).
    rc = main(["decode", "--run", str(run), "--click", "view_000", str(x), str(y), "--view", "view_003",
               "--mask-out", str(tmp_path / "held.png"), "--mask-index", "2"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and summary["view"] == "view_003" and summary["mask_index"] == 2
    assert load_mask(tmp_path / "held.png").shape == (72, 96)
    rc = main(["decode", "--run", str(run), "--box", "view_000", "10", "10", "60", "50", "--mask-out", str(tmp_path / "box.png")])
    assert rc == 0 and (tmp_path / "box.png").is_file()


@pytest.mark.parametrize("args, needle", [
    (["--click", "view_000", "500", "10"], "outside image"),
    (["--click", "nope", "5", "10"], "unknown image name"),
    (["--click", "view_000", "1", "1"], "hits empty space"),
    ([], "give at least one --click"),
    (["--click", "view_000", "40", "40", "--mask-index", "3"], "--mask-index"),
    (["--click", "view_000", "40", "40", "--threshold", "2"], "--threshold"),
    (["--click", "view_000", "40", "40", "--mask-out", "m.jpg"], ".png"),
    (["--box", "view_000", "40", "40", "20", "50"], "0 <= x0 < x1"),
    (["--box", "view_001", "10", "10", "40", "40", "--view", "view_000"], "a box prompts its own view only"),
])
def test_decode_command_bad_input_one_line(untrained, args, needle, capsys, tmp_path):
    run = untrained
    out = tmp_path / "obj.ply"
    rc = main(["decode", "--run", str(run), *args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("splatseg: error:") and needle in err[-1], err
    assert not out.exists()


def test_decode_without_imitation_and_imitate_warns_about_random_teachers(bare_run, tmp_path, capsys, monkeypatch):
    rc = main(["decode", "--run", str(bare_run), "--click", "view_000", "40", "40"])
    assert rc == 2 and "splatseg imitate --run" in capsys.readouterr().err
    run = tmp_path / "run"
    shutil.copytree(bare_run, run)
    rc = main(["imitate", "--run", str(run), "--sam-checkpoint", str(tmp_path / "none.pth")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    from splatseg.imitation import distill

    monkeypatch.setattr(distill, "load_teacher", lambda spec, device: Teacher(tiny_sam(), f"sam-{spec.model_type}/random-init-{spec.random_init}"))
    rc = main(["imitate", "--run", str(run), "--sam-random-init", "7", "--steps", "3", "--augment-targets", "0",
               "--teacher-views", "3", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "RANDOM weights (seed 7)" in captured.err and "meaningless" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["teacher"] == "sam-vit_b/random-init-7" and summary["teacher_views"] == 3
