"""Do the splats and the photos' cameras share one frame? A quick check before any long work.

A few training views (spread over the sorted set) are rendered at low resolution (longest side
`max_side` px) in RGB and alpha, composited over the photo's own border colour, and compared with
the photos at the same size:
- `correlation`: how well the render's detail matches the photo's where the splats are: Pearson
  correlation of the two images' band-pass detail (Gaussian blur sigma 1.5 minus sigma 6 pixels, each
  channel centred), each pixel weighted by the (slightly blurred) rendered alpha. Band-pass, because
  the whole-image colour layout (a table against a dark background) still correlates when the
  splats are turned 90 or 180 degrees; alpha-weighted, so splats cropped to one object are judged
  on that object, not on the background they no longer hold. Invariant to exposure gain and offset.
- `coverage`: mean rendered alpha, how much of the image the splats cover;
- `colour_error`: mean absolute RGB difference (0..1) where the splats are opaque (alpha > 0.5).

The verdict: the frames agree when the median correlation over the views is at least
`MIN_CORRELATION` and the splats cover at least `MIN_COVERAGE` of the images. The margin was set on
working and broken scenes by `scripts/eval_alignment.py` (figures in the README, "Bring your own
scene"): aligned generated scenes 0.96, a 1,000-step maryrose recon 0.92, splats cropped to one
object 0.65-0.68; moved, rotated and foreign splats 0.46 at most. Known weak spot: a blurry recon
of a scene that looks alike after a half turn (a square table) can pass turned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from splatseg.io.images import load_image
from splatseg.types import Cameras, Splats

__all__ = ["AlignmentError", "AlignmentReport", "ViewAgreement", "check_alignment", "require_alignment",
           "MIN_CORRELATION", "MIN_COVERAGE", "DEFAULT_VIEWS", "DEFAULT_MAX_SIDE"]

MIN_CORRELATION = 0.5
"""Median photo correlation below which splats and cameras are said to disagree (see module doc)."""
MIN_COVERAGE = 0.01
"""Median rendered alpha below which the splats are said to be out of view."""
DEFAULT_VIEWS = 5
DEFAULT_MAX_SIDE = 80
DETAIL_SIGMAS = (1.5, 6.0)
"""Band-pass of the compared detail: blur(sigma 1.5) - blur(sigma 6), in pixels at the check's
resolution. A finer band separated a rotated symmetric table better but failed rough reconstructions
(150 CPU steps: 0.54 at sigmas 1-4, 0.66 here); a coarser one let the symmetric table through (0.47)."""
WEIGHT_SIGMA = 2.0
"""Blur (pixels) of the rendered alpha used as per-pixel weight."""


class AlignmentError(ValueError):
    """Splats and cameras disagree; the one-line message names the figures, the likely cause and the fix."""


@dataclass
class ViewAgreement:
    """Render-vs-photo figures of one view (definitions in the module doc)."""

    name: str
    correlation: float
    coverage: float
    colour_error: float


@dataclass
class AlignmentReport:
    """The check's outcome: per-view figures, their medians and the verdict (`ok`)."""

    views: list[ViewAgreement]
    correlation: float
    coverage: float
    resolution: tuple[int, int]
    min_correlation: float = MIN_CORRELATION
    min_coverage: float = MIN_COVERAGE

    @property
    def ok(self) -> bool:
        return self.correlation >= self.min_correlation and self.coverage >= self.min_coverage

    def summary(self) -> str:
        return (f"photo correlation {self.correlation:.2f}, median of {len(self.views)} views at "
                f"{self.resolution[0]}x{self.resolution[1]}, {self.min_correlation} needed; "
                f"the splats cover {100 * self.coverage:.0f}% of the images")

    def as_json(self) -> dict:
        return {"ok": self.ok, "correlation": round(self.correlation, 4), "coverage": round(self.coverage, 4),
                "min_correlation": self.min_correlation, "min_coverage": self.min_coverage, "resolution": list(self.resolution),
                "views": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(view).items()} for view in self.views]}


def spread_views(indices: Sequence[int], count: int) -> list[int]:
    """`count` of `indices` evenly spread over them (all of them when there are fewer)."""
    indices = list(indices)
    if len(indices) <= count:
        return indices
    picks = np.unique(np.round(np.linspace(0, len(indices) - 1, count)).astype(int))
    return [indices[i] for i in picks]


def weighted_correlation(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> float:
    """Pearson correlation of two [H, W, 3] images with per-pixel weights [H, W], each channel
    centred on its weighted mean; 0 when either image is flat or the weights vanish."""
    w = weight.reshape(-1, 1).astype(np.float64)
    total = float(w.sum())
    if total <= 1e-9:
        return 0.0
    a = a.reshape(-1, 3).astype(np.float64)
    b = b.reshape(-1, 3).astype(np.float64)
    a = a - (w * a).sum(0) / total
    b = b - (w * b).sum(0) / total
    denominator = float(np.sqrt((w * a * a).sum() * (w * b * b).sum()))
    return float((w * a * b).sum() / denominator) if denominator > 1e-12 else 0.0


def detail(image: np.ndarray) -> np.ndarray:
    """Band-pass detail [H, W, 3] of an image (see DETAIL_SIGMAS)."""
    fine, coarse = ((s, s, 0) for s in DETAIL_SIGMAS)
    return ndimage.gaussian_filter(image, sigma=fine, mode="nearest") - ndimage.gaussian_filter(image, sigma=coarse, mode="nearest")


def view_agreement(splats_params: dict, sh_degree: int, cameras: Cameras, i: int) -> ViewAgreement:
    """Figures of camera i (at its size in `cameras`) against its photo."""
    from splatseg.render import render

    w, h = int(cameras.widths[i]), int(cameras.heights[i])
    photo = load_image(cameras.image_paths[i], size=(w, h)).astype(np.float32) / 255.0
    border = np.concatenate([photo[0], photo[-1], photo[:, 0], photo[:, -1]])
    background = np.median(border, axis=0).astype(np.float32)
    p = splats_params
    with torch.no_grad():
        out = render(p["means"], p["quats"], p["scales"], p["opacities"], p["sh"],
                     torch.from_numpy(cameras.viewmats[i : i + 1]).float(), torch.from_numpy(cameras.Ks[i : i + 1]).float(),
                     w, h, sh_degree=sh_degree, backgrounds=torch.from_numpy(background)[None])
    rgb = out.colors[0].clamp(0.0, 1.0).numpy()
    alpha = out.alphas[0, ..., 0].numpy()
    opaque = alpha > 0.5
    error = float(np.abs(rgb - photo)[opaque].mean()) if opaque.any() else float("nan")
    weight = ndimage.gaussian_filter(alpha, sigma=WEIGHT_SIGMA, mode="nearest")
    return ViewAgreement(cameras.names[i], weighted_correlation(detail(rgb), detail(photo), weight), float(alpha.mean()), error)


def check_alignment(splats: Splats, cameras: Cameras, indices: Sequence[int] | None = None, num_views: int = DEFAULT_VIEWS,
                    max_side: int = DEFAULT_MAX_SIDE, min_correlation: float = MIN_CORRELATION,
                    min_coverage: float = MIN_COVERAGE) -> AlignmentReport:
    """Render `num_views` of the cameras (chosen evenly among `indices`, default all) at longest side
    `max_side` and compare them with their photos. Cameras must be pinhole (undistorted)."""
    if len(cameras) == 0:
        raise AlignmentError("no cameras to check the splats against")
    chosen = spread_views(range(len(cameras)) if indices is None else indices, num_views)
    factor = max(1.0, float(max(cameras.widths.max(), cameras.heights.max())) / max_side)
    small = cameras.downscaled(factor)
    params = splats.torch_params()
    views = [view_agreement(params, splats.sh_degree, small, i) for i in chosen]
    return AlignmentReport(views=views, correlation=float(np.median([v.correlation for v in views])),
                           coverage=float(np.median([v.coverage for v in views])),
                           resolution=(int(small.widths[chosen[0]]), int(small.heights[chosen[0]])),
                           min_correlation=min_correlation, min_coverage=min_coverage)


def require_alignment(report: AlignmentReport, transform_given: bool) -> None:
    """AlignmentError (one line: the figures, the likely cause, the fix) unless the report is ok."""
    if report.ok:
        return
    if transform_given:
        cause = ("even with --splats-transform: check that the transform maps the splat file's frame to the "
                 "cameras' (world_from_splats; nerfstudio's dataparser_transforms.json is inverted for you) "
                 "and that the splats were trained on this scene")
    elif report.coverage < report.min_coverage:
        cause = ("the splats are barely in view: they may be in a normalised frame (nerfstudio ns-export, gsplat "
                 "normalize_world_space) or belong to another scene; pass --splats-transform dataparser_transforms.json "
                 "(or a 4x4 world_from_splats JSON)")
    else:
        cause = ("the splats may be in a normalised or rotated frame (nerfstudio ns-export, gsplat normalize_world_space) "
                 "or belong to another scene; pass --splats-transform dataparser_transforms.json (or a 4x4 "
                 "world_from_splats JSON)")
    raise AlignmentError(f"splats and cameras disagree ({report.summary()}): {cause}, "
                         "or --skip-alignment-check if you know they match")
