"""Click prompts as command-line flags, and the selection they make: one dataclass shared by the
commands that select an object (`mesh`; `segment` has the same flags), so a new kind of prompt is
added in one place.

Flags (tyro, prefix omitted where the dataclass is nested): `--click STEM X Y` (repeatable),
`--negative STEM X Y` (repeatable), `--granularity whole|part`, `--threshold T`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import tyro

from splatseg.query import DEFAULT_THRESHOLD, Click, Granularity, QueryError, Selection, select_by_clicks
from splatseg.run import Field

ClickArg = Annotated[list[tuple[str, float, float]], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="STEM X Y")]
"""A repeatable STEM X Y flag."""


@dataclass
class ClickPrompts:
    """Point prompts in the run's images (FORMATS.md: pixel coordinates of the image named by its stem)."""

    click: ClickArg = field(default_factory=list)
    """Positive click: STEM X Y in pixels of that image (origin top-left, x right, y down). Repeatable."""
    negative: ClickArg = field(default_factory=list)
    """Negative click (STEM X Y): removes what lies under it. Repeatable."""
    granularity: Granularity = "whole"
    """'whole' selects the object under the click, 'part' the part of it."""
    threshold: float = DEFAULT_THRESHOLD
    """Lifted score in [0, 1] above which a Gaussian is selected."""

    def clicks(self) -> list[Click]:
        return [Click(s, x, y, True) for s, x, y in self.click] + [Click(s, x, y, False) for s, x, y in self.negative]

    def check(self) -> None:
        """QueryError (one line) for prompts that cannot be answered whatever the run."""
        if not self.click:
            raise QueryError("give at least one --click STEM X Y")
        if not 0.0 <= self.threshold <= 1.0:
            raise QueryError(f"--threshold must lie in [0, 1], got {self.threshold}")

    def select(self, fld: Field) -> Selection:
        """The selection these prompts make in a trained field; QueryError when it is empty."""
        self.check()
        sel = select_by_clicks(fld, self.clicks(), self.granularity, self.threshold)
        if not sel.mask.any():
            raise QueryError("the selection is empty (try a lower --threshold or another click)")
        return sel
