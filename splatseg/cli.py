"""`splatseg` command line: tyro subcommands only; the work lives in the modules they call.

Errors a user can fix (missing or malformed files, bad prompts) print one line and exit 2.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated, Union

import tyro

from splatseg.demo import DemoConfig
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
        Annotated[ViewerConfig, tyro.conf.subcommand("view", description=ViewerConfig.__doc__)],
    ]


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
    elif isinstance(cmd, ViewerConfig):
        from splatseg.viewer.app import run_viewer

        run_viewer(cmd)
    elif isinstance(cmd, ReconConfig):
        from splatseg.recon import run_recon

        out = run_recon(cmd)
        print(f"splats written to {out}")
    else:
        raise TypeError(f"unknown command {type(cmd).__name__}")


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else list(args)
    try:
        defaults = command_defaults(args)
    except ValueError as e:  # unknown preset, bad config file or key
        print(f"splatseg: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    cmd = tyro.cli(command_type(**defaults), args=args, prog="splatseg")
    for default in defaults.values():  # the preset as resolved ("auto" -> cpu/gpu), the config file as read
        cmd = replace(cmd, preset=default.preset, config=default.config)
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
