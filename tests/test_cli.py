"""The `splatseg` command line, run in-process: contract of FORMATS.md, one-line errors, no partial files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splatseg.cli import main
from splatseg.io.ply import read_vertex_table
from splatseg.run import load_field


def run_cli(args, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # tyro exits for --help and usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["demo", "recon", "train", "segment", "export-all", "mesh", "view", "info"])
def test_every_command_documents_its_flags(command, capsys):
    code, out, _ = run_cli([command, "--help"], capsys)
    assert code == 0 and "usage" in out.lower() and "--" in out


def click_on_object(run):
    """A click deep inside the object with the most Gaussians selected: the middle of view 0."""
    fld = load_field(run)
    w, h = (int(v) for v in fld.image_sizes[0])
    return fld.view_names[0], w / 2, h / 2


def test_segment_click_exports_and_prints_json_last(tiny_run, tmp_path, capsys):
    stem, x, y = click_on_object(tiny_run)
    out = tmp_path / "obj.ply"
    code, stdout, err = run_cli(["segment", "--run", tiny_run, "--click", stem, x, y, "--out", out], capsys)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert {"selected", "total", "seconds"} <= summary.keys()
    assert len(read_vertex_table(out)) == summary["selected"] > 0
    inverted = tmp_path / "rest.ply"
    code, stdout, _ = run_cli(["segment", "--run", tiny_run, "--click", stem, x, y, "--invert", "--out", inverted], capsys)
    rest = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and rest["selected"] + summary["selected"] == summary["total"]


def test_segment_repeated_clicks_and_negative(tiny_run, tmp_path, capsys):
    stem, x, y = click_on_object(tiny_run)
    out = tmp_path / "obj.ply"
    code, stdout, err = run_cli(["segment", "--run", tiny_run, "--click", stem, x, y, "--click", stem, 2.5, 2.5,
                                 "--negative", stem, x, y, "--out", out, "--with-features"], capsys)
    assert code in (0, 2), err  # the negative may remove everything: then it is a clean error
    if code == 0:
        assert "feat_15" in read_vertex_table(out).dtype.names


@pytest.mark.parametrize("bad, message", [
    (["--click", "no_such_view", 5, 5], "unknown image name 'no_such_view'"),
    (["--click", "view_000", 5000, 5], "outside image"),
    (["--click", "view_000", 5, 5, "--threshold", 1.5], "--threshold"),
    (["--text", "a mug"], "text prompts need"),
    ([], "--click"),
])
def test_segment_bad_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys, bad, message):
    out = tmp_path / "obj.ply"
    code, _, err = run_cli(["segment", "--run", tiny_run, "--out", out, *bad], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_missing_run_and_scene_are_one_line_errors(tmp_path, capsys):
    code, _, err = run_cli(["segment", "--run", tmp_path / "nope", "--click", "a", 1, 1, "--out", tmp_path / "o.ply"], capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["train", "--data", tmp_path / "nope", "--out", tmp_path / "run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_export_all_writes_one_file_per_object(tiny_run, tmp_path, capsys):
    code, stdout, err = run_cli(["export-all", "--run", tiny_run, "--out", tmp_path / "objs"], capsys)
    assert code == 0, err
    index = json.loads((tmp_path / "objs" / "index.json").read_text())
    counts = [len(read_vertex_table(tmp_path / "objs" / e["file"])) for e in index["objects"]]
    assert counts == [e["gaussians"] for e in index["objects"]] and len(counts) >= 3
    assert sum(counts) <= load_field(tiny_run).num_gaussians
    assert json.loads(stdout.strip().splitlines()[-1])["objects"] == len(counts)


def test_recon_preset_flag_sets_defaults_and_flags_override(monkeypatch):
    """`--preset` picks the defaults of every other recon flag; explicit flags still win; "auto"
    resolves to the CPU preset without CUDA; an unknown preset is a one-line error."""
    import splatseg.cli as cli
    from splatseg.recon.config import PRESETS

    seen = {}
    monkeypatch.setattr(cli, "dispatch", lambda cmd: seen.setdefault("cmd", cmd))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["recon", "--data", "s", "--out", "o"]) == 0
    cmd = seen.pop("cmd")
    assert cmd.preset == "cpu" and cmd.steps == PRESETS["cpu"].steps and cmd.max_gaussians == PRESETS["cpu"].max_gaussians
    assert main(["recon", "--preset", "gpu", "--data", "s", "--out", "o", "--steps", "7"]) == 0
    cmd = seen.pop("cmd")
    assert cmd.preset == "gpu" and cmd.steps == 7 and cmd.device == "cuda" and cmd.downscale == PRESETS["gpu"].downscale
    assert main(["recon", "--preset=cpu", "--data", "s", "--out", "o", "--downscale", "3"]) == 0
    assert seen.pop("cmd").downscale == 3.0
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert main(["recon", "--data", "s", "--out", "o"]) == 0
    cmd = seen.pop("cmd")
    assert cmd.preset == "gpu" and cmd.steps == PRESETS["gpu"].steps


def test_recon_unknown_preset_is_one_line_error(capsys):
    code, out, err = run_cli(["recon", "--preset", "tpu", "--data", "s", "--out", "o"], capsys)
    assert code == 2 and "unknown recon preset 'tpu'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("suffix, fmt", [(".spz", "spz"), (".compressed.ply", "compressed_ply")])
def test_segment_output_format_by_suffix(tiny_run, tmp_path, capsys, suffix, fmt):
    from splatseg.io.formats import detect_format, read_splats

    stem, x, y = click_on_object(tiny_run)
    code, stdout, err = run_cli(["segment", "--run", tiny_run, "--click", stem, x, y, "--out", tmp_path / f"obj{suffix}"], capsys)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["format"] == fmt and detect_format(tmp_path / f"obj{suffix}") == fmt
    assert len(read_splats(tmp_path / f"obj{suffix}")) == summary["selected"] > 0


def test_segment_unknown_suffix_is_one_line_error(tiny_run, tmp_path, capsys):
    stem, x, y = click_on_object(tiny_run)
    code, _, err = run_cli(["segment", "--run", tiny_run, "--click", stem, x, y, "--out", tmp_path / "obj.obj"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown splat file suffix '.obj'" in err
    code, _, err = run_cli(["segment", "--run", tiny_run, "--click", stem, x, y, "--with-features", "--out", tmp_path / "o.splat"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "need a .ply output" in err
    assert list(tmp_path.iterdir()) == []


def test_export_all_format_option(tiny_run, tmp_path, capsys):
    from splatseg.io.formats import detect_format

    code, stdout, err = run_cli(["export-all", "--run", tiny_run, "--out", tmp_path / "objs", "--format", "spz"], capsys)
    assert code == 0, err
    index = json.loads((tmp_path / "objs" / "index.json").read_text())
    assert index["objects"] and all(e["file"].endswith(".spz") for e in index["objects"])
    assert {detect_format(tmp_path / "objs" / e["file"]) for e in index["objects"]} == {"spz"}


def info_splats():
    """A reference-layout scene with SH degree 3 and an extra property."""
    from splatseg.types import Splats

    rng = np.random.default_rng(0)
    n = 300
    return Splats(means=rng.uniform(-2, 2, (n, 3)).astype(np.float32), quats=rng.normal(size=(n, 4)).astype(np.float32),
                  log_scales=np.full((n, 3), -4, np.float32), opacity_logits=np.zeros(n, np.float32),
                  sh0=rng.uniform(-1, 1, (n, 1, 3)).astype(np.float32), shN=rng.uniform(-0.5, 0.5, (n, 15, 3)).astype(np.float32),
                  extra={"confidence": rng.uniform(size=n).astype(np.float32)})


@pytest.mark.parametrize("suffix, fmt, degree", [(".ply", "ply", 3), (".compressed.ply", "compressed_ply", 3),
                                                  (".splat", "splat", 0), (".spz", "spz", 3)])
def test_info_on_each_format(tmp_path, capsys, suffix, fmt, degree):
    from splatseg.io.formats import write_splats

    splats = info_splats()
    write_splats(tmp_path / f"s{suffix}", splats)
    code, stdout, err = run_cli(["info", tmp_path / f"s{suffix}"], capsys)
    assert code == 0, err
    info = json.loads(stdout.strip().splitlines()[-1])
    assert info["format"] == fmt and info["num_gaussians"] == len(splats) and info["sh_degree"] == degree
    lo, hi = np.array(info["bounds"])
    np.testing.assert_allclose(lo, splats.means.min(axis=0), atol=5e-3)
    np.testing.assert_allclose(hi, splats.means.max(axis=0), atol=5e-3)
    assert info["extra_properties"] == (["confidence"] if fmt == "ply" else [])


def test_info_on_a_folder_and_refusals(tmp_path, capsys):
    from splatseg.io.ply import write_ply

    folder = tmp_path / "inria"
    (folder / "point_cloud" / "iteration_7000").mkdir(parents=True)
    write_ply(folder / "point_cloud" / "iteration_7000" / "point_cloud.ply", info_splats())
    (folder / "cfg_args").write_text("Namespace(source_path='/not/here', sh_degree=3)")
    code, stdout, err = run_cli(["info", folder], capsys)
    assert code == 0, err
    info = json.loads(stdout.strip().splitlines()[-1])
    assert info["kind"] == "inria" and info["num_gaussians"] == 300 and info["scene"] == "/not/here"
    assert info["file"].endswith("iteration_7000/point_cloud.ply") and info["notes"]
    (tmp_path / "x.bin").write_bytes(b"nothing to see")
    for bad, message in [(tmp_path / "x.bin", "not a splat file"), (tmp_path / "nope", "no such file")]:
        code, _, err = run_cli(["info", bad], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_train_takes_its_scene_from_an_inria_folder(tiny_run, tmp_path, capsys):
    """--splats FOLDER without --data: the scene cfg_args names is used and said; without a scene
    on this machine the command refuses in one line."""
    import shutil

    info = json.loads((tiny_run / "run.json").read_text())
    folder = tmp_path / "inria"
    (folder / "point_cloud" / "iteration_30000").mkdir(parents=True)
    shutil.copy(info["splats"], folder / "point_cloud" / "iteration_30000" / "point_cloud.ply")
    (folder / "cfg_args").write_text(f"Namespace(source_path={info['scene']!r}, sh_degree=3)")
    code, stdout, err = run_cli(["train", "--splats", folder, "--out", tmp_path / "run", "--iterations", "5",
                                 "--no-progress"], capsys)
    assert code == 0, err
    assert f"using the scene {info['scene']} named by the inria output" in stdout
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["scene"] == info["scene"] and run["splats"].endswith("iteration_30000/point_cloud.ply")
    assert run["splats_source"]["kind"] == "inria"
    (folder / "cfg_args").write_text("Namespace(source_path='/not/here')")
    code, _, err = run_cli(["train", "--splats", folder, "--out", tmp_path / "run2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pass --data SCENE" in err
    assert not (tmp_path / "run2").exists()


def test_train_moves_splats_out_of_a_trainers_normalised_frame(tiny_scene, tmp_path, capsys):
    """A nerfstudio output whose splats are in the dataparser frame (x_ns = scale * (T @ x)) is moved
    back into the scene's frame by the folder's transform and trains; the same splats without the
    transform are refused in one line by the alignment check before any work."""
    import shutil

    from splatseg.data.frames import Similarity, transform_splats
    from splatseg.io.ply import read_ply, write_ply

    folder = tmp_path / "ns"
    folder.mkdir()
    (folder / "config.yml").write_text(f"!!python/object:nerfstudio.engine.trainer.TrainerConfig\ndata: {tiny_scene}\n")
    (folder / "dataparser_transforms.json").write_text(json.dumps({"transform": np.eye(4)[:3].tolist(), "scale": 0.5}))
    normalised = transform_splats(read_ply(tiny_scene / "splats.ply"), Similarity(np.eye(3), np.zeros(3), 0.5))
    write_ply(folder / "splat.ply", normalised)
    seg = tmp_path / "segments"
    code, out, err = run_cli(["train", "--splats", folder, "--out", tmp_path / "run", "--segments", seg,
                              "--iterations", "2", "--no-progress"], capsys)
    assert code == 0, err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    np.testing.assert_allclose(np.asarray(info["splats_transform"]["world_from_splats"])[:3, :3], 2 * np.eye(3), atol=1e-9)
    assert info["alignment"] is not None

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(folder / "splat.ply", bare / "splats.ply")
    code, _, err = run_cli(["train", "--data", tiny_scene, "--splats", bare / "splats.ply", "--out", tmp_path / "run2",
                            "--segments", seg], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--splats-transform" in err, err
    assert not (tmp_path / "run2").exists()
