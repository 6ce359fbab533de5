"""Trainers' output folders as `--splats`: INRIA, gsplat, nerfstudio; their configs read as data only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from splatseg.data.sources import (
    SourceError,
    gsplat_normalisation,
    nerfstudio_world_from_splats,
    read_cfg_args,
    read_inria_cameras,
    read_yaml,
    resolve_splats,
)
from splatseg.io.ply import write_ply
from splatseg.types import Splats


def small_splats(n: int = 40, seed: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    return Splats(means=rng.normal(size=(n, 3)).astype(np.float32), quats=rng.normal(size=(n, 4)).astype(np.float32),
                  log_scales=np.full((n, 3), -3, np.float32), opacity_logits=np.zeros(n, np.float32),
                  sh0=np.zeros((n, 1, 3), np.float32), shN=np.zeros((n, 0, 3), np.float32))


def homogeneous(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    return points @ m[:3, :3].T + m[:3, 3]


# --------------------------------------------------------------------------------------------
# INRIA
# --------------------------------------------------------------------------------------------


def make_inria(root: Path, source_path: str, iterations=(999, 7000, 30000)) -> Path:
    for it in iterations:
        (root / "point_cloud" / f"iteration_{it}").mkdir(parents=True)
        write_ply(root / "point_cloud" / f"iteration_{it}" / "point_cloud.ply", small_splats(seed=it))
    (root / "cfg_args").write_text(f"Namespace(data_device='cuda', eval=False, images='images', model_path='{root}', "
                                   f"resolution=-1, sh_degree=3, source_path={source_path!r}, white_background=False)")
    cams = [{"id": i, "img_name": f"view_{i:03d}", "width": 96, "height": 72, "position": [float(i), 0.0, 3.0],
             "rotation": np.eye(3).tolist(), "fy": 80.0, "fx": 81.0} for i in range(3)]
    (root / "cameras.json").write_text(json.dumps(cams))
    return root


def test_inria_folder_takes_the_newest_iteration_and_its_scene(tmp_path, tiny_scene):
    folder = make_inria(tmp_path / "output" / "abc", str(tiny_scene))
    src = resolve_splats(folder)
    assert src.kind == "inria" and src.format == "ply"
    assert src.splats_file == folder / "point_cloud" / "iteration_30000" / "point_cloud.ply"  # by number, not by name
    assert src.scene == tiny_scene and src.scene_exists and src.world_from_splats is None
    assert src.cameras_file == folder / "cameras.json"
    assert any("iteration_30000" in n for n in src.notes) and any("3 cameras" in n for n in src.notes)


def test_inria_scene_not_on_this_machine_is_said(tmp_path):
    src = resolve_splats(make_inria(tmp_path / "out", "/nowhere/scene", iterations=(7000,)))
    assert src.scene == Path("/nowhere/scene") and not src.scene_exists
    assert any("not a scene directory on this machine" in n for n in src.notes)


def test_inria_cameras_json_reads_camera_to_world(tmp_path):
    folder = make_inria(tmp_path / "out", "/x", iterations=(1,))
    cams = read_inria_cameras(folder / "cameras.json")
    assert cams.names == ["view_000", "view_001", "view_002"]
    np.testing.assert_allclose(cams.centers[2], [2.0, 0.0, 3.0])
    assert cams.Ks[0, 0, 0] == 81.0 and cams.Ks[0, 1, 1] == 80.0 and cams.Ks[0, 0, 2] == 48.0


def test_malicious_cfg_args_is_read_as_data_never_run(tmp_path):
    marker = tmp_path / "MARKER"
    folder = make_inria(tmp_path / "out", "/x", iterations=(1,))
    (folder / "cfg_args").write_text(f"Namespace(sh_degree=3, source_path=__import__('os').system('touch {marker}'), "
                                     f"model_path=open('{marker}', 'w').name)")
    values, skipped = read_cfg_args(folder / "cfg_args")
    assert values == {"sh_degree": 3} and skipped == ["source_path", "model_path"]
    src = resolve_splats(folder)
    assert src.scene is None and any("not plain literals were ignored: source_path" in n for n in src.notes)
    (folder / "cfg_args").write_text(f"__import__('os').system('touch {marker}')")
    with pytest.raises(SourceError, match="not a Namespace"):
        resolve_splats(folder)
    (folder / "cfg_args").write_text(f"Namespace(**__import__('os').system('touch {marker}'))")
    assert read_cfg_args(folder / "cfg_args") == ({}, ["**"])
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# gsplat
# --------------------------------------------------------------------------------------------

GSPLAT_CFG = """\
data_dir: {data_dir}
data_factor: 4
result_dir: {result_dir}
normalize_world_space: {normalize}
test_every: 8
ply_steps: !!python/tuple [7000, 30000]
strategy: !!python/object:gsplat.strategy.default.DefaultStrategy
  prune_opa: 0.005
  refine_every: 100
camera_model: pinhole
"""


def make_gsplat(root: Path, data_dir, result_dir, normalize: bool, splats: Splats | None = None) -> Path:
    (root / "ply").mkdir(parents=True)
    for step in (6999, 29999):
        write_ply(root / "ply" / f"point_cloud_{step}.ply", splats if splats is not None and step == 29999 else small_splats(seed=step))
    (root / "cfg.yml").write_text(GSPLAT_CFG.format(data_dir=data_dir, result_dir=result_dir, normalize=str(normalize).lower()))
    return root


def test_gsplat_dir_without_normalisation(tmp_path, tiny_scene, monkeypatch):
    # data_dir relative to the directory gsplat ran in, found by stripping result_dir off the folder
    work = tmp_path / "work"
    shutil.copytree(tiny_scene, work / "data" / "tiny")
    folder = make_gsplat(work / "results" / "tiny", "data/tiny", "results/tiny", normalize=False)
    monkeypatch.chdir(tmp_path)
    src = resolve_splats(folder)
    assert src.kind == "gsplat" and src.splats_file.name == "point_cloud_29999.ply"
    assert src.scene == (work / "data" / "tiny").resolve() and src.scene_exists and src.world_from_splats is None


def test_gsplat_normalised_frame_is_recomputed_from_the_colmap_model(tmp_path):
    from test_data import build_reconstruction

    from splatseg.data import load_scene

    scene = tmp_path / "colmap_scene"
    rec, _, _ = build_reconstruction(scene)
    (scene / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(scene / "sparse" / "0"))
    loaded = load_scene(scene)
    world = small_splats(seed=5)
    T = gsplat_normalisation(loaded.cameras.camtoworlds, loaded.points)
    normalised = Splats(**{**world.__dict__, "means": homogeneous(world.means, T).astype(np.float32)})
    folder = make_gsplat(tmp_path / "results" / "run", str(scene), "results/run", normalize=True, splats=normalised)
    src = resolve_splats(folder)
    assert src.scene_exists and src.world_from_splats is not None
    np.testing.assert_allclose(homogeneous(normalised.means.astype(np.float64), src.world_from_splats), world.means, atol=1e-4)
    assert any("normalised frame" in n and "recomputed" in n for n in src.notes)
    # Without the scene the frame cannot be known: said, not guessed.
    shutil.rmtree(scene)
    src = resolve_splats(folder)
    assert src.world_from_splats is None and any("not found here" in n for n in src.notes)


# Values computed with gsplat's own examples/datasets/normalize.py (commit 90d7b4b) on `golden_inputs`.
GOLDEN = [
    [[-0.29980897308578, 0.004872570580283155, -0.0024894218434539845, 0.0832681978473689],
     [0.005134096854232592, 0.2976881900436137, -0.03564746927866238, 0.306725201947249],
     [0.0018921455192097778, -0.03568415716283591, -0.29772205195590845, 0.020955885254318032], [0.0, 0.0, 0.0, 1.0]],
    # points with a long tail downwards: gsplat's up-side-down fix flips the frame
    [[-0.29940770780732784, -0.012060491600349017, 0.011177144351047039, 0.11596440572709818],
     [0.012302080614941749, -0.29953957772689527, 0.0063292729172573425, -0.32158676009267007],
     [0.010910674865914868, 0.006778305501787558, 0.299583663200147, -0.10963878182795886], [0.0, 0.0, 0.0, 1.0]],
]


def golden_inputs(flip_case: bool):
    rng = np.random.default_rng(7)
    c2w = []
    for i in range(12):
        a = 2 * np.pi * i / 12
        centre = np.array([3 * np.cos(a) + 0.5, 3 * np.sin(a) - 1.0, 1.5 + 0.2 * np.sin(3 * a)])
        target = np.array([0.5, -1.0, 0.2]) + rng.normal(0, 0.05, 3)
        z = target - centre
        z /= np.linalg.norm(z)
        x = np.cross(z, [0.1, 0.2, 1.0])
        x /= np.linalg.norm(x)
        m = np.eye(4)
        m[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
        m[:3, 3] = centre
        c2w.append(m)
    points = rng.normal(0, [1.0, 0.6, 0.3], (200, 3)) + [0.5, -1.0, 0.2]
    if flip_case:
        rng = np.random.default_rng(102)
        points = rng.normal(0, [1.0, 0.6, 0.3], (200, 3)) + [0.5, -1.0, 0.2]
        points[:, 2] = 0.2 - np.abs(rng.normal(0, 0.3, 200)) ** 2 * 3 * rng.choice([1, -1])
    return np.stack(c2w), points.astype(np.float32)


@pytest.mark.parametrize("case", [0, 1])
def test_gsplat_normalisation_matches_gsplats_code(case):
    np.testing.assert_allclose(gsplat_normalisation(*golden_inputs(case == 1)), np.array(GOLDEN[case]), atol=1e-10)


# --------------------------------------------------------------------------------------------
# nerfstudio
# --------------------------------------------------------------------------------------------

NS_CONFIG = """\
!!python/object:nerfstudio.engine.trainer.TrainerConfig
_target: !!python/name:nerfstudio.engine.trainer.Trainer ''
data: {data}
experiment_name: poster
method_name: splatfacto
output_dir: !!python/object/apply:pathlib.PosixPath
- outputs
timestamp: 2024-05-01_120000
pipeline: !!python/object:nerfstudio.pipelines.base_pipeline.VanillaPipelineConfig
  datamanager: !!python/object:nerfstudio.data.datamanagers.full_images_datamanager.FullImageDatamanagerConfig
    data: null
    dataparser: !!python/object:nerfstudio.data.dataparsers.nerfstudio_dataparser.NerfstudioDataParserConfig
      data: !!python/object/apply:pathlib.PosixPath
      - data
      - poster
      scale_factor: 1.0
      orientation_method: up
"""

COLMAP_APPLIED = [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0]]


def random_similarity(seed: int) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = q, rng.normal(size=3)
    return m, float(rng.uniform(0.2, 0.8))


@pytest.mark.parametrize("applied", [True, False])
def test_nerfstudio_output_and_its_frame(tmp_path, tiny_scene, monkeypatch, applied):
    work = tmp_path / "work"
    scene = work / "data" / "poster"
    shutil.copytree(tiny_scene, scene)
    meta = json.loads((scene / "transforms.json").read_text())
    if applied:
        meta["applied_transform"] = COLMAP_APPLIED
        (scene / "transforms.json").write_text(json.dumps(meta))
    folder = work / "outputs" / "poster" / "splatfacto" / "2024-05-01_120000"
    folder.mkdir(parents=True)
    (folder / "config.yml").write_text(NS_CONFIG.format(data="null"))
    # nerfstudio: poses_ns = s * T_m @ poses_saved, saved transform = T_m @ A (A: applied_transform)
    T_m, s = random_similarity(3)
    A = np.vstack([COLMAP_APPLIED, [0, 0, 0, 1]]) if applied else np.eye(4)
    (folder / "dataparser_transforms.json").write_text(json.dumps({"transform": (T_m @ A)[:3].tolist(), "scale": s}))
    world = small_splats(seed=9)
    ns = Splats(**{**world.__dict__, "means": (s * homogeneous(world.means.astype(np.float64), T_m)).astype(np.float32)})
    write_ply(folder / "splat.ply", ns)
    monkeypatch.chdir(tmp_path)  # the data path is relative to `work`, where ns-train ran
    src = resolve_splats(folder)
    assert src.kind == "nerfstudio" and src.splats_file == folder / "splat.ply"
    assert src.scene == scene.resolve() and src.scene_exists
    assert src.transform_file == folder / "dataparser_transforms.json"
    np.testing.assert_allclose(homogeneous(ns.means.astype(np.float64), src.world_from_splats), world.means, atol=1e-5)
    assert any("x_ns = scale * (T @ [x; 1])" in n for n in src.notes)


def test_nerfstudio_without_an_exported_file_says_how_to_export(tmp_path):
    folder = tmp_path / "ns"
    folder.mkdir()
    (folder / "config.yml").write_text(NS_CONFIG.format(data="null"))
    with pytest.raises(SourceError, match="ns-export gaussian-splat --load-config"):
        resolve_splats(folder)


def test_nerfstudio_formula_matches_nerfstudios_inverse():
    """nerfstudio's transform_poses_to_original_space: divide translation by scale, then inv(T)."""
    T, s = random_similarity(1)
    x = np.random.default_rng(2).normal(size=(5, 3))
    x_ns = s * homogeneous(x, T)
    M = nerfstudio_world_from_splats(T[:3], s)
    np.testing.assert_allclose(homogeneous(x_ns, M), x, atol=1e-12)
    Tinv = np.linalg.inv(T)
    np.testing.assert_allclose(homogeneous(x_ns / s, Tinv), x, atol=1e-12)


def test_yaml_with_python_tags_is_data_and_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    bad = tmp_path / "cfg.yml"
    bad.write_text(f"""\
data_dir: !!python/object/apply:os.system ["touch {marker}"]
other: !!python/object/new:subprocess.Popen {{args: [["touch", "{marker}"]]}}
name: !!python/name:os.system
custom: !mytag {{a: 1}}
result_dir: results/x
""")
    data = read_yaml(bad)
    assert data["data_dir"] == [f"touch {marker}"] and data["name"] == "" and data["custom"] == {"a": 1}
    assert data["other"] == {"args": [["touch", str(marker)]]}
    assert not marker.exists()
    bad.write_text("a: [unclosed\n")
    with pytest.raises(SourceError, match="malformed YAML at line"):
        read_yaml(bad)


def test_unknown_folder_and_missing_path(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(SourceError, match="not an INRIA, gsplat or nerfstudio output"):
        resolve_splats(tmp_path / "x")
    with pytest.raises(SourceError, match="no such file or folder"):
        resolve_splats(tmp_path / "nope")
    (tmp_path / "inria" / "point_cloud").mkdir(parents=True)
    with pytest.raises(SourceError, match="without point_cloud/iteration"):
        resolve_splats(tmp_path / "inria")


def test_a_plain_file_resolves_to_itself(tmp_path):
    write_ply(tmp_path / "s.ply", small_splats())
    src = resolve_splats(tmp_path / "s.ply")
    assert src.kind == "file" and src.splats_file == tmp_path / "s.ply" and src.scene is None
    (tmp_path / "s.ply").rename(tmp_path / "splats.ply")  # a folder holding splats.ply (e.g. a scene)
    src = resolve_splats(tmp_path)
    assert src.kind == "folder" and src.splats_file == tmp_path / "splats.ply" and not src.scene_exists
