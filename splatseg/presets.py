"""Preset and config files for `recon` and `train`: YAML read into the config dataclass.

A config file is a flat YAML mapping of a command's fields (`steps: 3000`, `downscale: 2.0`; the
flag names with dashes work too, and so do the other command's names for one concept, e.g.
`iterations` for recon's `steps`, see `ALIASES`). Presets are config files shipped in the
repository's `configs/<command>/<name>.yml` (packaged with splatseg, so `pip install .` finds them).

Precedence, lowest first: the dataclass defaults, the preset (`--preset NAME`, or the config file's
own `preset` key, else "auto"), the `--config FILE`, then flags on the command line. The command
line pre-parses only `--config` and `--preset` (argparse) and hands the resolved values to tyro as
the defaults, so `--help` shows them. Every run writes the result as `config.yml`, which is itself a
valid `--config` file. Files are read with `yaml.safe_load` only: no tags, no code.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from splatseg.io.atomic import atomic_write

__all__ = ["ConfigError", "ALIASES", "presets_dir", "preset_names", "preset_path", "read_config_file", "apply_config_file",
           "preparse", "write_config_yml", "CONFIG_NAME"]

CONFIG_NAME = "config.yml"
ALIASES: dict[str, dict[str, str]] = {
    "recon": {"iterations": "steps", "holdout_every": "test_every", "checkpoint_every": "ckpt_every"},
    "train": {"steps": "iterations", "test_every": "holdout_every", "ckpt_every": "checkpoint_every"},
}
"""Per command: the other command's name for a concept -> this command's field (one name per
concept on the command line; both are accepted)."""


class ConfigError(ValueError):
    """A preset or config file that cannot be used; one-line message naming the file and the key."""


def presets_dir() -> Path:
    """The shipped presets: `splatseg/configs` inside an installed package (setuptools maps the
    repository's `configs/` there), else the source checkout's `configs/` beside `splatseg/`."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"the shipped presets are missing (looked in {here / 'configs'} and {here.parent / 'configs'}); "
                      "reinstall splatseg")


def preset_names(command: str) -> list[str]:
    """Names of the shipped presets of a command ("cpu", "gpu", "quality", ...)."""
    folder = presets_dir() / command
    return sorted(p.stem for p in folder.glob("*.yml")) if folder.is_dir() else []


def preset_path(command: str, name: str) -> Path:
    """configs/<command>/<name>.yml; ConfigError naming the choices when there is no such preset."""
    path = presets_dir() / command / f"{name}.yml"
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise ConfigError(f"unknown {command} preset {name!r} (choose from auto, {', '.join(preset_names(command))})")
    return path


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, where: str):
    """`value` (from YAML) as type `tp` (a resolved field type), or ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):  # a nested group: a mapping of its fields
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} settings, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        values = {}
        for raw_key, item in value.items():
            key = str(raw_key).replace("-", "_")
            if key not in names:
                raise ConfigError(f"{where}: unknown setting {raw_key!r}")
            values[key] = _coerce(item, hints[key], f"{where}.{raw_key}")
        return tp(**values)
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and issubclass(tp, Path):
        if isinstance(value, str) and value:
            return Path(value)
    elif origin in (list, tuple) and isinstance(value, list):
        inner = args[0] if args else Any
        items = [v if inner is Any else _coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    elif tp is Any:
        return value
    raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")


def read_config_file(path: str | Path, cls: type, command: str) -> dict[str, Any]:
    """Field values of `cls` from a YAML config file (names normalised, aliases mapped, types
    checked); ConfigError with one line for a missing / malformed file or an unknown key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: malformed YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: expected a mapping of {command} settings, got {type(body).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for raw_key, value in body.items():
        key = str(raw_key).lstrip("-").replace("-", "_")
        key = ALIASES.get(command, {}).get(key, key)
        if key not in fields:
            raise ConfigError(f"{path}: unknown {command} setting {raw_key!r} (see `splatseg {command} --help`)")
        if key in values:
            raise ConfigError(f"{path}: {raw_key!r} sets {key!r} a second time")
        values[key] = _coerce(value, hints[key], f"{path}: {raw_key!r}")
    return values


def apply_config_file(base, path: str | Path, command: str):
    """`base` (a config dataclass instance) with the file's values replaced."""
    return dataclasses.replace(base, **read_config_file(path, type(base), command))


def preparse(argv: list[str]) -> tuple[Path | None, str | None]:
    """(--config FILE, --preset NAME) from a command's arguments, or None each; everything else is
    left to tyro. argparse (no abbreviations, no --help) does the reading."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--preset", default=None)
    known, _ = parser.parse_known_args(argv)
    return known.config, known.preset


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a nested group (train's --virtual.*)
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def write_config_yml(folder: str | Path, cfg, command: str) -> Path:
    """Write the resolved configuration as FOLDER/config.yml (atomically): every field, readable
    back with `--config`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    header = f"# splatseg {command}: the resolved configuration of this run (use it again with --config)\n"
    path = folder / CONFIG_NAME
    with atomic_write(path) as f:
        f.write((header + yaml.safe_dump(body, sort_keys=False)).encode())
    return path
