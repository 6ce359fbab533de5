"""Evaluation: rendering a 3D selection back into camera views, and the one-click-per-object
protocol on generated scenes (2D IoU on held-out views, 3D IoU against the true Gaussians)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from splatseg.data import load_scene
from splatseg.data.synthetic import TABLE_ID, load_ground_truth
from splatseg.data.placement import splats_in_world
from splatseg.io.ply import read_ply
from splatseg.metrics import iou
from splatseg.prompts import select_clicks
from splatseg.query import Click, Selection
from splatseg.render import render
from splatseg.run import load_field
from splatseg.types import Cameras


def render_selection(params: dict, mask: np.ndarray, cameras: Cameras, i: int) -> np.ndarray:
    """bool [H, W]: pixels of camera i where the selected Gaussians make up over half of the
    accumulated opacity (and the pixel is at least half covered).

    params: `Splats.torch_params()`; mask: bool [N] selection.
    """
    sel = torch.from_numpy(np.asarray(mask, np.float32))[:, None].to(params["means"].device)
    with torch.no_grad():
        out = render(
            params["means"], params["quats"], params["scales"], params["opacities"], sel,
            torch.from_numpy(cameras.viewmats[i : i + 1]).float(), torch.from_numpy(cameras.Ks[i : i + 1]).float(),
            int(cameras.widths[i]), int(cameras.heights[i]),
        )
    value = out.colors[0, ..., 0].cpu().numpy()
    alpha = out.alphas[0, ..., 0].cpu().numpy()
    return (alpha > 0.5) & (value > 0.5 * alpha)


@dataclass
class ObjectResult:
    """One object's click and scores."""

    name: str
    click: tuple[str, float, float]
    selected: int
    true_gaussians: int
    iou_3d: float
    iou_2d_heldout: float


@dataclass
class ClickEvaluation:
    """Results of `evaluate_one_click_per_object` plus what pictures of it need."""

    results: list[ObjectResult]
    selections: dict[int, np.ndarray]  # object id -> selected Gaussians [N] bool
    object_names: list[str]
    cameras: Cameras
    gt_maps: dict[int, np.ndarray]  # view index -> object label map [H, W]
    heldout: list[int]
    params: dict
    num_gaussians: int


def choose_click(gt_object: np.ndarray, oid: int) -> tuple[float, float] | None:
    """Pixel centre deepest inside the object's visible region (as a person would click)."""
    region = gt_object == oid
    if not region.any():
        return None
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(np.argmax(depth), depth.shape)
    return col + 0.5, row + 0.5


def evaluate_one_click_per_object(scene_dir: Path, run_dir: Path, threshold: float, granularity: str = "whole") -> ClickEvaluation:
    """For each object of a generated scene (the table excepted): one click deep inside it, in the
    training view that shows most of it; then 3D IoU of the selection against the object's true
    Gaussians and mean 2D IoU of the rendered selection on the held-out views that show it."""
    gt = load_ground_truth(scene_dir)
    fld = load_field(run_dir)
    cams = load_scene(scene_dir).cameras
    params = splats_in_world(fld.splats_path, fld.info.get("splats_transform")).torch_params()
    heldout = [cams.names.index(n) for n in fld.info["heldout_views"]]
    train_views = [cams.names.index(n) for n in fld.info["train_views"]]
    gt_maps = {i: gt.view_labels(cams.names[i])[0] for i in range(len(cams))}
    results, selections = [], {}
    for oid, name in enumerate(gt.object_names):
        if oid == TABLE_ID:
            continue
        best = max(train_views, key=lambda i: int((gt_maps[i] == oid).sum()))
        xy = choose_click(gt_maps[best], oid)
        if xy is None:
            continue
        click = Click(cams.names[best], *xy)
        sel = select_clicks(fld, [click], granularity, threshold)
        selections[oid] = sel.mask
        truth = gt.object_id == oid
        ious = [iou(render_selection(params, sel.mask, cams, i), gt_maps[i] == oid)
                for i in heldout if (gt_maps[i] == oid).any()]
        results.append(ObjectResult(name, (click.stem, click.x, click.y), sel.count, int(truth.sum()),
                                    iou(sel.mask, truth), float(np.mean(ious)) if ious else float("nan")))
    return ClickEvaluation(results, selections, gt.object_names, cams, gt_maps, heldout, params, fld.num_gaussians)


@dataclass
class ForegroundRow:
    """Scores of one view against its ground-truth foreground mask."""

    stem: str
    heldout: bool
    iou: float
    accuracy: float
    boundary_iou: float


def surface_point(params: dict, cameras: Cameras, i: int, x: float, y: float) -> np.ndarray:
    """World point [3] on the surface the splats render under pixel (x, y) of camera i (its
    expected depth there, back-projected); QueryError when the pixel is empty."""
    from splatseg.query import QueryError

    n = params["means"].shape[0]
    with torch.no_grad():
        out = render(params["means"], params["quats"], params["scales"], params["opacities"], params["means"].new_zeros(n, 1),
                     torch.from_numpy(cameras.viewmats[i : i + 1]).float(), torch.from_numpy(cameras.Ks[i : i + 1]).float(),
                     int(cameras.widths[i]), int(cameras.heights[i]))
    row, col = int(y), int(x)
    if float(out.alphas[0, row, col, 0]) < 0.5:
        raise QueryError(f"pixel ({x}, {y}) of {cameras.names[i]!r} shows no surface of the splats")
    z = float(out.depths[0, row, col, 0])
    K = cameras.Ks[i]
    cam = np.array([(x - K[0, 2]) / K[0, 0] * z, (y - K[1, 2]) / K[1, 1] * z, z, 1.0])
    return (cameras.camtoworlds[i] @ cam)[:3]


def evaluate_foreground(scene_dir: Path, run_dir: Path, click: Click | None = None, threshold: float = 0.3,
                        granularity: str = "whole", point=None) -> tuple:
    """NVOS / SPIn-NeRF protocol on a scene whose frames carry `gt_mask_path`: one prompt ->
    selection -> rendered in every view -> IoU, pixel accuracy and boundary IoU against the mask,
    per view. The prompt is `click`, or a 3D `point` (`splatseg.query.Point`), or by default the
    pixel deepest inside the first view's mask: clicked there when the run knows that view, else
    (a PLY-only run, trained on views made from the splats) lifted to 3D through the depth the
    splats render there and given as a point. Returns (prompt, selection, rows)."""
    from splatseg.io.images import load_mask
    from splatseg.metrics import accuracy, boundary_iou
    from splatseg.query import QueryError, SurfaceIndex, select_by_points

    from splatseg.data.undistort import cache_entries, photo_pixels_to_run, undistort_mask

    scene = load_scene(scene_dir)
    fld = load_field(run_dir)
    undistortion = fld.info.get("undistortion")
    entries = cache_entries(undistortion["cache"]) if undistortion else {}
    photo_cams = scene.cameras  # the masks are drawn on the photos as stored
    masks = []
    for i, extra in enumerate(scene.frame_extras):
        rel = extra.get("gt_mask_path")
        if rel is None:
            raise ValueError(f"frame {photo_cams.names[i]!r} of {scene_dir} has no gt_mask_path")
        mask = load_mask(Path(scene.root) / rel, size=(int(photo_cams.widths[i]), int(photo_cams.heights[i])))
        masks.append(undistort_mask(mask, entries.get(photo_cams.names[i])))
    if undistortion:  # the run's pinhole views, from its cache
        from splatseg.data.undistort import undistort_scene

        scene, _ = undistort_scene(scene, undistortion["cache"], progress=False, log=lambda _: None)
        if click is not None:
            click = Click(*photo_pixels_to_run(undistortion, [(click.stem, click.x, click.y)])[0], click.positive)
    cams = scene.cameras
    splats = splats_in_world(fld.splats_path, fld.info.get("splats_transform"))  # the cameras' frame
    params = splats.torch_params()
    if click is None and point is None:
        xy = choose_click(masks[0].astype(np.int32), 1)
        if xy is None:
            raise QueryError(f"the ground-truth mask of {cams.names[0]!r} is empty: pass a click")
        if cams.names[0] in fld.view_names:
            click = Click(cams.names[0], *xy)
        else:
            from splatseg.query import Point

            point = Point(*surface_point(params, cams, 0, *xy).tolist())
    if click is not None:
        sel = select_clicks(fld, [click], granularity, threshold)
    else:
        sel = select_by_points(fld, SurfaceIndex.build(splats.means, splats.opacities), [point], granularity, threshold)
    heldout = set(fld.info.get("heldout_views", []))
    rows = []
    for i, name in enumerate(cams.names):
        pred = render_selection(params, sel.mask, cams, i)
        rows.append(ForegroundRow(name, name in heldout, iou(pred, masks[i]), accuracy(pred, masks[i]), boundary_iou(pred, masks[i])))
    return (click if click is not None else point), sel, rows


# ------------------------------------------------------------------------------------------------
# The quality protocol over generated scenes (scripts/eval_quality.py): several click rules per
# object, 2D IoU on held-out views, 3D IoU in three weightings, amodal IoU of the export.
# ------------------------------------------------------------------------------------------------

CLICK_RULES = ("deepest", "random", "views")
"""How a simulated user clicks an object: "deepest" the pixel deepest inside it in the training view
where it is largest; "random" random interior pixels (at least 3 px inside) of that view; "views" the
deepest pixel in two other training views (the second largest and the median one)."""

MIN_VISIBLE_PIXELS = 20
"""An object counts as visible in a view when it covers at least this many pixels."""


def gaussian_weights(splats) -> dict[str, np.ndarray]:
    """The three weightings of the 3D metrics, float64 [N] each: "count" (1), "opacity", and
    "area" (opacity x the product of the two largest scales: the footprint a splat paints)."""
    opacity = splats.opacities.astype(np.float64)
    return {"count": np.ones(len(splats)), "opacity": opacity, "area": opacity * splats.footprint_areas}


def weighted_scores(pred: np.ndarray, truth: np.ndarray, weight: np.ndarray) -> tuple[float, float, float]:
    """(IoU, precision, recall) of a selection `pred` [N] bool against `truth` [N] bool, each
    Gaussian counted with `weight` [N]; an empty prediction has precision 1, an empty truth recall 1."""
    inter = float(weight[pred & truth].sum())
    p, t = float(weight[pred].sum()), float(weight[truth].sum())
    union = p + t - inter
    return (inter / union if union > 0 else 1.0), (inter / p if p > 0 else 1.0), (inter / t if t > 0 else 1.0)


def render_alone(params: dict, mask: np.ndarray, cameras: Cameras, i: int) -> np.ndarray:
    """bool [H, W]: pixels of camera i where the Gaussians `mask` [N] alone (the rest of the scene
    removed) reach half opacity -- what an exported object looks like on its own."""
    idx = torch.from_numpy(np.flatnonzero(mask))
    H, W = int(cameras.heights[i]), int(cameras.widths[i])
    if idx.numel() == 0:
        return np.zeros((H, W), bool)
    sub = {k: v.index_select(0, idx.to(v.device)) for k, v in params.items() if k != "sh"}
    with torch.no_grad():
        out = render(sub["means"], sub["quats"], sub["scales"], sub["opacities"], sub["means"].new_zeros(idx.numel(), 1),
                     torch.from_numpy(cameras.viewmats[i : i + 1]).float(), torch.from_numpy(cameras.Ks[i : i + 1]).float(), W, H)
    return out.alphas[0, ..., 0].cpu().numpy() > 0.5


def render_selections(params: dict, masks: np.ndarray, cameras: Cameras, i: int) -> np.ndarray:
    """bool [S, H, W]: `render_selection` of S selections `masks` [S, N] in one pass of camera i."""
    sel = torch.from_numpy(np.ascontiguousarray(masks.T, np.float32)).to(params["means"].device)
    with torch.no_grad():
        out = render(params["means"], params["quats"], params["scales"], params["opacities"], sel,
                     torch.from_numpy(cameras.viewmats[i : i + 1]).float(), torch.from_numpy(cameras.Ks[i : i + 1]).float(),
                     int(cameras.widths[i]), int(cameras.heights[i]))
    value = out.colors[0].cpu().numpy()  # [H, W, S]
    alpha = out.alphas[0].cpu().numpy()  # [H, W, 1]
    return np.moveaxis((alpha > 0.5) & (value > 0.5 * alpha), -1, 0)


def object_clicks(gt_maps: dict[int, np.ndarray], train_views: list[int], names: list[str], oid: int, rule: str,
                  rng: np.random.Generator, num_random: int = 3) -> list[Click]:
    """The clicks of one rule (`CLICK_RULES`) on object `oid`; [] when no training view shows it."""
    areas = sorted(((int((gt_maps[i] == oid).sum()), i) for i in train_views), reverse=True)
    areas = [(a, i) for a, i in areas if a >= MIN_VISIBLE_PIXELS]
    if not areas:
        return []
    best = areas[0][1]
    if rule == "deepest":
        xy = choose_click(gt_maps[best], oid)
        return [Click(names[best], *xy)]
    if rule == "random":
        region = gt_maps[best] == oid
        inner = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1] >= 3
        rows, cols = np.nonzero(inner if inner.any() else region)
        pick = rng.choice(len(rows), size=min(num_random, len(rows)), replace=False)
        return [Click(names[best], cols[j] + 0.5, rows[j] + 0.5) for j in pick]
    if rule == "views":
        others = [areas[1][1]] if len(areas) > 1 else []
        if len(areas) > 2:
            others.append(areas[len(areas) // 2][1])
        return [Click(names[i], *choose_click(gt_maps[i], oid)) for i in dict.fromkeys(others)]
    raise ValueError(f"unknown click rule {rule!r} (expected one of {CLICK_RULES})")


@dataclass
class ClickScore:
    """Scores of one click on one object (3D weightings: count, opacity, area)."""

    object: str
    rule: str
    click: tuple[str, float, float]
    selected: int
    iou_2d: float  # mean over held-out views showing the object
    amodal_2d: float  # exported object rendered alone vs true object alone, held-out views
    iou_3d: dict[str, float]
    precision_3d: dict[str, float]
    recall_3d: dict[str, float]


def score_clicks(scene_dir: Path, fld, select, rules=CLICK_RULES, seed: int = 0, progress: bool = False,
                 split: tuple[list[str], list[str]] | None = None) -> list[ClickScore]:
    """The quality protocol on one generated scene and one trained field.

    `select(fld, click) -> Selection` makes the selection (so variants of the selection step can be
    scored on the same run); every clickable object is clicked by every rule. `split` (train view
    names, held-out view names of the scene) replaces the run's own split: a PLY-only run's views are
    made up, so it is clicked in, and scored on, the split of the photo-based run of the same scene."""
    from tqdm import tqdm

    gt = load_ground_truth(scene_dir)
    cams = load_scene(scene_dir).cameras
    splats = read_ply(Path(scene_dir) / "splats.ply")  # generated scenes: their own frame, no transform
    params = splats.torch_params()
    weights = gaussian_weights(splats)
    train_names, heldout_names = split if split is not None else (fld.info["train_views"], fld.info["heldout_views"])
    heldout = [cams.names.index(n) for n in heldout_names]
    train_views = [cams.names.index(n) for n in train_names]
    gt_maps = {i: gt.view_labels(cams.names[i])[0] for i in range(len(cams))}
    rng = np.random.default_rng(seed)
    jobs = []  # (oid, rule, click, mask)
    for oid in gt.clickable_ids:
        for rule in rules:
            for click in object_clicks(gt_maps, train_views, cams.names, oid, rule, rng):
                jobs.append((oid, rule, click, select(fld, click).mask))
    if not jobs:
        return []
    masks = np.stack([j[3] for j in jobs])
    modal = {i: render_selections(params, masks, cams, i) for i in tqdm(heldout, desc="held-out renders", disable=not progress, leave=False)}
    truth_alone = {(oid, i): render_alone(params, gt.object_id == oid, cams, i) for oid in {j[0] for j in jobs} for i in heldout}
    scores = []
    for s, (oid, rule, click, mask) in enumerate(tqdm(jobs, desc="score", disable=not progress, leave=False)):
        truth = gt.object_id == oid
        shown = [i for i in heldout if (gt_maps[i] == oid).sum() >= MIN_VISIBLE_PIXELS]
        iou2 = [iou(modal[i][s], gt_maps[i] == oid) for i in shown]
        amodal = [iou(render_alone(params, mask, cams, i), truth_alone[(oid, i)]) for i in shown]
        i3, p3, r3 = {}, {}, {}
        for name, w in weights.items():
            i3[name], p3[name], r3[name] = weighted_scores(mask, truth, w)
        scores.append(ClickScore(gt.object_names[oid], rule, (click.stem, float(click.x), float(click.y)), int(mask.sum()),
                                 float(np.mean(iou2)) if iou2 else float("nan"), float(np.mean(amodal)) if amodal else float("nan"),
                                 i3, p3, r3))
    return scores
