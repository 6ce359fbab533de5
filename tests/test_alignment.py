"""The splats-vs-photos check: moved splats are refused in one line before any long work, accepted
with --splats-transform (recorded in run.json, exports still in the file's frame); rotated copies
are caught; the generated scene and a reconstruction pass."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from splatseg.cli import main
from splatseg.data import load_scene
from splatseg.data.alignment import AlignmentError, check_alignment, require_alignment
from splatseg.data.frames import Similarity, transform_splats
from splatseg.io.ply import read_ply, read_vertex_table, write_ply
from splatseg.run import load_field


def similarity(deg_xyz, scale, translation) -> Similarity:
    m = np.eye(4)
    m[:3, :3] = scale * Rotation.from_euler("xyz", deg_xyz, degrees=True).as_matrix()
    m[:3, 3] = translation
    return Similarity.from_matrix(m)


# splats_from_world as nerfstudio's dataparser would make it: rotated, centred, shrunk to ~unit size
NORMALISE = similarity([10, -25, 40], 0.3, [0.2, -0.4, 0.1])


def run_cli(args, capsys):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_generated_scene_passes_and_rotated_or_moved_copies_are_caught(tiny_scene):
    cams = load_scene(tiny_scene).cameras
    splats = read_ply(tiny_scene / "splats.ply")
    good = check_alignment(splats, cams)
    assert good.ok and good.correlation > 0.8, good.summary()
    require_alignment(good, transform_given=False)
    centre = np.median(splats.means, axis=0)
    for rot in ([180, 0, 0], [0, 0, 180], [0, 90, 0]):
        r = Rotation.from_euler("xyz", rot, degrees=True).as_matrix()
        turned = transform_splats(splats, Similarity(r, centre - r @ centre, 1.0))  # about the scene centre
        report = check_alignment(turned, cams)
        assert not report.ok, (rot, report.summary())
    moved = check_alignment(transform_splats(splats, NORMALISE), cams)
    assert not moved.ok
    with pytest.raises(AlignmentError, match="--splats-transform dataparser_transforms.json") as e:
        require_alignment(moved, transform_given=False)
    assert "\n" not in str(e.value) and "--skip-alignment-check" in str(e.value)


def test_moved_splats_refused_before_segments_then_accepted_with_the_transform(tiny_scene, tiny_run, tmp_path, capsys):
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene, ignore=shutil.ignore_patterns("segments"))
    moved_ply = tmp_path / "export" / "splat.ply"
    moved_ply.parent.mkdir()
    write_ply(moved_ply, transform_splats(read_ply(tiny_scene / "splats.ply"), NORMALISE))

    code, _, err = run_cli(["train", "--data", scene, "--splats", moved_ply, "--out", tmp_path / "run",
                            "--iterations", 3, "--no-progress"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "splats and cameras disagree (photo correlation" in err and "--splats-transform" in err
    assert not (scene / "segments").exists() and not (tmp_path / "run").exists()  # refused before any work

    # nerfstudio's file maps world -> its frame (x_ns = s * T x); splatseg undoes it
    ns = NORMALISE.matrix
    (tmp_path / "dataparser_transforms.json").write_text(json.dumps({"transform": (ns[:3] / NORMALISE.scale).tolist(),
                                                                      "scale": NORMALISE.scale}))
    segments = load_field(tiny_run).scene_root / "segments"
    code, out, err = run_cli(["train", "--data", scene, "--splats", moved_ply, "--segments", segments,
                              "--splats-transform", tmp_path / "dataparser_transforms.json", "--out", tmp_path / "run",
                              "--iterations", 3, "--no-progress"], capsys)
    assert code == 0, err
    assert "alignment check: photo correlation" in out
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["splats"] == str(moved_ply.resolve()) and info["alignment"]["ok"] and info["alignment"]["correlation"] > 0.8
    np.testing.assert_allclose(info["splats_transform"]["world_from_splats"], NORMALISE.inverse().matrix, atol=1e-9)

    # exports copy rows of the user's file (its frame), bit for bit
    fld = load_field(tmp_path / "run")
    w, h = (int(v) for v in fld.image_sizes[0])
    code, out, err = run_cli(["segment", "--run", tmp_path / "run", "--click", fld.view_names[0], w / 2, h / 2,
                              "--threshold", 0.05, "--out", tmp_path / "obj.ply"], capsys)
    assert code == 0, err
    rows, source = read_vertex_table(tmp_path / "obj.ply"), read_vertex_table(moved_ply)
    assert rows.dtype == source.dtype and 0 < len(rows)
    assert {r.tobytes() for r in rows} <= {r.tobytes() for r in source}
    from splatseg.data.placement import splats_in_world

    world = splats_in_world(fld.splats_path, fld.info["splats_transform"])
    np.testing.assert_allclose(world.means, read_ply(tiny_scene / "splats.ply").means, atol=1e-5)


def test_skip_alignment_check_lets_misaligned_splats_through(tiny_scene, tiny_run, tmp_path):
    from splatseg.train import TrainConfig, train

    moved_ply = tmp_path / "moved.ply"
    write_ply(moved_ply, transform_splats(read_ply(tiny_scene / "splats.ply"), NORMALISE))
    run = train(TrainConfig(data=tiny_scene, splats=moved_ply, segments=load_field(tiny_run).scene_root / "segments",
                            out=tmp_path / "run", iterations=2, skip_alignment_check=True, progress=False))
    info = json.loads((run / "run.json").read_text())
    assert info["alignment"] is None and info["splats_transform"] is None


@pytest.mark.slow
def test_a_reconstruction_passes(tiny_scene, tmp_path):
    """A short CPU recon of the generated scene (rough: 150 steps, held-out PSNR ~13 dB; its photo
    correlation measured 0.66) is not a false alarm."""
    from splatseg.recon import ReconConfig, run_recon

    ply = run_recon(ReconConfig(data=tiny_scene, out=tmp_path / "recon", steps=150, device="cpu", sh_degree=1,
                                sh_degree_interval=100, init_num_points=1500, init_scale=0.3, refine_start=50,
                                refine_stop=120, refine_every=50, reset_every=0, max_gaussians=4000, ckpt_every=0,
                                eval_every=0, progress=False))
    report = check_alignment(read_ply(ply), load_scene(tiny_scene).cameras)
    assert report.ok and report.correlation > 0.6, report.summary()
