"""One train / test split everywhere: sorted by image name, every n-th held out; recon writes it,
train reads it and never loads a held-out view."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from splatseg.data import load_scene
from splatseg.data.split import SplitError, read_split, split_for_training, split_views, write_split


def test_split_rule_is_sorted_index_mod_n_and_independent_of_order():
    names = [f"img_{i:02d}" for i in range(20)]
    train, test = split_views(names, 8)
    assert [names[i] for i in test] == ["img_00", "img_08", "img_16"]  # INRIA / gsplat: index % 8 == 0
    assert sorted(train + test) == list(range(20))
    shuffled = list(np.random.default_rng(0).permutation(names))
    train_s, test_s = split_views(shuffled, 8)
    assert sorted(shuffled[i] for i in test_s) == ["img_00", "img_08", "img_16"]
    assert sorted(shuffled[i] for i in train_s) == sorted(names[i] for i in train)
    assert split_views(names, 0) == (list(range(20)), [])
    with pytest.raises(SplitError):
        split_views(names, -1)


def test_transforms_json_frames_come_back_sorted_whatever_the_file_order(tiny_scene, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene, ignore=shutil.ignore_patterns("segments"))
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"] = [meta["frames"][i] for i in np.random.default_rng(1).permutation(len(meta["frames"]))]
    (scene / "transforms.json").write_text(json.dumps(meta))
    a, b = load_scene(tiny_scene).cameras, load_scene(scene).cameras
    assert a.names == b.names == sorted(a.names)
    np.testing.assert_allclose(a.viewmats, b.viewmats)
    assert split_views(a.names, 4) == split_views(b.names, 4)


def test_train_uses_the_recon_split_and_never_loads_a_held_out_view(tiny_scene, tiny_run, tmp_path, monkeypatch):
    import splatseg.train.trainer as trainer
    from splatseg.run import load_field
    from splatseg.train import TrainConfig

    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene)
    recon = tmp_path / "recon"
    recon.mkdir()
    shutil.copy(scene / "splats.ply", recon / "splats.ply")
    names = load_scene(scene).cameras.names
    held = [names[1], names[6], names[11]]  # not the rule's views: the file must be what decides
    write_split(recon / "split.json", names, [i for i, n in enumerate(names) if n not in held],
                [names.index(n) for n in held], 5)
    loaded = []
    original = trainer.load_view
    monkeypatch.setattr(trainer, "load_view", lambda params, cams, i, *a, **k: loaded.append(cams.names[i]) or original(params, cams, i, *a, **k))
    segments = load_field(tiny_run).scene_root / "segments"  # computed once for the session
    run = trainer.train(TrainConfig(data=scene, splats=recon / "splats.ply", segments=segments, out=tmp_path / "run",
                                    iterations=3, holdout_every=8, progress=False))
    info = json.loads((run / "run.json").read_text())
    assert info["heldout_views"] == held and info["split_source"].endswith("split.json")
    assert sorted(loaded) == sorted(set(names) - set(held)) and not set(loaded) & set(held)

    # without split.json beside the splats: the rule (sorted index % 8 == 0)
    (recon / "split.json").unlink()
    assert [names[i] for i in split_for_training(names, 8, recon / "splats.ply")[1]] == [names[0], names[8]]
    assert split_for_training(names, 0, recon / "splats.ply")[1] == []


def test_split_json_errors_are_one_line(tmp_path):
    (tmp_path / "split.json").write_text('{"train": ["a"], "test": ["a"]}')
    with pytest.raises(SplitError, match="both a training and a held-out view"):
        read_split(tmp_path / "split.json")
    (tmp_path / "split.json").write_text('{"train": ["a"], "test": ["zz"], "test_every": 8}')
    (tmp_path / "splats.ply").write_bytes(b"")
    with pytest.raises(SplitError, match="holds out view 'zz', which this scene does not have") as e:
        split_for_training(["a", "b"], 8, tmp_path / "splats.ply")
    assert "\n" not in str(e.value)


def test_recon_writes_its_split(tiny_scene, tmp_path):
    from splatseg.recon import ReconConfig, run_recon

    out = tmp_path / "recon"
    run_recon(ReconConfig(data=tiny_scene, out=out, steps=0, device="cpu", init_num_points=300, max_gaussians=300,
                          sh_degree=0, test_every=8, ckpt_every=0, eval_every=0, progress=False))
    split = read_split(out / "split.json")
    names = load_scene(tiny_scene).cameras.names
    assert split.test == [names[0], names[8]] and sorted(split.train + split.test) == names
    assert json.loads((out / "recon.json").read_text())["test_views"] == split.test
