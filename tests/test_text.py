"""Text through CLIPSeg: the cached image side equals CLIPSeg's own forward, relevancy lifting
recovers an object from exact relevancy maps, the run picks its text backend and says which,
and missing or unsafe weights are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from splatseg.semantics.clipseg import ClipSegError


@pytest.fixture(scope="module")
def tiny_clipseg_dir(tmp_path_factory):
    from splatseg.semantics.clipseg import save_random_clipseg

    return save_random_clipseg(tmp_path_factory.mktemp("clipseg") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="module")
def clipseg_run(tiny_scene, tiny_clipseg_dir, tmp_path_factory):
    """A short run of the tiny scene trained with --clipseg (the tiny random CLIPSeg)."""
    import shutil

    from splatseg.train import TrainConfig, train

    scene = tmp_path_factory.mktemp("scene_clipseg") / "tiny"
    shutil.copytree(tiny_scene, scene)
    return train(TrainConfig(data=scene, out=tmp_path_factory.mktemp("run_clipseg") / "run", iterations=30, train_max_side=48,
                             progress=False, clipseg=str(tiny_clipseg_dir)))


def _images(n=3, shape=(48, 80, 3)):
    return [np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8) for i in range(n)]


def test_cached_image_side_equals_clipseg_forward(tiny_clipseg_dir):
    """Decoder on cached activations == CLIPSeg's full forward per image (the split is exact)."""
    from splatseg.semantics.clipseg import ClipSeg

    seg = ClipSeg.load(tiny_clipseg_dir)
    ims = _images()
    acts = seg.image_side(ims, batch_size=2)
    assert len(acts) == seg.num_layers and all(a.shape[0] == 3 for a in acts)
    cached = seg.relevancy(acts, "a red mug")
    full = seg.full_relevancy(ims, "a red mug")
    assert cached.shape == full.shape == (3, seg.image_size, seg.image_size)
    assert np.abs(cached - full).max() < 1e-4
    assert np.abs(cached - seg.relevancy(acts, "a blue ball")).max() > 1e-3  # the phrase matters
    half = seg.relevancy([a.astype(np.float16) for a in acts], "a red mug")  # what clipseg.npz stores
    assert np.abs(half - full).max() < 2e-2


def test_missing_and_pickled_weights_are_refused_in_one_line(tmp_path, tiny_clipseg_dir):
    from splatseg.semantics.clipseg import ClipSeg, random_clipseg

    with pytest.raises(ClipSegError, match="--clipseg") as e:
        ClipSeg.load(tmp_path / "nowhere")
    assert "\n" not in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ClipSegError, match="cannot load CLIPSeg weights.*--clipseg") as e:
        ClipSeg.load(empty)
    assert "\n" not in str(e.value)
    pickled = tmp_path / "pickled"  # a .bin checkpoint is a pickle: never read
    seg = random_clipseg("tiny")
    seg.model.config.save_pretrained(pickled)
    torch.save(seg.model.state_dict(), pickled / "pytorch_model.bin")  # the pickled layout older tools write
    seg.tokenizer.save_pretrained(pickled)
    seg.image_processor.save_pretrained(pickled)
    assert (pickled / "pytorch_model.bin").exists() and not (pickled / "model.safetensors").exists()
    with pytest.raises(ClipSegError, match="cannot load CLIPSeg weights"):
        ClipSeg.load(pickled)


def test_relevancy_lifting_recovers_object_from_exact_maps(tiny_scene):
    """Exact object masks as relevancy maps, lifted through the stored blend weights, select that
    object's Gaussians (3D IoU against the generator's labels)."""
    from splatseg.data import load_scene
    from splatseg.data.synthetic import load_ground_truth
    from splatseg.io.ply import read_ply
    from splatseg.metrics import iou
    from splatseg.semantics.clipseg import random_clipseg
    from splatseg.text_query import ClipSegIndex
    from splatseg.train.clipseg_stage import clipseg_arrays

    scene = load_scene(tiny_scene)
    params = read_ply(tiny_scene / "splats.ply").torch_params()
    cams = scene.cameras
    arrays, record = clipseg_arrays(random_clipseg("tiny"), cams, list(range(len(cams))), params, lift_side=64, progress=False)
    assert record["views"] == len(cams) and arrays["lift_sizes"].tolist()[0] == [64, 48]  # 96x72 views, not square
    index = ClipSegIndex.from_arrays(arrays, "test")
    gt = load_ground_truth(tiny_scene)
    labels = [np.load(tiny_scene / "labels" / f"{name}.npz")["object"] for name in cams.names]
    ious = []
    for oid in range(1, len(gt.object_names)):
        maps = np.stack([(lab == oid).astype(np.float32) for lab in labels])
        selected = index.scores_from_maps(maps) > 0.5
        ious.append(iou(selected, gt.object_id == oid))
    assert min(ious) > 0.75, ious
    assert np.mean(ious) > 0.85, ious
    wrong = index.scores_from_maps(np.stack([(lab == 1).astype(np.float32) for lab in labels])) > 0.5
    assert iou(wrong, gt.object_id == 2) < 0.05


@pytest.mark.slow  # trains a run with --clipseg
def test_text_backend_is_clipseg_when_the_run_has_its_cache(clipseg_run, tmp_path, capsys):
    from splatseg.cli import main
    from splatseg.run import load_field
    from splatseg.text_query import ClipSegIndex, TextPrompter, text_backend

    info = json.loads((clipseg_run / "run.json").read_text())
    assert info["clipseg"]["views"] == len(info["train_views"]) and (clipseg_run / "clipseg.npz").is_file()
    fld = load_field(clipseg_run)
    assert text_backend(fld) == "clipseg"
    index = ClipSegIndex.load(fld)
    assert index.views == info["train_views"] and index.num_gaussians == fld.num_gaussians
    answer = TextPrompter(fld).select("a mug", 0.3)
    assert answer.backend == "clipseg" and answer.selection.scores.shape == (fld.num_gaussians,)
    assert answer.selection.scores.max() == pytest.approx(1.0)

    out = tmp_path / "mug.ply"
    code = main(["segment", "--run", str(clipseg_run), "--text", "a mug", "--threshold", "0.05", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["text_backend"] == "clipseg" and "CLIPSeg" in stdout and out.is_file()


def test_text_is_refused_in_one_line_without_clipseg_or_clip(tiny_run, tmp_path, capsys):
    from splatseg.cli import main
    from splatseg.query import QueryError
    from splatseg.run import load_field
    from splatseg.text_query import require_text_backend, text_backend

    plain = load_field(tiny_run)
    assert text_backend(plain) is None
    with pytest.raises(QueryError, match="--clipseg"):
        require_text_backend(plain)
    code = main(["segment", "--run", str(tiny_run), "--text", "a mug", "--out", str(tmp_path / "x.ply")])
    err = capsys.readouterr().err
    assert code == 2 and "--clipseg" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.ply").exists()


@pytest.mark.slow  # trains a run with --clipseg
def test_clipseg_cache_of_another_run_is_refused(clipseg_run, tmp_path):
    import shutil

    from splatseg.run import RunError, load_field, save_npz
    from splatseg.text_query import ClipSegIndex

    copy = tmp_path / "run"
    shutil.copytree(clipseg_run, copy)
    with np.load(copy / "clipseg.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["run_id"] = np.array("0" * 32)
    save_npz(copy / "clipseg.npz", **arrays)
    with pytest.raises(RunError, match="another training"):
        ClipSegIndex.load(load_field(copy))
    (copy / "clipseg.npz").unlink()
    with pytest.raises(RunError, match="missing"):
        ClipSegIndex.load(load_field(copy))


def test_train_refuses_missing_clipseg_weights_before_work(tiny_scene, tmp_path, capsys):
    from splatseg.cli import main

    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_scene), "--splats", str(tiny_scene / "splats.ply"), "--out", str(out),
                 "--segments", str(tmp_path / "segs"), "--clipseg", str(tmp_path / "no_such_folder"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--clipseg" in err and len(err.strip().splitlines()) == 1
    assert not (out / "run.json").exists() and not (tmp_path / "segs").exists()


def test_write_run_removes_a_stale_clipseg_file(tmp_path):
    from splatseg.run import write_run

    info = {"splats": "x", "scene": "y", "num_gaussians": 1}
    write_run(tmp_path, info, {"a": np.zeros(1)}, {"b": np.zeros(1)}, {"clipseg.npz": {"c": np.zeros(1)}})
    assert (tmp_path / "clipseg.npz").is_file()
    with np.load(tmp_path / "clipseg.npz") as z:
        assert str(z["run_id"]) == json.loads((tmp_path / "run.json").read_text())["run_id"]
    write_run(tmp_path, info, {"a": np.zeros(1)}, {"b": np.zeros(1)})
    assert not (tmp_path / "clipseg.npz").exists()
    with pytest.raises(ValueError, match="unknown run file"):
        write_run(tmp_path, info, {"a": np.zeros(1)}, {"b": np.zeros(1)}, {"other.npz": {}})

