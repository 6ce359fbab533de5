"""`splatseg` command line: tyro subcommands only; the work lives in the modules they call.

Errors a user can fix (missing or malformed files, bad prompts) print one line and exit 2.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated, Union

import tyro

from splatseg.demo import DemoConfig
from splatseg.imitation.config import DecodeConfig, ImitateConfig
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
        Annotated[ImitateConfig, tyro.conf.subcommand("imitate", description=ImitateConfig.__doc__)],
        Annotated[DecodeConfig, tyro.conf.subcommand("decode", description=DecodeConfig.__doc__)],
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


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else list(args)
    name = recon_preset_name(args)
    recon_default = None
    if name is not None:
        try:
            recon_default = preset(name)
        except ValueError as e:
            print(f"splatseg: error: {e}", file=sys.stderr)
            return 2
    cmd = tyro.cli(command_type(recon_default), args=args, prog="splatseg")
    if isinstance(cmd, ReconConfig) and recon_default is not None:
        cmd = replace(cmd, preset=recon_default.preset)  # "auto" recorded as what it resolved to
    try:
        dispatch(cmd)
    except KeyboardInterrupt:
        print("splatseg: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"splatseg: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
