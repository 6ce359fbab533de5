"""`splatseg` command line: tyro subcommands only; the work lives in the modules they call.

Errors a user can fix (missing or malformed files, bad prompts) print one line and exit 2.
"""

from __future__ import annotations

import sys
from typing import Annotated, Union

import tyro

from splatseg.demo import DemoConfig
from splatseg.recon.config import ReconConfig
from splatseg.segment import ExportAllConfig, SegmentConfig
from splatseg.train.config import TrainConfig
from splatseg.viewer.config import ViewerConfig


Command = Union[
    Annotated[DemoConfig, tyro.conf.subcommand("demo", description=DemoConfig.__doc__)],
    Annotated[ReconConfig, tyro.conf.subcommand("recon", description=ReconConfig.__doc__)],
    Annotated[TrainConfig, tyro.conf.subcommand("train", description=TrainConfig.__doc__)],
    Annotated[SegmentConfig, tyro.conf.subcommand("segment", description=SegmentConfig.__doc__)],
    Annotated[ExportAllConfig, tyro.conf.subcommand("export-all", description=ExportAllConfig.__doc__)],
    Annotated[ViewerConfig, tyro.conf.subcommand("view", description=ViewerConfig.__doc__)],
]


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
    cmd = tyro.cli(Command, args=args, prog="splatseg")
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
