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
from splatseg.metrics import iou
from splatseg.query import Click, Selection, select_by_clicks
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
        sel = select_by_clicks(fld, [click], granularity, threshold)
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
        sel = select_by_clicks(fld, [click], granularity, threshold)
    else:
        sel = select_by_points(fld, SurfaceIndex.build(splats.means, splats.opacities), [point], granularity, threshold)
    heldout = set(fld.info.get("heldout_views", []))
    rows = []
    for i, name in enumerate(cams.names):
        pred = render_selection(params, sel.mask, cams, i)
        rows.append(ForegroundRow(name, name in heldout, iou(pred, masks[i]), accuracy(pred, masks[i]), boundary_iou(pred, masks[i])))
    return (click if click is not None else point), sel, rows
