"""The run directory: everything `segment`, `export-all` and `view` need after `train`, as one unit.

Layout of RUN/:
    run.json     metadata: scene and splats paths, the splats file's SHA-256 and stat record, N, D, K,
                 view names, segment and CLIP producers, training config and figures, `run_id`; the split
                 (`heldout_views`, `split_source`), `splats_transform` (the --splats-transform record
                 with its world_from_splats 4x4, or null: re-apply it with
                 `splatseg.data.placement.splats_in_world`), `alignment` (the check's figures),
                 `undistortion` (the undistorted-image cache, or null)
    config.yml   the resolved configuration (a valid --config file)
    undistorted/ pinhole copies of distorted photos (splatseg.data.undistort), when there were any
    field.npz    features [N, D] float32 per Gaussian; queries [K, D], query_bias [K];
                 query_clip [K, E] (absent without CLIP embeddings);
                 lifted [K, N] uint8: per query, its masks from all training views lifted onto the
                 Gaussians through the blend weights (score = value / 255, in [0, 1]);
                 query_size [K] float32 (sum of lifted scores: the query's 3D extent);
                 visibility [N] float32 (sum of blend weights over training views);
                 containment [K, K] float32 (share of query j's selection query k's holds);
                 footprint [N] float32 (product of each Gaussian's two largest scales, for the
                 query's large-splat rule; absent in runs from before it: no rule); run_id
    views.npz    names [V] str, maps [V, h, w, D] float16 rendered feature maps of every scene view
                 (training and held-out) at the training resolution; image_sizes [V, 2] (W, H); run_id
    clipseg.npz  (with `train --clipseg`) CLIPSeg's image side of every training view and the blend
                 weights its relevancy is lifted through; run.json `clipseg` names the weights
                 (`splatseg.text_query` documents the keys); run_id
    ckpt.pt      training state for resuming (`splatseg.io.checkpoint`: tensors and plain containers)

What a run guarantees (checked by `load_field`, one `RunError` line otherwise):
- One unit: `write_run` writes the three files into a staging folder inside RUN and renames them
  into place only when all are written (run.json last), so a failed (re)train leaves the previous
  run as it was. All three carry the same `run_id`; a set whose ids differ (a crash between two
  renames, files copied in from another run) is refused as a mixed run.
- The splats it was trained on: run.json records the splats file's SHA-256 and its size, mtime,
  ctime and inode. Loading accepts the file at once when all of these still match (an edit, a
  replacement or a restored mtime changes ctime or the inode), otherwise hashes it again; a file
  of another size or hash (a reordered copy, another scene), or a stored hash that was altered, is
  refused naming the file.
- Inputs are never outputs: `refuse_writing_over` (used by segment, export-all and the viewer)
  refuses an output path that is, or a folder that holds, the splats file, a run file or one of
  the scene's images (resolved paths and `os.path.samefile`, so links are caught too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splatseg.io.atomic import atomic_write, same_file
from splatseg.io.npz import NpzError, open_npz

RUN_VERSION = 2
"""2: run ids in every file and the splats stat record (version 1 runs must be retrained)."""
RUN_FILES = ("run.json", "field.npz", "views.npz")
OPTIONAL_RUN_FILES = ("clipseg.npz",)
"""Files only some runs have; a retrain that does not write one removes the previous run's copy."""
CKPT_NAME = "ckpt.pt"
STAGING_PREFIX = ".staging-"
FIELD_KEYS = ("features", "queries", "query_bias", "lifted", "query_size", "visibility")
VIEW_KEYS = ("names", "maps", "image_sizes")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class RunError(ValueError):
    """A run directory that is missing, incomplete or inconsistent with its scene."""


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, writer) -> None:
    """Calls writer(binary file object) on a temporary file beside `path` (parents created),
    then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        writer(f)


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_npz(path: Path, **arrays) -> None:
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))


# ----------------------------------------------------------------------------- the splats record


def _stat_key(st: os.stat_result) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev}


def _stat_digest(sha: str, stat: dict) -> str:
    """Binds the stat record to the hash, so an altered hash never passes the fast path."""
    return hashlib.sha256(json.dumps({"sha256": sha, **stat}, sort_keys=True).encode()).hexdigest()[:32]


def splats_record(path: Path) -> dict:
    """run.json keys identifying the splats file: `splats` (resolved path), `splats_sha256`,
    `splats_stat` (size, mtime_ns, ctime_ns, inode, device) and `splats_stat_digest`."""
    path = Path(path).resolve()
    before = os.stat(path)
    sha = file_sha256(path)
    stat = _stat_key(os.stat(path))
    if stat != _stat_key(before):
        raise RunError(f"{path} changed while it was being read; try again once nothing writes to it")
    return {"splats": str(path), "splats_sha256": sha, "splats_stat": stat, "splats_stat_digest": _stat_digest(sha, stat)}


def verify_splats(info: dict, run_dir: Path) -> None:
    """Raises RunError unless info["splats"] is the very file the run was trained on (see the
    module docstring: stat fast path, SHA-256 otherwise)."""
    path = Path(info["splats"])
    fix = "restore the file the run was trained on, or retrain with `splatseg train`"
    if not path.is_file():
        raise RunError(f"{path}: the splats file {run_dir} was trained on is missing; {fix}")
    recorded_sha, stat = info.get("splats_sha256"), info.get("splats_stat")
    if not isinstance(recorded_sha, str) or not _SHA256.fullmatch(recorded_sha):
        raise RunError(f"{run_dir / 'run.json'}: 'splats_sha256' is not a SHA-256 hex digest (the file was altered); retrain the run")
    if not isinstance(stat, dict) or not isinstance(stat.get("size"), int):
        raise RunError(f"{run_dir / 'run.json'}: no valid 'splats_stat' record (the file was altered); retrain the run")
    now = _stat_key(path.stat())
    if now["size"] != stat["size"]:
        raise RunError(f"{path} is not the splats file {run_dir} was trained on ({now['size']} bytes, the run recorded "
                       f"{stat['size']}); {fix}")
    if now == stat and info.get("splats_stat_digest") == _stat_digest(recorded_sha, stat):
        return
    if file_sha256(path) != recorded_sha:
        raise RunError(f"{path} is not the splats file {run_dir} was trained on (its SHA-256 differs from the one in "
                       f"run.json: another file of the same size, a reordered copy, or an altered record); {fix}")


# ----------------------------------------------------------------------------- writing a run


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_staging(run_dir: Path) -> None:
    """Deletes staging folders a killed `write_run` left in `run_dir`."""
    for stale in Path(run_dir).glob(f"{STAGING_PREFIX}*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def write_run(run_dir: Path, info: dict, field_arrays: dict[str, np.ndarray], view_arrays: dict[str, np.ndarray],
              extra_files: dict[str, dict[str, np.ndarray]] | None = None) -> str:
    """Writes RUN/{field.npz, views.npz, run.json} as one unit (module docstring) and returns the
    new run id. `info` must hold the `splats_record` keys; `version` and `run_id` are added here.
    `extra_files` ({name in OPTIONAL_RUN_FILES: arrays}) are written in the same unit, with the run
    id; optional files of a previous run that this one does not write are removed.
    On any error nothing in `run_dir` changes (the staging folder is removed)."""
    extra_files = dict(extra_files or {})
    unknown = [name for name in extra_files if name not in OPTIONAL_RUN_FILES]
    if unknown:
        raise ValueError(f"write_run: unknown run file {unknown[0]!r} (known optional files: {', '.join(OPTIONAL_RUN_FILES)})")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(run_dir)
    run_id = uuid.uuid4().hex
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=run_dir))
    try:
        stamp = np.array(run_id)
        save_npz(stage / "field.npz", **field_arrays, run_id=stamp)
        save_npz(stage / "views.npz", **view_arrays, run_id=stamp)
        for name, arrays in extra_files.items():
            save_npz(stage / name, **arrays, run_id=stamp)
        write_json(stage / "run.json", {**info, "version": RUN_VERSION, "run_id": run_id})
        for name in (*extra_files, "views.npz", "field.npz", "run.json"):  # run.json last: it names the complete set
            os.replace(stage / name, run_dir / name)
        for name in OPTIONAL_RUN_FILES:  # a stale copy would carry another run id: never read, but misleading
            if name not in extra_files and (run_dir / name).is_file():
                (run_dir / name).unlink()
        _fsync_dir(run_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return run_id


# ----------------------------------------------------------------------------- reading a run


@dataclass
class Field:
    """A trained feature field, as loaded from a run directory (shapes in the module docstring)."""

    run_dir: Path
    info: dict
    features: np.ndarray
    queries: np.ndarray
    query_bias: np.ndarray
    query_clip: np.ndarray | None
    lifted: np.ndarray
    query_size: np.ndarray
    visibility: np.ndarray
    view_names: list[str]
    view_maps: np.ndarray
    image_sizes: np.ndarray
    run_id: str = ""
    containment: np.ndarray | None = None  # [K, K] C[j, k]: share of query j's selection query k's holds
    view_viewmats: np.ndarray | None = None  # [V, 4, 4] world -> camera of each view (OpenCV axes)
    view_Ks: np.ndarray | None = None  # [V, 3, 3] intrinsics at image_sizes
    footprint: np.ndarray | None = None  # [N] product of the two largest scales (splatseg.train.refine.footprint_areas)

    @property
    def num_gaussians(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_queries(self) -> int:
        return int(self.queries.shape[0])

    @property
    def splats_path(self) -> Path:
        return Path(self.info["splats"])

    @property
    def scene_root(self) -> Path:
        return Path(self.info["scene"])

    @property
    def clip_has_weights(self) -> bool:
        return bool(self.info.get("clip_has_weights")) and self.query_clip is not None


def _read_info(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise RunError(f"{path} is not a text file") from None
    if not isinstance(info, dict):
        raise RunError(f"{path} holds a JSON {type(info).__name__}, not the object `splatseg train` writes")
    if info.get("version") != RUN_VERSION:
        raise RunError(f"{run_dir} was written by an incompatible splatseg (run version {info.get('version')}, "
                       f"this one reads {RUN_VERSION}); retrain it with `splatseg train`")
    for key, kind in (("splats", str), ("scene", str), ("run_id", str), ("num_gaussians", int)):
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise RunError(f"{path} lacks {key!r} (or it is not a {kind.__name__}); retrain the run")
    return info


def _read_arrays(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with open_npz(path, "run file") as z:
            missing = [k for k in (*required, "run_id") if k not in z.files]
            if missing:
                raise RunError(f"{path} has no {missing[0]!r} array: not a complete splatseg run file; retrain the run")
            return {k: z[k] for k in z.files}
    except NpzError as e:
        raise RunError(str(e)) from None
    except RunError:
        raise
    except Exception as e:  # zipfile / truncation errors
        raise RunError(f"cannot read the arrays in {path}: {type(e).__name__}: {' '.join(str(e).split())[:160]}") from None


def _check_shapes(run_dir: Path, info: dict, a: dict, v: dict) -> None:
    def bad(file: str, what: str) -> RunError:
        return RunError(f"{run_dir / file} is inconsistent: {what}; retrain the run")

    features = a["features"]
    if features.ndim != 2 or features.shape[1] < 1:
        raise bad("field.npz", f"features must be [N, D], got {list(features.shape)}")
    n, d = features.shape
    queries = a["queries"]
    if queries.ndim != 2 or queries.shape[1] != d or queries.shape[0] < 1:
        raise bad("field.npz", f"queries must be [K, {d}], got {list(queries.shape)}")
    k = queries.shape[0]
    expected = {"query_bias": (k,), "lifted": (k, n), "query_size": (k,), "visibility": (n,)}
    for key, shape in expected.items():
        if a[key].shape != shape:
            raise bad("field.npz", f"{key} has shape {list(a[key].shape)}, expected {list(shape)}")
    if "query_clip" in a and (a["query_clip"].ndim != 2 or a["query_clip"].shape[0] != k):
        raise bad("field.npz", f"query_clip must be [{k}, E], got {list(a['query_clip'].shape)}")
    if "footprint" in a and a["footprint"].shape != (n,):
        raise bad("field.npz", f"footprint has shape {list(a['footprint'].shape)}, expected {[n]}")
    if info["num_gaussians"] != n:
        raise bad("run.json", f"num_gaussians is {info['num_gaussians']} but field.npz holds {n} Gaussians")
    names, maps, sizes = v["names"], v["maps"], v["image_sizes"]
    if names.ndim != 1 or len(names) < 1:
        raise bad("views.npz", f"names must be [V] with V >= 1, got {list(names.shape)}")
    if maps.ndim != 4 or maps.shape[0] != len(names) or maps.shape[3] != d:
        raise bad("views.npz", f"maps must be [{len(names)}, h, w, {d}] (one per name), got {list(maps.shape)}")
    if sizes.shape != (len(names), 2):
        raise bad("views.npz", f"image_sizes must be [{len(names)}, 2], got {list(sizes.shape)}")
    if "containment" in a and a["containment"].shape != (k, k):
        raise bad("field.npz", f"containment must be [{k}, {k}], got {list(a['containment'].shape)}")
    for key, shape in (("viewmats", (len(names), 4, 4)), ("Ks", (len(names), 3, 3))):
        if key in v and v[key].shape != shape:
            raise bad("views.npz", f"{key} must be {list(shape)}, got {list(v[key].shape)}")


def load_field(run_dir: Path, verify_splats_file: bool = True) -> Field:
    """Reads RUN/{run.json, field.npz, views.npz} and checks it is one complete run of the splats
    file it names (module docstring); one-line RunError otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist (train one with `splatseg train`)")
    for name in RUN_FILES:
        if not (run_dir / name).is_file():
            raise RunError(f"run directory {run_dir} has no {name}: training did not finish")
    info = _read_info(run_dir)
    arrays = _read_arrays(run_dir / "field.npz", FIELD_KEYS)
    views = _read_arrays(run_dir / "views.npz", VIEW_KEYS)
    ids = {"run.json": info["run_id"], "field.npz": str(arrays.pop("run_id")), "views.npz": str(views.pop("run_id"))}
    if len(set(ids.values())) != 1:
        raise RunError(f"{run_dir} is a mixed run: run.json, field.npz and views.npz come from different trainings "
                       f"(run ids {', '.join(f'{k} {v[:8]}' for k, v in ids.items())}); rerun `splatseg train` with this --out")
    _check_shapes(run_dir, info, arrays, views)
    if verify_splats_file:
        verify_splats(info, run_dir)
    return Field(
        run_dir=run_dir,
        info=info,
        features=arrays["features"],
        queries=arrays["queries"],
        query_bias=arrays["query_bias"],
        query_clip=arrays.get("query_clip"),
        lifted=arrays["lifted"],
        query_size=arrays["query_size"],
        visibility=arrays["visibility"],
        view_names=[str(n) for n in views["names"]],
        view_maps=views["maps"],
        image_sizes=views["image_sizes"],
        run_id=info["run_id"],
        containment=arrays.get("containment"),
        view_viewmats=views.get("viewmats"),
        view_Ks=views.get("Ks"),
        footprint=arrays.get("footprint"),
    )


# ----------------------------------------------------------------------------- inputs are never outputs


def run_inputs(fld: Field) -> list[tuple[Path, str]]:
    """(path, description) of every file the run reads: its splats file, its own files and, when
    the scene still loads, the scene's images."""
    inputs = [(fld.splats_path, "the run's splats file")]
    inputs += [(fld.run_dir / name, f"the run's {name}") for name in (*RUN_FILES, *OPTIONAL_RUN_FILES, CKPT_NAME)]
    try:
        from splatseg.data import load_scene

        inputs += [(Path(p), "one of the scene's images") for p in load_scene(fld.scene_root).cameras.image_paths]
        inputs.append((fld.scene_root / "transforms.json", "the scene's transforms.json"))
    except (ValueError, OSError):  # a moved or broken scene: nothing of it can be overwritten either
        pass
    return inputs


def _within(path: Path, folder: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def refuse_writing_over(out: Path, inputs: list[tuple[Path, str]], flag: str = "--out", folder: bool = False) -> None:
    """RunError if the output `out` is one of `inputs` (resolved path or same inode), or, with
    `folder` (an output folder that will be replaced), if it holds one of them."""
    out = Path(out)
    for path, what in inputs:
        if same_file(out, path) or (folder and _within(path, out)):
            relation = "holds" if folder and not same_file(out, path) else "is"
            raise RunError(f"{flag} {out} {relation} {what} ({path}): refusing to write over the run's inputs; choose another path")


def refuse_training_over_inputs(out: Path, splats_path: Path, image_paths, segment_files) -> None:
    """RunError if a file `train` writes into `out` (run files, ckpt.pt) is one of its inputs."""
    inputs = [(Path(splats_path), "the splats file"), *((Path(p), "one of the scene's images") for p in image_paths),
              *((Path(p), "a segments file") for p in segment_files)]
    for name in (*RUN_FILES, *OPTIONAL_RUN_FILES, CKPT_NAME):
        refuse_writing_over(Path(out) / name, inputs)


# ----------------------------------------------------------------------------- training into a run directory

RESULT_NEUTRAL_CONFIG = ("data", "out", "splats", "segments", "progress", "device", "feature_renderer", "overwrite",
                         "sam_checkpoint", "checkpoint_every", "preset", "config", "undistorted_dir", "skip_alignment_check",
                         "ray")
"""TrainConfig fields that do not change what a run is (paths, display, where it runs, and the names
of the preset and config file the settings came from: the settings themselves are compared)."""


def _first_difference(saved: dict, current: dict, keys) -> str | None:
    for key in keys:
        if saved.get(key) != current.get(key):
            return key
    return None


def claim_run_dir(out: Path, identity: dict, config: dict, overwrite: bool = False) -> dict | None:
    """Decides whether `train` may write into `out`; returns the checkpoint state to resume from
    (None: start from scratch).

    - `out/ckpt.pt` made for the same `identity` (splats hash, N, D, K, views) is resumed; one
      made for another identity is refused. It is read with weights_only (`io/checkpoint.py`):
      a file that needs more is refused.
    - Without a checkpoint, a finished run in `out` (run.json) is replaced only when it was made
      from the same identity and configuration (the same command again; the result is the same);
      another run's files are refused, as are run files without run.json.
    - `overwrite` skips all of this: the checkpoint is ignored and the run in `out` replaced once
      the new one is complete.
    """
    from splatseg.io.checkpoint import load_state

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a directory")
    if overwrite or not out.exists():
        return None
    hint = "pass --overwrite to replace it, or choose another --out"
    ckpt_path = out / CKPT_NAME
    if ckpt_path.exists():
        state = load_state(ckpt_path, what="training checkpoint", remedy=f"delete it or {hint}")
        saved = state.get("identity")
        if not isinstance(saved, dict) or not all(k in state for k in ("model", "optim", "sched", "step")):
            raise RunError(f"{ckpt_path} is not a splatseg training checkpoint; {hint}")
        key = _first_difference(saved, identity, identity)
        if key is not None:
            raise RunError(f"{out} holds a run with a different {key} (its {CKPT_NAME}); {hint}")
        return state
    if (out / "run.json").exists():
        try:
            info = json.loads((out / "run.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            info = None
        if not isinstance(info, dict):
            raise RunError(f"{out} holds an unreadable run.json; {hint}")
        key = _first_difference(info, identity, identity)
        if key is None:
            saved_cfg, new_cfg = info.get("config") or {}, config
            key = _first_difference(saved_cfg, new_cfg, sorted(k for k in {*saved_cfg, *new_cfg} if k not in RESULT_NEUTRAL_CONFIG))
            key = None if key is None else f"configuration ({key})"
        if key is not None:
            raise RunError(f"{out} holds a finished run of other splats or settings (different {key}) and no {CKPT_NAME} "
                           f"to resume; {hint}")
        return None
    stray = [name for name in RUN_FILES if (out / name).exists()]
    if stray:
        raise RunError(f"{out} holds {stray[0]} without run.json (files of another run?); {hint}")
    return None
