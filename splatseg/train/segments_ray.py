"""Missing segments computed as Ray tasks (`splatseg train --ray [ADDRESS]`), one task per image.

The driver (the `train` process) loads each image at segment resolution and submits it; a task
renders the splats' depth and opacity for that view when the weights-free source needs them,
runs the mask source (and the CLIP encoder, with --clip-pretrained) through
`segments.compute.segment_image`, the very function the local path runs, and returns the
segments; the driver writes `<segments>/<stem>.npz` with `write_segments` (atomic), so the
cache holds the same arrays as the local path and the workers need no shared file system, only
splatseg (and the mask source's weights) installed. The splats are put into Ray's object store once.
At most 2 tasks per cluster CPU are in flight, so the driver holds a bounded number of images.

Ray is imported here only, and this module only when --ray is given (the `ray` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from splatseg.io.images import load_image
from splatseg.segments.cache import write_segments
from splatseg.types import Cameras, Segments

LOCAL = "local"
"""--ray value that starts a Ray instance on this machine (also what `--ray` alone means)."""

_WORKER_STATE: dict = {}
"""Per worker process: the mask source and CLIP encoder, built once (key: their settings)."""


def _worker_tools(source_spec: tuple, clip_spec: tuple | None):
    from splatseg.segments.compute import make_source

    key = (source_spec, clip_spec)
    if key not in _WORKER_STATE:
        mask_source, sam_model, sam_checkpoint, sam_input = source_spec
        source = make_source(mask_source, sam_model=sam_model, sam_checkpoint=sam_checkpoint, sam_input=sam_input)
        encoder = None
        if clip_spec is not None:
            from splatseg.semantics.clip import ClipEncoder

            encoder = ClipEncoder(*clip_spec)
        _WORKER_STATE.clear()
        _WORKER_STATE[key] = (source, encoder)
    return _WORKER_STATE[key]


def segment_task(rgb: np.ndarray, params: dict | None, cameras: Cameras, i: int, source_spec: tuple,
                 clip_spec: tuple | None) -> tuple[Segments, str | None]:
    """(one image's segments, the encoder's name or None) on a Ray worker: rgb uint8 [H, W, 3] at
    segment resolution, params the splats as numpy arrays (None: the source needs no geometry),
    cameras at segment resolution."""
    import torch

    from splatseg.segments.compute import segment_image
    from splatseg.train.segments_stage import render_geometry

    source, encoder = _worker_tools(source_spec, clip_spec)
    geometry = None
    if params is not None:
        geometry = render_geometry({k: torch.from_numpy(np.array(v)) for k, v in params.items()}, cameras, i)
    return segment_image(rgb, geometry, source, encoder), (None if encoder is None else encoder.name)


def connect(address: str) -> None:
    """ray.init unless Ray is already initialised (a caller's own instance is used as it is):
    'local' starts one on this machine (no dashboard), anything else is ray.init's address."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'splatseg[ray]' (or pip install ray)") from None
    if ray.is_initialized():
        return
    if address == LOCAL:
        import splatseg

        root = str(Path(splatseg.__file__).resolve().parents[1])  # so local workers import this splatseg
        ray.init(include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": root}})
    else:
        ray.init(address=address, include_dashboard=False)


def compute_segments_ray(address: str, names: list[str], image_paths: list, seg_cams: Cameras, missing: list[int],
                         params: dict, needs_geometry: bool, seg_dir: Path, source_spec: tuple, clip_spec: tuple | None,
                         progress: bool = True) -> list[Path]:
    """Writes `<seg_dir>/<name>.npz` for every view index in `missing`, computed as Ray tasks;
    returns the paths in completion order. params: the splats' torch parameters (CPU)."""
    connect(address)
    import ray

    task = ray.remote(num_cpus=1)(segment_task)
    params_ref = ray.put({k: v.detach().cpu().numpy() for k, v in params.items()}) if needs_geometry else None
    cams_ref = ray.put(seg_cams)
    limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    seg_dir.mkdir(parents=True, exist_ok=True)
    pending: dict = {}
    written: list[Path] = []
    todo = list(missing)
    with tqdm(total=len(todo), desc="segments (ray)", unit="img", disable=not progress) as bar:
        while todo or pending:
            while todo and len(pending) < limit:
                i = todo.pop(0)
                size = (int(seg_cams.widths[i]), int(seg_cams.heights[i]))
                rgb = load_image(image_paths[i], size=size)
                pending[task.remote(rgb, params_ref, cams_ref, i, source_spec, clip_spec)] = i
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                segments, embedding_model = ray.get(ref)
                written.append(write_segments(seg_dir / f"{names[i]}.npz", segments, embedding_model=embedding_model))
                bar.update(1)
    return written
