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
from splatseg.info import InfoConfig
from splatseg.recon.config import ReconConfig, preset
from splatseg.segment import ExportAllConfig, SegmentConfig
from splatseg.train.config import TrainConfig
from splatseg.viewer.config import ViewerConfig


def command_type(recon_default: ReconConfig | None = None):
    """The tyro union of subcommands; `recon`'s flags default to `recon_default` (a preset)."""
    recon = tyro.conf.subcommand("recon", description=ReconConfig.__doc__, default=recon_default or preset("cpu"))
    return Union[
        Annotated[DemoConfig, tyro.conf.subcommand("demo", description=DemoConfig.__doc__)],
        Annotated[ReconConfig, recon],
        Annotated[TrainConfig, tyro.conf.subcommand("train", description=TrainConfig.__doc__)],
        Annotated[SegmentConfig, tyro.conf.subcommand("segment", description=SegmentConfig.__doc__)],
        Annotated[ExportAllConfig, tyro.conf.subcommand("export-all", description=ExportAllConfig.__doc__)],
        Annotated[ViewerConfig, tyro.conf.subcommand("view", description=ViewerConfig.__doc__)],
        Annotated[InfoConfig, tyro.conf.subcommand("info", description=InfoConfig.__doc__)],
    ]


def recon_preset_name(args: list[str]) -> str | None:
    """The value of `--preset` in a `recon` command line ("auto" when absent), None for other
    commands. Read before parsing because the preset sets the defaults of every other flag."""
    if not args or args[0] != "recon":
        return None
    name = "auto"
    for i, arg in enumerate(args):
        if arg == "--preset" and i + 1 < len(args):
            name = args[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    return name


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
    else:
        raise TypeError(f"unknown command {type(cmd).__name__}")


DESCRIPTION = ("Make 3D Gaussian splatting scenes selectable. Errors print one line (exit 2); "
               "add --debug anywhere, or set SPLATSEG_DEBUG=1, for a traceback.")


def parse(args: list[str], recon_default: ReconConfig | None):
    """tyro's parse of `args`; a parse error is re-raised as one-line ValueError (tyro draws a box
    of many lines on stderr, captured here), `--help` prints and exits as tyro does."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            cmd = tyro.cli(command_type(recon_default), args=args, prog="splatseg", description=DESCRIPTION)
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
        name = recon_preset_name(args)
        recon_default = preset(name) if name is not None else None
        cmd = parse(args, recon_default)
        if isinstance(cmd, ReconConfig) and recon_default is not None:
            cmd = replace(cmd, preset=recon_default.preset)  # "auto" recorded as what it resolved to
        dispatch(cmd)
    except KeyboardInterrupt:
        print("splatseg: interrupted", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the one error path: one line, never a bare traceback
        return errors.report(e, debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
