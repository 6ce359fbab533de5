"""`splatseg mesh`: click prompts -> selection -> vertex-coloured triangle mesh (.glb / .obj / .ply).

The selection is rendered alone from the run's training views (the cameras named in run.json's
`train_views`, taken from its scene) and fused by `splatseg.mesh.mesh_selection`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from splatseg.data import load_scene
from splatseg.data.placement import run_splats
from splatseg.mesh import MeshOptions, MeshResult, mesh_file_type, mesh_selection, write_mesh
from splatseg.prompts import Prompts, select
from splatseg.query import QueryError
from splatseg.run import Field, RunError, load_field, refuse_writing_over, run_inputs
from splatseg.types import Cameras, Splats


@dataclass
class MeshConfig:
    """Mesh a selected object: render its depth and colour alone from the training views, fuse them
    into a truncated signed distance volume, and write the surface with vertex colours."""

    run: Path
    """Run directory written by `splatseg train`."""
    out: Path
    """Mesh file to write: .glb (binary glTF), .obj or .ply; the splats' world frame and units."""
    prompt: Annotated[Prompts, tyro.conf.OmitArgPrefixes] = field(default_factory=Prompts)
    """The object to mesh."""
    fusion: Annotated[MeshOptions, tyro.conf.OmitArgPrefixes] = field(default_factory=MeshOptions)
    """How depth and colour are fused."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to render and fuse: 'auto' takes CUDA when available."""
    progress: bool = True
    """Show a progress bar over the views."""


def run_cameras(fld: Field) -> Cameras:
    """The cameras of the run's training views (run.json `train_views`, all views when it names none),
    at the scene's image sizes."""
    cameras = load_scene(fld.scene_root).cameras
    names = fld.info.get("train_views") or cameras.names
    missing = [n for n in names if n not in cameras.names]
    if missing:
        raise RunError(f"the scene {fld.scene_root} lacks the run's training view {missing[0]!r}: it changed since training")
    return cameras.subset([cameras.names.index(n) for n in names])


def mesh_summary(result: MeshResult, selected: int, total: int, out: Path, seconds: float) -> dict:
    """The JSON line printed last by `splatseg mesh` (FORMATS.md: at least vertices, faces, seconds)."""
    return {
        "vertices": int(len(result.mesh.vertices)),
        "faces": int(len(result.mesh.faces)),
        "seconds": round(seconds, 3),
        "voxel_size": float(f"{result.voxel_size:.6g}"),
        "grid": list(result.grid.shape),
        "truncation": float(f"{result.truncation:.6g}"),
        "views": result.views,
        "pieces_dropped": result.pieces_dropped,
        "selected": selected,
        "total": total,
        "out": str(out),
    }


def mesh_mask(fld: Field, splats: Splats, mask: np.ndarray, out: Path, options: MeshOptions | None = None,
              device: str = "cpu", progress: bool = False) -> dict:
    """Meshes the Gaussians `mask` [N] bool of a run and writes `out` atomically; returns the summary."""
    t0 = time.time()
    mesh_file_type(out)  # an unknown suffix fails before any work
    result = mesh_selection(splats, mask, run_cameras(fld), options, device=device, progress=progress)
    write_mesh(result.mesh, out)
    return mesh_summary(result, int(np.count_nonzero(mask)), fld.num_gaussians, out, time.time() - t0)


def run_mesh(cfg: MeshConfig) -> dict:
    """Selects, meshes, writes `cfg.out`, and returns the JSON summary printed last."""
    from splatseg.devices import resolve_device

    t0 = time.time()
    mesh_file_type(cfg.out)
    cfg.prompt.check()
    cfg.fusion.validate()
    device = str(resolve_device(cfg.device))
    fld = load_field(cfg.run)
    refuse_writing_over(cfg.out, run_inputs(fld))
    splats = run_splats(fld)  # read once: the clicks' 3D scores and the mesh both use it
    sel = select(fld, cfg.prompt, splats=splats)
    if not sel.mask.any():
        raise QueryError("the selection is empty (try a lower --threshold or another click)")
    summary = mesh_mask(fld, splats, sel.mask, cfg.out, cfg.fusion, device, cfg.progress)
    summary["queries"] = sel.queries
    summary["seconds"] = round(time.time() - t0, 3)
    return summary
