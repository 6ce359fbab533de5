"""Preset files (configs/), --config, one flag name per concept with the old names as aliases, and
the resolved config.yml every run writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import splatseg.cli as cli
from splatseg.presets import preset_names, read_config_file
from splatseg.recon.config import PRESETS, ReconConfig
from splatseg.train.config import TrainConfig, train_defaults

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def parsed(monkeypatch):
    """Parses a command line in-process and returns the config `dispatch` would get."""
    seen = []
    monkeypatch.setattr(cli, "dispatch", seen.append)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)

    def parse(*args):
        assert cli.main([str(a) for a in args]) == 0
        return seen.pop()

    return parse


def run_cli(args, capsys):
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, *capsys.readouterr()


def test_shipped_presets_exist_for_both_commands_and_parse():
    for command, cls in (("recon", ReconConfig), ("train", TrainConfig)):
        assert {"cpu", "gpu", "quality"} <= set(preset_names(command))
        for name in preset_names(command):
            values = read_config_file(REPO / "configs" / command / f"{name}.yml", cls, command)
            assert values, (command, name)
    assert (REPO / "configs").resolve() == (REPO / "splatseg" / "configs").resolve()  # the repository's configs/ is the package's


@pytest.mark.parametrize("command,old,new,field,value", [
    ("train", "--iterations", "--steps", "iterations", 7),
    ("train", "--holdout-every", "--test-every", "holdout_every", 3),
    ("train", "--checkpoint-every", "--ckpt-every", "checkpoint_every", 9),
    ("recon", "--steps", "--iterations", "steps", 7),
    ("recon", "--test-every", "--holdout-every", "test_every", 3),
    ("recon", "--ckpt-every", "--checkpoint-every", "ckpt_every", 9),
])
def test_old_and_new_flag_names_give_the_same_config(parsed, command, old, new, field, value):
    a = parsed(command, "--data", "s", "--out", "o", old, value)
    b = parsed(command, "--data", "s", "--out", "o", new, value)
    assert a == b and getattr(a, field) == value


def test_flags_override_the_file_which_overrides_the_preset_and_the_defaults(parsed, tmp_path):
    cfg_file = tmp_path / "mine.yml"
    cfg_file.write_text("steps: 123\nlr: 0.02\ntrain-max-side: 64\n")  # train's 'iterations' by recon's name; dashes work
    cfg = parsed("train", "--data", "s", "--out", "o", "--config", cfg_file)
    assert (cfg.iterations, cfg.lr, cfg.train_max_side) == (123, 0.02, 64)  # file over built-in defaults
    assert cfg.pixels_per_step == TrainConfig(data="s", out="o").pixels_per_step and cfg.preset == "cpu" and cfg.config == cfg_file
    cfg = parsed("train", "--data", "s", "--out", "o", f"--config={cfg_file}", "--lr", "0.5", "--preset", "quality")
    assert (cfg.iterations, cfg.lr, cfg.train_max_side) == (123, 0.5, 64)  # flag over file over preset
    assert cfg.pixels_per_step == train_defaults("quality").pixels_per_step != TrainConfig(data="s", out="o").pixels_per_step
    cfg_file.write_text("preset: gpu\nsteps: 11\n")  # a file may name its preset
    cfg = parsed("recon", "--data", "s", "--out", "o", "--config", cfg_file)
    assert cfg.preset == "gpu" and cfg.steps == 11 and cfg.ckpt_every == PRESETS["gpu"].ckpt_every
    cfg = parsed("recon", "--data", "s", "--out", "o")
    assert cfg.preset == "cpu" and cfg.steps == PRESETS["cpu"].steps == 3000  # "auto" without CUDA
    assert ReconConfig().steps == 30_000  # (the dataclass default the preset overrode)


def test_help_shows_the_resolved_defaults(tmp_path, capsys):
    code, out, _ = run_cli(["recon", "--preset", "gpu", "--help"], capsys)
    assert code == 0 and "30000" in out and "(default: gpu)" in out
    (tmp_path / "c.yml").write_text("iterations: 4321\n")
    code, out, _ = run_cli(["train", "--config", tmp_path / "c.yml", "--help"], capsys)
    assert code == 0 and "4321" in out and "--steps" in out and "--iterations" in out


@pytest.mark.parametrize("command,extra,message", [
    ("recon", ["--preset", "tpu"], "unknown recon preset 'tpu' (choose from auto, cpu, gpu, quality)"),
    ("train", ["--preset", "../x"], "unknown train preset '../x'"),
    ("train", ["--config", "FILE:wings: 3\n"], "unknown train setting 'wings'"),
    ("recon", ["--config", "FILE:steps: [1, 2\n"], "malformed YAML at line"),
    ("recon", ["--config", "FILE:steps: many\n"], "'steps' must be int, got 'many'"),
    ("train", ["--config", "FILE:mask_source: magic\n"], "'mask_source' must be one of"),
    ("train", ["--config", "FILE:!!python/object/apply:os.system [echo hi]\n"], "malformed YAML"),
    ("train", ["--config", "MISSING"], "not found"),
])
def test_bad_presets_and_config_files_are_one_line_errors(tmp_path, capsys, command, extra, message):
    if extra[-1].startswith("FILE:"):
        (tmp_path / "bad.yml").write_text(extra[-1][5:])
        extra = [*extra[:-1], tmp_path / "bad.yml"]
    elif extra[-1] == "MISSING":
        extra = [*extra[:-1], tmp_path / "missing.yml"]
    code, _, err = run_cli([command, "--data", "s", "--out", tmp_path / "o", *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_every_run_writes_its_resolved_config_yml(tiny_run):
    path = tiny_run / "config.yml"
    body = yaml.safe_load(path.read_text())
    assert body["iterations"] == 300 and body["holdout_every"] == 4 and body["data"].endswith("tiny")
    again = train_defaults(config=path)  # a config.yml is a --config file: it gives the same run back
    original = TrainConfig(**{k: v for k, v in body.items()})
    for field in ("iterations", "holdout_every", "lr", "train_max_side", "pixels_per_step", "mask_source"):
        assert getattr(again, field) == getattr(original, field)
    assert str(again.data) == body["data"] and str(again.out) == body["out"]


@pytest.mark.slow
def test_presets_are_found_after_a_plain_pip_install(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *map(str, wheel_dir.glob("*.whl"))],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    probe = ("import splatseg.presets as p, splatseg.recon.config as r; "
             "print(p.presets_dir()); print(sorted(r.PRESETS)); print(r.PRESETS['cpu'].steps)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(target / "splatseg" / "configs") and lines[1] == "['cpu', 'gpu', 'quality']" and lines[2] == "3000"


def test_help_references_resolve(capsys):
    code, out, _ = run_cli(["recon", "--help"], capsys)
    flat = "".join(line.strip(" │") for line in out.splitlines())
    assert code == 0 and "docs/FORMATS.md" in flat and "see FORMATS.md" not in flat
    assert (REPO / "docs" / "FORMATS.md").is_file()
    assert "recon_preset_name" not in (REPO / "splatseg" / "cli.py").read_text()  # the hand-written argv scan is gone
