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


@pytest.mark.parametrize("command", ["demo", "recon", "train", "segment", "export-all", "mesh", "view"])
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
