"""`splatseg` command line: tyro subcommands only; the work lives in the modules they call.

One error path (`splatseg.errors`): errors a user can fix (missing or malformed files, bad prompts,
bad flags, parse errors, a full disk) print one line and exit 2; anything unexpected prints one
line saying so and exits 1. `--debug` anywhere (or SPLATSEG_DEBUG=1) adds the traceback.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import replace
from typing import Annotated, Union

import tyro

from splatseg import errors
from splatseg.demo import DemoConfig
from splatseg.imitation.config import DecodeConfig, ImitateConfig
from splatseg.info import InfoConfig
from splatseg.mesh_command import MeshConfig
from splatseg.presets import preparse
from splatseg.recon.config import ReconConfig, recon_defaults
from splatseg.segment import ExportAllConfig, SegmentConfig
from splatseg.train.config import TrainConfig, train_defaults
from splatseg.viewer.config import ViewerConfig


def command_type(recon_default: ReconConfig | None = None, train_default: TrainConfig | None = None):
    """The tyro union of subcommands; `recon` and `train` flags default to the given instances
    (their preset and config file, resolved by `command_defaults`)."""
    recon = tyro.conf.subcommand("recon", description=ReconConfig.__doc__, default=recon_default or recon_defaults("cpu"))
    train = tyro.conf.subcommand("train", description=TrainConfig.__doc__, default=train_default or train_defaults("cpu"))
    return Union[
        Annotated[DemoConfig, tyro.conf.subcommand("demo", description=DemoConfig.__doc__)],
        Annotated[ReconConfig, recon],
        Annotated[TrainConfig, train],
        Annotated[SegmentConfig, tyro.conf.subcommand("segment", description=SegmentConfig.__doc__)],
        Annotated[ExportAllConfig, tyro.conf.subcommand("export-all", description=ExportAllConfig.__doc__)],
        Annotated[MeshConfig, tyro.conf.subcommand("mesh", description=MeshConfig.__doc__)],
        Annotated[ViewerConfig, tyro.conf.subcommand("view", description=ViewerConfig.__doc__)],
        Annotated[InfoConfig, tyro.conf.subcommand("info", description=InfoConfig.__doc__)],
        Annotated[ImitateConfig, tyro.conf.subcommand("imitate", description=ImitateConfig.__doc__)],
        Annotated[DecodeConfig, tyro.conf.subcommand("decode", description=DecodeConfig.__doc__)],
    ]


def ray_flag_value(args: list[str]) -> list[str]:
    """`train ... --ray` with no address (last, or followed by another flag) means `--ray local`."""
    if not args or args[0] != "train":
        return args
    out = list(args)
    for j in range(len(out) - 1, 0, -1):
        if out[j] == "--ray" and (j + 1 == len(out) or out[j + 1].startswith("--")):
            out.insert(j + 1, "local")
    return out


def command_defaults(args: list[str]) -> dict:
    """{"recon_default" | "train_default": instance} for a recon / train command line: its
    --preset and --config (pre-parsed) applied, so tyro's flags and --help start from them."""
    if not args or args[0] not in ("recon", "train"):
        return {}
    config, preset_name = preparse(args[1:])
    if args[0] == "recon":
        return {"recon_default": recon_defaults(preset_name, config)}
    return {"train_default": train_defaults(preset_name, config)}


def dispatch(cmd) -> None:
    if isinstance(cmd, DemoConfig):
        from splatseg.demo import run_demo

        run_demo(cmd)
    elif isinstance(cmd, TrainConfig):
        from splatseg.train import train

        out = train(cmd)
        print(f"run written to {out}")
    elif isinstance(cmd, SegmentConfig):
        from splatseg.segment import print_summary, run_segment

        print_summary(run_segment(cmd))
    elif isinstance(cmd, ExportAllConfig):
        from splatseg.segment import print_summary, run_export_all

        print_summary(run_export_all(cmd))
    elif isinstance(cmd, MeshConfig):
        from splatseg.mesh_command import run_mesh
        from splatseg.segment import print_summary

        print_summary(run_mesh(cmd))
    elif isinstance(cmd, ViewerConfig):
        from splatseg.viewer.app import run_viewer

        run_viewer(cmd)
    elif isinstance(cmd, InfoConfig):
        import json

        from splatseg.info import splat_info

        info = splat_info(cmd.path)
        for note in info.get("notes", []):
            print(f"note: {note}")
        print(json.dumps(info))
    elif isinstance(cmd, ReconConfig):
        from splatseg.recon import run_recon

        out = run_recon(cmd)
        print(f"splats written to {out}")
    elif isinstance(cmd, ImitateConfig):
        from splatseg.imitation.command import print_summary, run_imitate

        print_summary(run_imitate(cmd))
    elif isinstance(cmd, DecodeConfig):
        from splatseg.imitation.command import print_summary, run_decode

        print_summary(run_decode(cmd))
    else:
        raise TypeError(f"unknown command {type(cmd).__name__}")


DESCRIPTION = ("Make 3D Gaussian splatting scenes selectable. Errors print one line (exit 2); "
               "add --debug anywhere, or set SPLATSEG_DEBUG=1, for a traceback.")


def parse(args: list[str], defaults: dict):
    """tyro's parse of `args`; a parse error is re-raised as one-line ValueError (tyro draws a box
    of many lines on stderr, captured here), `--help` prints and exits as tyro does."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            cmd = tyro.cli(command_type(**defaults), args=args, prog="splatseg", description=DESCRIPTION)
    except SystemExit as e:
        if e.code not in (0, None):
            raise ValueError(errors.parse_error_line(captured.getvalue())) from None
        sys.stderr.write(captured.getvalue())
        raise
    sys.stderr.write(captured.getvalue())  # warnings of a successful parse
    return cmd


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else list(args)
    debug, args = errors.debug_requested(args)
    try:
        empty = errors.empty_value_error(args)
        if empty is not None:
            raise ValueError(empty)
        args = ray_flag_value(args)
        defaults = command_defaults(args)  # --preset / --config of recon and train; a bad one is one line
        cmd = parse(args, defaults)
        for default in defaults.values():  # the preset as resolved ("auto" -> cpu/gpu), the config file as read
            cmd = replace(cmd, preset=default.preset, config=default.config)
        dispatch(cmd)
    except KeyboardInterrupt:
        print("splatseg: interrupted", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the one error path: one line, never a bare traceback
        return errors.report(e, debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
