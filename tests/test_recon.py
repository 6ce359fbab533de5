"""Tests of `splatseg recon`: losses, initialisation, densification bookkeeping, and short CPU
reconstructions of a tiny generated scene (held-out PSNR floor, checkpoint / resume, errors)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from splatseg.recon import PRESETS, ReconConfig, ReconError, preset, run_recon
from splatseg.recon.densify import Densifier, GsplatDefault, clone, remove, reset_opacity, split
from splatseg.recon.init import focus_point, project, random_points, splats_from_points
from splatseg.recon.losses import SSIM_C1, photometric_loss, psnr, ssim
from splatseg.types import Cameras


# ------------------------------------------------------------------------------ losses
def test_ssim_identical_is_one_and_constant_images_match_formula():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(32, 40, 3, generator=g)
    assert float(ssim(img, img)) == pytest.approx(1.0, abs=1e-6)
    # Two constant images: only the luminance term survives (valid-region SSIM, no padding).
    a, b = 0.5, 0.25
    expected = (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)
    value = float(ssim(torch.full((20, 20, 3), a), torch.full((20, 20, 3), b)))
    assert value == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.80006, abs=1e-4)


def test_ssim_matches_skimage_gaussian_ssim_on_interior():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    x = rng.random((48, 48, 3)).astype(np.float64)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    _, full = skimage_metrics.structural_similarity(
        x, y, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    # skimage uses a truncated (radius 3.5 sigma -> 11x11) window; compare on the valid region.
    ref = full[5:-5, 5:-5].mean()
    ours = float(ssim(torch.from_numpy(x), torch.from_numpy(y)))
    assert ours == pytest.approx(ref, abs=1e-6)


def test_psnr_and_loss():
    a = torch.zeros(16, 16, 3)
    b = torch.full((16, 16, 3), 0.1)
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-5)
    assert math.isinf(psnr(a, a))
    assert float(photometric_loss(a, a, 0.2)) == pytest.approx(0.0, abs=1e-6)
    assert float(photometric_loss(a, b, 0.0)) == pytest.approx(0.1, abs=1e-6)


# ------------------------------------------------------------------------------ init
def _ring(num=12, size=64, radius=3.0, fov_deg=40.0) -> Cameras:
    from splatseg.data.synthetic import look_at

    f = 0.5 * size / np.tan(np.deg2rad(fov_deg) / 2)
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    vms = []
    for i in range(num):
        th = 2 * np.pi * i / num
        eye = np.array([radius * np.cos(th), radius * np.sin(th), 1.0 + 0.6 * (i % 2)])
        vms.append(look_at(eye, np.zeros(3)))
    names = [f"v{i:02d}" for i in range(num)]
    return Cameras(np.stack(vms), np.tile(K, (num, 1, 1)), np.full(num, size), np.full(num, size), names,
                   [Path("images") / f"{n}.png" for n in names])


def test_random_points_cover_the_common_volume_and_a_far_shell():
    cams = _ring()
    assert np.linalg.norm(focus_point(cams)) < 1e-6
    pts = random_points(cams, 2000, far_fraction=0.25, min_views=0.5, rng=np.random.default_rng(0))
    assert pts.shape == (2000, 3)
    _, _, vis = project(pts, cams)
    common, far = vis[:, :1500], vis[:, 1500:]
    assert (common.sum(0) >= 6).all()
    assert (far.sum(0) >= 1).all()  # every far point is seen by the camera that placed it
    centers_dist = np.linalg.norm(cams.centers, axis=1).mean()
    assert np.linalg.norm(pts[1500:], axis=1).mean() > np.linalg.norm(pts[:1500], axis=1).mean()
    assert np.median(np.linalg.norm(pts[:1500], axis=1)) < 0.6 * centers_dist
    s = splats_from_points(pts, np.full((2000, 3), 0.5, np.float32), sh_degree=2, opacity=0.1)
    assert s.shN.shape == (2000, 8, 3) and s.sh_degree == 2
    assert np.allclose(s.base_rgb, 0.5) and np.allclose(s.opacities, 0.1, atol=1e-6)
    assert np.isfinite(s.log_scales).all()


# ------------------------------------------------------------------------------ densification
def _params(n: int, scales: list[float], opacities: list[float]):
    params = {
        "means": torch.nn.Parameter(torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)),
        "quats": torch.nn.Parameter(torch.tensor([[1.0, 0, 0, 0]] * n)),
        "scales": torch.nn.Parameter(torch.log(torch.tensor(scales)).repeat(3, 1).T.contiguous()),
        "opacities": torch.nn.Parameter(torch.logit(torch.tensor(opacities))),
        "sh0": torch.nn.Parameter(torch.arange(n, dtype=torch.float32)[:, None, None].repeat(1, 1, 3)),
        "shN": torch.nn.Parameter(torch.zeros(n, 3, 3)),
    }
    opts = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    # one step so every optimiser has moment buffers to carry along
    sum(p.sum() for p in params.values()).backward()
    for o in opts.values():
        o.step()
        o.zero_grad()
    return params, opts


def test_row_operations_carry_optimizer_state():
    params, opts = _params(4, [0.1] * 4, [0.5] * 4)
    clone(params, opts, torch.tensor([False, True, False, True]))
    assert params["means"].shape == (6, 3)
    st = opts["means"].state[params["means"]]
    assert st["exp_avg"].shape == (6, 3) and (st["exp_avg"][4:] == 0).all() and (st["exp_avg"][:4] != 0).all()
    assert opts["means"].param_groups[0]["params"][0] is params["means"]
    split(params, opts, torch.tensor([True, False, False, False, False, False]), torch.Generator().manual_seed(0))
    assert params["means"].shape == (7, 3)
    assert torch.allclose(params["scales"][-2:].exp(), torch.full((2, 3), 0.1 / 1.6), rtol=1e-2)  # Adam moved it a little
    assert (params["sh0"][-2:, 0, 0].abs() < 0.01).all()  # the split Gaussian was row 0 (sh0 ~ 0)
    remove(params, opts, torch.tensor([False] * 6 + [True]))
    assert params["opacities"].shape == (6,)
    reset_opacity(params, opts, 0.01)
    assert torch.sigmoid(params["opacities"]).max() <= 0.01 + 1e-6
    assert (opts["opacities"].state[params["opacities"]]["exp_avg"] == 0).all()
    # the optimisers still step with the new tensors
    sum(p.sum() for p in params.values()).backward()
    for o in opts.values():
        o.step()


def test_densifier_clone_split_prune_counts_and_cap():
    # extent 10: clone if max scale <= 0.1, prune huge if > 1.0 (after the first reset), prune opacity < 0.005
    scales = [0.05, 0.05, 0.5, 0.5, 0.05, 2.0, 0.05]
    opac = [0.5, 0.5, 0.5, 0.5, 0.001, 0.5, 0.5]
    grads = [1e-3, 1e-3, 1e-3, 1e-5, 1e-3, 1e-3, 1e-5]  # high for 0,1,2,4,5
    params, opts = _params(7, scales, opac)
    d = Densifier(extent=10.0, refine_start=0, refine_every=100, reset_every=1000, grow_grad2d=2e-4, grow_scale3d=0.01,
                  prune_opacity=0.005, prune_scale3d=0.1)
    d.grad2d = torch.tensor(grads) * 2
    d.count = torch.full((7,), 2.0)
    counts = d.refine(params, opts, step=2000)  # after the first reset: the huge one (5) goes too
    assert counts == {"pruned": 2, "cloned": 2, "split": 1, "total": 7 - 2 + 2 + 1}
    assert d.grad2d.shape == (8,) and float(d.grad2d.sum()) == 0.0

    params, opts = _params(7, scales, opac)
    d.grad2d, d.count = torch.tensor(grads), torch.ones(7)
    counts = d.refine(params, opts, step=500)  # before the first reset: only the transparent one
    assert counts == {"pruned": 1, "cloned": 2, "split": 2, "total": 6 + 4}

    params, opts = _params(7, scales, opac)
    d.max_gaussians = 8  # 6 after pruning: room for two more; the two highest gradients grow
    d.grad2d = torch.tensor([1e-3, 5e-3, 4e-3, 1e-5, 1e-3, 1e-3, 1e-5])
    d.count = torch.ones(7)
    counts = d.refine(params, opts, step=500)
    assert counts == {"pruned": 1, "cloned": 1, "split": 1, "total": 8}


def _fake_meta(n: int, visible: list[bool], scale: float):
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    radii = torch.tensor([[3 if v else 0 for v in visible]])
    (means2d * torch.tensor([scale, 0.0])).sum().backward()
    return {"means2d": means2d, "radii": radii}


@pytest.mark.parametrize("kind", ["own", "gsplat"])
def test_strategies_accumulate_screen_gradients_and_grow(kind):
    params, opts = _params(3, [0.05, 0.05, 0.05], [0.5, 0.5, 0.5])
    kw = dict(refine_start=0, refine_stop=1000, refine_every=10, reset_every=0, grow_grad2d=2e-4, grow_scale3d=0.01,
              prune_opacity=0.005, prune_scale3d=0.1)
    s = Densifier(10.0, **kw) if kind == "own" else GsplatDefault(10.0, **kw)
    # gradient 1e-5 px^-1 -> 1e-5 * W/2 = 3.2e-4 > 2e-4 in normalised units for visible Gaussians
    for step in range(1, 11):
        meta = _fake_meta(3, [True, True, False], 1e-5)
        s.post_backward(params, opts, step, meta, 64, 64)
    assert params["means"].shape[0] == 5  # two visible, small, high-gradient Gaussians cloned


# ------------------------------------------------------------------------------ tiny scene
def _blob_scene(root: Path, num_views: int = 12, size: int = 64) -> Path:
    """A few coloured Gaussian blobs over a grey backdrop rendered from a ring of cameras."""
    from PIL import Image

    from splatseg.data import write_transforms_json
    from splatseg.render import render

    rng = np.random.default_rng(3)
    centers = np.array([[0.0, 0.0, 0.0], [0.5, 0.2, 0.1], [-0.4, 0.3, -0.1], [0.1, -0.5, 0.2], [-0.2, -0.2, 0.45]])
    cols = np.array([[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9], [0.9, 0.8, 0.2], [0.8, 0.3, 0.8]])
    means, rgbs, scales = [], [], []
    for c, col in zip(centers, cols):
        means.append(c + 0.12 * rng.standard_normal((150, 3)))
        rgbs.append(np.clip(col + 0.05 * rng.standard_normal((150, 3)), 0, 1))
        scales.append(np.full((150, 3), 0.05))
    means, rgbs, scales = (torch.tensor(np.concatenate(a), dtype=torch.float32) for a in (means, rgbs, scales))
    n = len(means)
    cams = _ring(num_views, size)
    (root / "images").mkdir(parents=True)
    cams = replace(cams, image_paths=[root / "images" / f"{nm}.png" for nm in cams.names])
    with torch.no_grad():
        out = render(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), scales, torch.full((n,), 0.7), rgbs,
                     torch.from_numpy(cams.viewmats).float(), torch.from_numpy(cams.Ks).float(), size, size,
                     backgrounds=torch.tensor([[0.35, 0.35, 0.4]]).repeat(num_views, 1))
    for i, path in enumerate(cams.image_paths):
        Image.fromarray((out.colors[i].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)).save(path)
    write_transforms_json(root, cams)
    return root


TINY = dict(steps=250, device="cpu", sh_degree=1, sh_degree_interval=150, init_num_points=800, init_scale=0.2,
            init_far_fraction=0.1, refine_start=50, refine_stop=200, refine_every=50, reset_every=0, max_gaussians=3000,
            ckpt_every=0, eval_every=0, progress=False, test_every=4)
PSNR_FLOOR = 20.0  # held-out PSNR measured 23.9 dB after 250 steps (22.0 after 200), seed 0


@pytest.fixture(scope="module")
def blob_scene(tmp_path_factory) -> Path:
    return _blob_scene(tmp_path_factory.mktemp("recon") / "blobs")


def test_reconstruct_tiny_scene_from_images(blob_scene, tmp_path):
    from splatseg.io.ply import read_ply

    cfg = ReconConfig(data=blob_scene, out=tmp_path / "run", **TINY)
    ply = run_recon(cfg)
    report = json.loads((tmp_path / "run" / "recon.json").read_text())
    assert ply == tmp_path / "run" / "splats.ply"
    splats = read_ply(ply)
    assert len(splats) == report["num_gaussians"] and splats.sh_degree == 1
    assert report["steps"] == TINY["steps"] and report["eval_split"] == "test" and report["eval_views"] == 3
    assert report["psnr"] > PSNR_FLOOR, report
    assert report["ssim"] > 0.6, report
    assert report["background"] == pytest.approx([0.35, 0.35, 0.4], abs=0.05)


def test_resume_continues_and_bad_resume_is_one_line(blob_scene, tmp_path):
    out = tmp_path / "run"
    short = dict(TINY, steps=40, refine_start=10, refine_every=10, refine_stop=35, ckpt_every=20)
    run_recon(ReconConfig(data=blob_scene, out=out, **short))
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)  # tensors and plain containers only
    assert ckpt["step"] == 40
    n40 = ckpt["params"]["means"].shape[0]
    # resume to 60: continues at 40 (the report's history starts with the first run's final entry)
    run_recon(ReconConfig(data=blob_scene, out=out, **dict(short, steps=60), resume=True))
    report = json.loads((out / "recon.json").read_text())
    assert [h["step"] for h in report["history"]] == [40, 60]
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 60
    assert report["history"][0]["num_gaussians"] == n40

    with pytest.raises(ReconError) as e:  # different image size: refuses
        run_recon(ReconConfig(data=blob_scene, out=out, **dict(short, steps=80), downscale=2.0, resume=True))
    assert "does not match this scene" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ReconError) as e:
        run_recon(ReconConfig(data=blob_scene, out=tmp_path / "empty", **short, resume=True))
    assert "no checkpoint" in str(e.value) and "\n" not in str(e.value)


def test_one_line_errors(blob_scene, tmp_path):
    with pytest.raises(ReconError, match="no training views left"):
        run_recon(ReconConfig(data=blob_scene, out=tmp_path / "o", **dict(TINY, test_every=1)))
    with pytest.raises(ReconError, match="--data"):
        run_recon(PRESETS["cpu"])
    with pytest.raises(ValueError, match="unknown recon preset"):
        preset("tpu")
    with pytest.raises(ReconError, match="sh_degree"):
        run_recon(ReconConfig(data=blob_scene, out=tmp_path / "o", **dict(TINY, sh_degree=4)))


def test_presets_parse_with_tyro():
    import tyro

    cfg = tyro.cli(ReconConfig, default=PRESETS["cpu"], args=["--data", "scene", "--out", "o", "--steps", "7"])
    assert cfg.steps == 7 and cfg.downscale == PRESETS["cpu"].downscale and cfg.data == Path("scene")
    assert PRESETS["cpu"].max_gaussians > 0 and PRESETS["gpu"].device == "cuda"


def test_recon_writes_the_reference_layout_and_loads_back_as_an_inria_folder(blob_scene, tmp_path):
    """point_cloud/iteration_N at every checkpoint (the last equal to splats.ply), cameras.json and
    cfg_args as the INRIA trainer writes them; the folder resolves through the INRIA reader."""
    from splatseg.data import load_scene
    from splatseg.data.sources import read_cfg_args, read_inria_cameras, resolve_splats
    from splatseg.io.ply import read_ply

    out = tmp_path / "run"
    short = dict(TINY, steps=40, refine_start=10, refine_every=10, refine_stop=35, ckpt_every=20)
    ply = run_recon(ReconConfig(data=blob_scene, out=out, **short))
    iterations = sorted(p.name for p in (out / "point_cloud").iterdir())
    assert iterations == ["iteration_20", "iteration_40"]
    assert (out / "point_cloud" / "iteration_40" / "point_cloud.ply").read_bytes() == ply.read_bytes()
    values, skipped = read_cfg_args(out / "cfg_args")
    assert not skipped and values["source_path"] == str(blob_scene.resolve()) and values["model_path"] == str(out.resolve())
    assert values["sh_degree"] == read_ply(ply).sh_degree and values["eval"] is True and values["white_background"] is False
    src = resolve_splats(out)
    assert src.kind == "inria" and src.splats_file == out / "point_cloud" / "iteration_40" / "point_cloud.ply"
    assert src.scene == blob_scene.resolve() and src.scene_exists and src.world_from_splats is None
    cams, want = read_inria_cameras(out / "cameras.json"), load_scene(blob_scene).cameras
    assert cams.names == want.names and list(cams.widths) == list(want.widths)
    np.testing.assert_allclose(cams.viewmats, want.viewmats, atol=1e-9)
    np.testing.assert_allclose(cams.Ks, want.Ks, atol=1e-9)  # the ring's principal point is the image centre


def test_transforms_ply_file_path_points_initialise_recon(blob_scene, tmp_path):
    """nerfstudio's ply_file_path (initial points) becomes Scene.points; recon --init auto starts there."""
    import shutil

    from plyfile import PlyData, PlyElement

    from splatseg.data import SceneError, load_scene
    from splatseg.io.ply import read_ply

    scene = tmp_path / "scene"
    shutil.copytree(blob_scene, scene)
    rng = np.random.default_rng(0)
    pts = rng.normal(scale=0.3, size=(200, 3))
    cloud = np.empty(200, dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    cloud["x"], cloud["y"], cloud["z"] = pts.T
    cloud["red"], cloud["green"], cloud["blue"] = 200, 30, 40
    PlyData([PlyElement.describe(cloud, "vertex")]).write(str(scene / "sparse_pc.ply"))
    meta = json.loads((scene / "transforms.json").read_text())
    meta["ply_file_path"] = "sparse_pc.ply"
    (scene / "transforms.json").write_text(json.dumps(meta))
    loaded = load_scene(scene)
    np.testing.assert_allclose(loaded.points, pts, atol=1e-6)
    assert (loaded.point_colors == [200, 30, 40]).all()
    ply = run_recon(ReconConfig(data=scene, out=tmp_path / "run", **dict(TINY, steps=0)))
    splats = read_ply(ply)
    np.testing.assert_allclose(splats.means, pts, atol=1e-6)  # one Gaussian per initial point, unmoved
    meta["ply_file_path"] = "missing.ply"
    (scene / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError, match="ply_file_path .* not found"):
        load_scene(scene)


def test_random_background_draws_a_colour_per_step_and_recon_runs(blob_scene, tmp_path):
    """--background random: a different colour at every step, the same ones again for the same seed
    (resume stays exact), evaluation over the border colour; a short recon completes with it."""
    from splatseg.recon.trainer import _Background

    border = torch.tensor([0.3, 0.3, 0.4])
    bg = _Background("random", border, 1e-2, seed=3)
    colours = [bg.training_rgb(s) for s in range(4)]
    assert all(not torch.equal(colours[0], c) for c in colours[1:])
    assert torch.equal(_Background("random", border, 1e-2, seed=3).training_rgb(2), colours[2])
    assert not torch.equal(_Background("random", border, 1e-2, seed=4).training_rgb(2), colours[2])
    assert torch.equal(bg.rgb(), border) and bg.optimizer is None
    assert torch.equal(_Background("learned", border, 1e-2).training_rgb(5), _Background("learned", border, 1e-2).rgb())
    run_recon(ReconConfig(data=blob_scene, out=tmp_path / "run", **dict(TINY, steps=20, refine_start=10, refine_every=10,
                                                                           refine_stop=15), background="random"))
    report = json.loads((tmp_path / "run" / "recon.json").read_text())
    assert report["steps"] == 20 and report["background"] == pytest.approx([0.3, 0.3, 0.4], abs=0.1)
