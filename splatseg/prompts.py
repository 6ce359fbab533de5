"""The prompt flags every selecting command shares (`segment`, and `mesh` or anything else that
picks an object), and their answer over a trained run.

Prompts are clicks in a view's pixels (`--click STEM X Y`, `--negative STEM X Y`), 3D points in the
splats' world coordinates (`--point X Y Z`, `--negative-point X Y Z`; FORMATS.md), which may be
mixed, or one sentence (`--text`, alone). Embed `Prompts` in a tyro config as
`Annotated[Prompts, tyro.conf.OmitArgPrefixes]` so the flags keep these names, then call
`select(fld, prompts)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import tyro

from splatseg.query import (
    DEFAULT_THRESHOLD,
    Click,
    Granularity,
    Point,
    QueryError,
    Selection,
    SurfaceIndex,
    click_ray,
    combine,
    pick_query,
    pixel_feature,
    query_for_point,
)
from splatseg.run import Field

ClickArg = Annotated[list[tuple[str, float, float]], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="STEM X Y")]
PointArg = Annotated[list[tuple[float, float, float]], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="X Y Z")]


@dataclass
class Prompts:
    """What to select: clicks and/or 3D points, or a sentence."""

    click: ClickArg = field(default_factory=list)
    """Positive click: STEM X Y in pixels of that image (origin top-left, x right, y down). Repeatable."""
    negative: ClickArg = field(default_factory=list)
    """Negative click (STEM X Y): removes what lies under it. Repeatable."""
    point: PointArg = field(default_factory=list)
    """Positive 3D point X Y Z in the splats' world coordinates: the object whose surface is at or
    nearest to it (a point off the surface snaps to the nearest one within 5% of the scene size).
    Works for every run, with or without photos; may be mixed with --click."""
    negative_point: PointArg = field(default_factory=list)
    """Negative 3D point X Y Z: removes the part whose surface is nearest to it."""
    text: str | None = None
    """A sentence instead of clicks and points: answered by CLIPSeg when the run was trained with
    --clipseg (relevancy lifted through the blend weights), else by the queries' CLIP vectors when it
    was trained with --clip-pretrained; refused when it has neither."""
    granularity: Granularity = "whole"
    """'whole' selects the object under the prompt, 'part' the part of it."""
    threshold: float = DEFAULT_THRESHOLD
    """Lifted score in [0, 1] above which a Gaussian is selected."""

    @property
    def clicks(self) -> list[Click]:
        return [Click(s, x, y, True) for s, x, y in self.click] + [Click(s, x, y, False) for s, x, y in self.negative]

    @property
    def points(self) -> list[Point]:
        return [Point(*p, positive=True) for p in self.point] + [Point(*p, positive=False) for p in self.negative_point]

    def check(self) -> None:
        """QueryError (one line) for a prompt set that cannot be answered."""
        spatial = self.click or self.point
        if self.text is None and not spatial:
            raise QueryError("give at least one --click STEM X Y or --point X Y Z, or --text")
        if self.text is not None and (spatial or self.negative or self.negative_point):
            raise QueryError("give either --click / --point or --text, not both")
        if not 0.0 <= self.threshold <= 1.0:
            raise QueryError(f"--threshold must lie in [0, 1], got {self.threshold}")


def surface_of_run(fld: Field) -> SurfaceIndex:
    """The surfaces of the run's splats file in the file's own coordinates (what a splat editor
    shows; not moved by a --splats-transform), for point prompts."""
    from splatseg.data.placement import run_splats

    splats = run_splats(fld, in_world=False)
    return SurfaceIndex.build(splats.means, splats.opacities)


def run_picking(fld: Field, splats=None):
    """`viewer.picking.PickingTensors` of the run's splats in its cameras' frame (for the 3D scores
    under a click); `splats` when the caller has read them already (`data.placement.run_splats`)."""
    from splatseg.data.placement import run_splats
    from splatseg.viewer.picking import PickingTensors

    splats = run_splats(fld) if splats is None else splats
    return PickingTensors.build(splats.means, splats.unit_quats, splats.scales, splats.opacities, fld.features)


def click_scores(fld: Field, picking, click: Click) -> np.ndarray | None:
    """3D scores [K] of the surface under a click (`query.pick_query`'s `scores_at`): the lifted
    scores rendered along the ray through the click's pixel; None for runs without cameras."""
    from splatseg.viewer.picking import scores_along_ray

    ray = click_ray(fld, click)
    return None if ray is None else scores_along_ray(picking, fld.lifted, *ray)


def click_queries(fld: Field, clicks: list[Click], granularity: Granularity, picking=None, splats=None) -> tuple[list[int], list[int]]:
    """(positive, negative) query indices of clicks in the run's own pixels. `picking` (from
    `run_picking`) is built on demand, from `splats` when given, when the run stores cameras and
    containment."""
    if picking is None and clicks and fld.view_viewmats is not None and fld.containment is not None:
        pixel_feature(fld, clicks[0])  # a bad first click fails before the splats are read
        picking = run_picking(fld, splats)
    pos, neg = [], []
    for c in clicks:
        feature = pixel_feature(fld, c)  # checks the stem and the pixel first
        at = click_scores(fld, picking, c) if picking is not None else None
        (pos if c.positive else neg).append(pick_query(fld, feature, granularity if c.positive else "part", at))
    return pos, neg


def select_clicks(fld: Field, clicks: list[Click], granularity: Granularity = "whole", threshold: float = DEFAULT_THRESHOLD,
                  picking=None) -> Selection:
    """Selection for clicks given in the run's own pixels (evaluation code; `select` maps a user's
    photo pixels first)."""
    if not any(c.positive for c in clicks):
        raise QueryError("at least one positive click is needed")
    pos, neg = click_queries(fld, clicks, granularity, picking)
    return combine(fld, pos, [k for k in neg if k not in pos], threshold)


def select(fld: Field, prompts: Prompts, surface: SurfaceIndex | None = None, picking=None, splats=None) -> Selection:
    """The selection answering `prompts` on a trained run (clicks and points combined as in
    `query.combine`: max over positives, dropped where a negative scores at least as high).
    `surface` (built from the run's splats) is made on demand for point prompts, `picking` for
    clicks (from `splats`, the run's splats in its cameras' frame, when the caller has them)."""
    prompts.check()
    if prompts.text is not None:  # CLIPSeg when the run has its cache, else CLIP per query (splatseg.text_query)
        from splatseg.text_query import TextPrompter

        answer = TextPrompter(fld).select(prompts.text, prompts.threshold)
        answer.selection.text_backend = answer.backend
        return answer.selection
    from splatseg.data.undistort import photo_pixels_to_run  # distorted photos: their pixels -> the run's

    undistortion = fld.info.get("undistortion")
    clicks = [Click(*photo_pixels_to_run(undistortion, [(c.stem, c.x, c.y)])[0], c.positive) for c in prompts.clicks]
    pos, neg = click_queries(fld, clicks, prompts.granularity, picking, splats)
    if prompts.points:
        surface = surface or surface_of_run(fld)
        for p in prompts.points:
            k = query_for_point(fld, surface, p, prompts.granularity if p.positive else "part")
            (pos if p.positive else neg).append(k)
    return combine(fld, pos, [k for k in neg if k not in pos], prompts.threshold)
