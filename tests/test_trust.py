"""Issue 11, case by case: runs that cannot be mixed up, files that cannot run code, a viewer only its
user can drive, all-or-nothing writes, one error path. Each numbered test drives the command line
(in-process) and asserts the exit status, the one-line message and what is left on disk."""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import pickle
import resource
import shutil
import subprocess
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from splatseg.cli import main
from splatseg.data.synthetic import SyntheticConfig, generate
from splatseg.io.ply import read_vertex_table, write_vertex_table
from splatseg.run import RunError, load_field, save_npz, splats_record, write_json
from splatseg.train import TrainConfig, train

MICRO = SyntheticConfig(seed=1, num_cameras=6, width=48, height=36, gaussians_per_object=120, table_gaussians=300)
MICRO_TRAIN = ["--iterations", "150", "--num-queries", "32", "--train-max-side", "48", "--checkpoint-every", "50", "--no-progress"]


def micro_config(scene: Path, out: Path, **kw) -> TrainConfig:
    args = dict(iterations=150, num_queries=32, train_max_side=48, checkpoint_every=50, progress=False)
    return TrainConfig(data=scene, out=out, **{**args, **kw})


@pytest.fixture(scope="module")
def micro_scene(tmp_path_factory) -> Path:
    """6 views of 48x36, ~900 Gaussians; its segments are computed once by `micro_run`."""
    return generate(tmp_path_factory.mktemp("trust") / "scene", MICRO, progress=False)


@pytest.fixture(scope="module")
def micro_run(micro_scene, tmp_path_factory) -> Path:
    return train(micro_config(micro_scene, tmp_path_factory.mktemp("trust_run") / "run"))


def run_cli(args, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # --help
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, *fragments: str, prefix: str = "splatseg: error: ") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def click(run: Path) -> list[str]:
    """A click in the middle of view 0: on an object of the micro scene."""
    fld = load_field(run)
    w, h = (int(v) for v in fld.image_sizes[0])
    return ["--click", fld.view_names[0], str(w / 2), str(h / 2)]


def listing(folder: Path) -> dict[str, str]:
    """name -> SHA-256 of every file under `folder` (what is left on disk)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def copy_run(run: Path, dest: Path, **info_changes) -> Path:
    shutil.copytree(run, dest)
    if info_changes:
        info = json.loads((dest / "run.json").read_text())
        info.update(info_changes)
        write_json(dest / "run.json", info)
    return dest


# ------------------------------------------------------------------------------------------ case 1


@pytest.mark.parametrize("change", ["reordered", "same_size_other_values", "altered_hash", "edited_in_place_mtime_kept", "missing"])
def test_case01_a_run_is_used_only_with_its_own_splats(micro_run, tmp_path, capsys, change):
    """A reordered copy, another file of the same size, an altered stored hash, an in-place edit
    with the mtime put back, a missing file: segment refuses in one line and writes nothing."""
    fld = load_field(micro_run)
    table = read_vertex_table(fld.splats_path)
    own = tmp_path / "own.ply"
    shutil.copy2(fld.splats_path, own)
    run = copy_run(micro_run, tmp_path / "run", **splats_record(own))
    out = tmp_path / "obj.ply"
    prompt = click(run)
    code, _, err = run_cli(["segment", "--run", run, *prompt, "--out", out], capsys)
    assert code == 0, err  # the run with its own splats copy works
    out.unlink()
    expected = "is not the splats file"
    if change == "reordered":
        other = tmp_path / "reordered.ply"
        write_vertex_table(other, table[np.random.default_rng(0).permutation(len(table))])
        copy_run(run, tmp_path / "run2", splats=str(other))
        run = tmp_path / "run2"
    elif change == "same_size_other_values":
        other = tmp_path / "other.ply"
        changed = table.copy()
        changed["x"][:10] += 1.0
        write_vertex_table(other, changed)
        assert other.stat().st_size == own.stat().st_size
        copy_run(run, tmp_path / "run2", splats=str(other))
        run = tmp_path / "run2"
    elif change == "altered_hash":
        info = json.loads((run / "run.json").read_text())
        info["splats_sha256"] = hashlib.sha256(b"something else").hexdigest()
        write_json(run / "run.json", info)
    elif change == "edited_in_place_mtime_kept":
        before = own.stat()
        changed = table.copy()
        changed["x"][:10] += 1.0
        with open(own, "r+b") as f:  # same inode, same size, mtime restored: only ctime tells
            f.seek(own.stat().st_size - changed.nbytes)
            f.write(changed.astype(changed.dtype.newbyteorder("<")).tobytes())
        os.utime(own, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert own.stat().st_mtime_ns == before.st_mtime_ns and own.stat().st_ino == before.st_ino
    else:
        own.unlink()
        expected = "is missing"
    code, _, err = run_cli(["segment", "--run", run, *prompt, "--out", out], capsys)
    assert code == 2
    one_line(err, expected)
    assert not out.exists() and not list(tmp_path.glob(".obj.ply.*"))


def test_case01_no_command_writes_over_the_runs_inputs(micro_run, micro_scene, tmp_path, capsys):
    """segment --out / export-all --out naming the splats file, a hard link to it, a run file, a
    scene image, or a folder holding them: refused, and the inputs are unchanged."""
    fld = load_field(micro_run)
    before = listing(micro_run), listing(micro_scene)
    link = tmp_path / "link.ply"
    os.link(fld.splats_path, link)
    image = next((micro_scene / "images").iterdir())
    for target, what in [(fld.splats_path, "splats file"), (link, "splats file"), (micro_run / "field.npz", "field.npz"),
                         (image, "scene's images")]:
        code, _, err = run_cli(["segment", "--run", micro_run, *click(micro_run), "--out", target], capsys)
        assert code == 2, err
        one_line(err, "refusing to write over the run's inputs", what)
    for folder in (micro_scene, micro_run, fld.splats_path.parent):
        code, _, err = run_cli(["export-all", "--run", micro_run, "--out", folder, "--min-gaussians", 5], capsys)
        assert code == 2, err
        one_line(err, "refusing to write over the run's inputs")
    assert (listing(micro_run), listing(micro_scene)) == before

    # train's own outputs: a segments folder as --out where a view's segments file is field.npz
    scene = tmp_path / "scene"
    shutil.copytree(micro_scene, scene)
    (scene / "images" / "view_000.png").rename(scene / "images" / "field.png")
    (scene / "segments" / "view_000.npz").rename(scene / "segments" / "field.npz")
    meta = (scene / "transforms.json").read_text().replace("images/view_000.png", "images/field.png")
    (scene / "transforms.json").write_text(meta)
    kept = listing(scene)
    code, _, err = run_cli(["train", "--data", scene, "--segments", scene / "segments", "--out", scene / "segments", *MICRO_TRAIN],
                           capsys)
    assert code == 2
    one_line(err, "field.npz is a segments file", "refusing to write over")
    assert listing(scene) == kept

    # the viewer's export names a file in RUN/exports/: refused when that is the splats file
    from types import SimpleNamespace

    from splatseg.viewer import ViewerConfig
    from splatseg.viewer.app import ViewerApp

    run = copy_run(micro_run, tmp_path / "run")
    exported = run / "exports" / "sel.ply"  # a run trained on a file in its own exports folder
    exported.parent.mkdir()
    shutil.copy2(fld.splats_path, exported)
    info = json.loads((run / "run.json").read_text())
    write_json(run / "run.json", {**info, **splats_record(exported)})
    kept = exported.read_bytes()
    app = ViewerApp(ViewerConfig(run=run, port=_free_port()))
    try:
        app._tab = lambda client_id: SimpleNamespace(session=SimpleNamespace(mask=np.ones(app.field.num_gaussians, bool)), gui={})
        with pytest.raises(RunError, match="refusing to write over the run's inputs"):
            app.export(0, name="sel")
        assert app.export(0, name="other")[1] == app.field.num_gaussians
    finally:
        app.stop()
    assert exported.read_bytes() == kept


# ------------------------------------------------------------------------------------------ case 2


class _Payload:
    """Unpickling this creates the marker file: proof that a loader executed the checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("command, style", [("train", "torch.save"), ("train", "plain pickle"), ("recon", "torch.save")])
def test_case02_a_checkpoint_cannot_run_code(micro_scene, tmp_path, capsys, command, style):
    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "marker"
    payload = {"identity": {}, "model": {}, "optim": {}, "sched": {}, "step": 1, "version": 1, "fingerprint": {}, "x": _Payload(marker)}
    if style == "torch.save":
        torch.save(payload, out / "ckpt.pt")
    else:
        (out / "ckpt.pt").write_bytes(pickle.dumps(payload, protocol=2))
    before = listing(out)
    if command == "train":
        args = ["train", "--data", micro_scene, "--out", out, *MICRO_TRAIN]
    else:
        args = ["recon", "--data", micro_scene, "--out", out, "--resume", "--steps", 5, "--no-progress"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    one_line(err, str(out / "ckpt.pt"), "refused", "could run code")
    assert not marker.exists()
    assert listing(out) == before  # nothing written beside it


# ------------------------------------------------------------------------------------------ case 3


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_get(port: int, host: str, origin: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": host, **({"Origin": origin} if origin else {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _websocket(port: int, origin: str | None) -> tuple[int, int]:
    """(HTTP status of the handshake, bytes received in the first seconds) of a real websocket
    client speaking viser's subprotocol."""
    import viser
    import websockets.sync.client as ws_client
    from websockets.exceptions import InvalidStatus

    try:
        with ws_client.connect(f"ws://127.0.0.1:{port}", origin=origin, subprotocols=[f"viser-v{viser.__version__}"],
                               open_timeout=10) as ws:
            received = 0
            for _ in range(20):
                try:
                    received += len(ws.recv(timeout=0.5))
                except TimeoutError:
                    if received:
                        break
            return 101, received
    except InvalidStatus as e:
        return e.response.status_code, 0


def test_case03_the_viewer_answers_only_its_own_origin(micro_run):
    from splatseg.viewer import ViewerConfig
    from splatseg.viewer.app import ViewerApp

    port = _free_port()
    app = ViewerApp(ViewerConfig(run=micro_run, port=port, allow_origin=["http://myhost:4242"]))
    try:
        p = app.port
        status, body = _http_get(p, "attacker.example")  # DNS rebinding: a foreign Host
        assert status == 403 and b"<html" not in body.lower()
        assert _http_get(p, f"127.0.0.1:{p}", origin="http://attacker.example")[0] == 403
        status, body = _http_get(p, f"127.0.0.1:{p}")
        assert status == 200 and b"<html" in body.lower()
        assert _http_get(p, "myhost:4242")[0] == 200  # --allow-origin's host is let in
        assert _websocket(p, "http://attacker.example") == (403, 0)
        assert _websocket(p, "null")[0] == 403
        assert app.client_ids() == []
        status, received = _websocket(p, f"http://127.0.0.1:{p}")
        assert status == 101 and received > 0  # same origin: the session starts
        assert _websocket(p, f"http://localhost:{p}")[0] == 101
        assert _websocket(p, "http://myhost:4242")[0] == 101
        assert any("attacker.example" in r for r in app.refused)
        assert app.warnings == []
    finally:
        app.stop()
    app = ViewerApp(ViewerConfig(run=micro_run, host="0.0.0.0", port=_free_port()))
    try:
        assert any("not a loopback address" in w for w in app.warnings)
    finally:
        app.stop()


# ------------------------------------------------------------------------------------------ case 4


def test_case04_export_all_writes_all_or_nothing(micro_run, tmp_path, capsys, monkeypatch):
    objs = tmp_path / "objs"
    for bad, flag in [(["--min-gaussians", 0], "--min-gaussians"), (["--min-gaussians", -3], "--min-gaussians"),
                      (["--threshold", 1.5], "--threshold")]:
        code, _, err = run_cli(["export-all", "--run", micro_run, "--out", objs, *bad], capsys)
        assert code == 2
        one_line(err, flag)
        assert not objs.exists()
    code, _, err = run_cli(["export-all", "--run", micro_run, "--out", objs, "--min-gaussians", 5], capsys)
    assert code == 0, err
    first = listing(objs)
    index = json.loads((objs / "index.json").read_text())
    assert sorted(first) == sorted(["index.json", *(e["file"] for e in index["objects"])]) and len(index["objects"]) >= 3

    # a failure midway (disk full at the third file) leaves the previous export exactly as it was
    import splatseg.export as export

    real, calls = export.ExportSource.export, []

    def third_fails(self, mask, out, extra=None):
        calls.append(out)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(out))
        return real(self, mask, out, extra)

    monkeypatch.setattr(export.ExportSource, "export", third_fails)
    code, _, err = run_cli(["export-all", "--run", micro_run, "--out", objs, "--min-gaussians", 5], capsys)
    assert code == 2
    one_line(err, "No space left on device", "disk is full")
    assert listing(objs) == first and sorted(p.name for p in tmp_path.iterdir()) == ["objs"]
    monkeypatch.setattr(export, "export_ply", real)

    # a reused folder: the new set replaces the old one whole (no stale PLY beside the new index)
    most = max(e["gaussians"] for e in index["objects"])
    code, _, err = run_cli(["export-all", "--run", micro_run, "--out", objs, "--min-gaussians", most], capsys)
    assert code == 0, err
    new_index = json.loads((objs / "index.json").read_text())
    assert sorted(listing(objs)) == sorted(["index.json", *(e["file"] for e in new_index["objects"])])
    assert len(new_index["objects"]) < len(index["objects"])

    # a folder that is not an export-all output is never replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, _, err = run_cli(["export-all", "--run", micro_run, "--out", other, "--min-gaussians", 5], capsys)
    assert code == 2
    one_line(err, "neither empty nor a previous export-all output")
    assert listing(other) == {"notes.txt": hashlib.sha256(b"keep me").hexdigest()}


# ------------------------------------------------------------------------------------------ case 5


def test_case05_os_errors_are_one_line_and_leave_nothing(micro_run, micro_scene, tmp_path, capsys, monkeypatch):
    out = tmp_path / "obj.ply"
    # EFBIG: a file-size limit (ulimit -f) below the export's size; Python ignores SIGXFSZ
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        code, _, err = run_cli(["segment", "--run", micro_run, *click(micro_run), "--out", out], capsys)
        run_out = tmp_path / "run"
        code_train, _, err_train = run_cli(["train", "--data", micro_scene, "--out", run_out, *MICRO_TRAIN], capsys)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 2
    one_line(err, str(out), "File too large", "ulimit -f")
    assert code_train == 2  # the checkpoint (a torch zip writer) fails the same way, not as a torch error
    one_line(err_train, str(run_out / "ckpt.pt"), "File too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and list(run_out.iterdir()) == []

    # ENOSPC: a real 64 KiB tmpfs when this machine allows mounting one, else a simulated full disk
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                                   capture_output=True).returncode == 0
    try:
        if not mounted:  # the write itself succeeds into the page cache; fsync reports the full disk
            def full(fd):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(os, "fsync", full)
        target = mount / "obj.ply"  # everything but the clicked object, with features: > 64 KiB
        code, _, err = run_cli(["segment", "--run", micro_run, *click(micro_run), "--invert", "--with-features",
                                "--out", target], capsys)
        monkeypatch.undo()
        assert code == 2
        one_line(err, str(target), "No space left on device", "disk is full")
        assert list(mount.iterdir()) == []
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=True)

    # EACCES: a folder this process may not write (simulated when running as root, who may)
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        import splatseg.io.atomic as atomic

        def denied(dir, prefix, suffix):
            raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, prefix + "x" + suffix))

        monkeypatch.setattr(atomic.tempfile, "mkstemp", lambda dir, prefix, suffix: denied(dir, prefix, suffix))
    else:
        locked.chmod(0o500)
    try:
        code, _, err = run_cli(["segment", "--run", micro_run, *click(micro_run), "--out", locked / "obj.ply"], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2
    one_line(err, str(locked / "obj.ply"), "Permission denied")
    assert list(locked.iterdir()) == []


def test_case05_parse_errors_and_bugs_are_one_line(micro_run, capsys, monkeypatch):
    code, _, err = run_cli(["train", "--data", "x", "--out", "y", "--feature-dim", "abc"], capsys)
    assert code == 2
    one_line(err, "--feature-dim", "abc")
    code, _, err = run_cli(["train", "--data", "x"], capsys)
    assert code == 2
    one_line(err, "missing option --out", "splatseg train --help")
    code, _, err = run_cli(["bogus"], capsys)
    assert code == 2
    one_line(err, "bogus")
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0 and "--feature-dim" in out and "usage" in out  # help is left as tyro prints it

    import splatseg.cli as cli

    monkeypatch.setattr(cli, "dispatch", lambda cmd: 1 / 0)
    code, _, err = run_cli(["segment", "--run", micro_run, *click(micro_run), "--out", "o.ply"], capsys)
    assert code == 1
    one_line(err, "ZeroDivisionError", "--debug", prefix="splatseg: internal error: ")
    code, _, err = run_cli(["--debug", "segment", "--run", micro_run, *click(micro_run), "--out", "o.ply"], capsys)
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("splatseg: internal error: ZeroDivisionError")


# ------------------------------------------------------------------------------------------ case 6


def test_case06_a_failed_retrain_never_leaves_a_mixed_run(micro_run, micro_scene, tmp_path, capsys, monkeypatch):
    run = copy_run(micro_run, tmp_path / "run")
    before, prompt = listing(run), click(run)
    import splatseg.run as run_module

    # a retrain (other seed) that fails while writing: the previous run is left whole
    real_save = run_module.save_npz

    def views_fail(path, **arrays):
        if Path(path).name == "views.npz":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(path, **arrays)

    monkeypatch.setattr(run_module, "save_npz", views_fail)
    code, _, err = run_cli(["train", "--data", micro_scene, "--out", run, *MICRO_TRAIN, "--seed", 7, "--iterations", 20,
                            "--overwrite"], capsys)
    assert code == 2
    one_line(err, "views.npz", "disk is full")
    monkeypatch.setattr(run_module, "save_npz", real_save)
    after = listing(run)
    assert {k: v for k, v in after.items() if k != "ckpt.pt"} == {k: v for k, v in before.items() if k != "ckpt.pt"}
    assert not list(run.glob(".staging-*"))
    code, _, err = run_cli(["segment", "--run", run, *prompt, "--out", tmp_path / "o.ply"], capsys)
    assert code == 0, err

    # killed between two renames: the files disagree on the run id and are refused as a mixed run
    real_replace, renames = os.replace, []

    def killed_after_first(src, dst):
        if Path(dst).parent == run and Path(src).parent.name.startswith(".staging-"):
            renames.append(dst)  # write_run's renames into the run, not the atomic writes before them
            if len(renames) == 2:
                raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(run_module.os, "replace", killed_after_first)
    code, _, err = run_cli(["train", "--data", micro_scene, "--out", run, *MICRO_TRAIN, "--seed", 8, "--iterations", 20,
                            "--overwrite"], capsys)
    monkeypatch.setattr(run_module.os, "replace", real_replace)
    assert code == 130
    code, _, err = run_cli(["segment", "--run", run, *prompt, "--out", tmp_path / "o2.ply"], capsys)
    assert code == 2
    one_line(err, "is a mixed run")
    assert not (tmp_path / "o2.ply").exists()

    # without ckpt.pt, train refuses to replace another run's files, unless --overwrite
    other = copy_run(micro_run, tmp_path / "other")
    (other / "ckpt.pt").unlink()
    kept = listing(other)
    code, _, err = run_cli(["train", "--data", micro_scene, "--out", other, *MICRO_TRAIN, "--num-queries", 16], capsys)
    assert code == 2
    one_line(err, "holds a finished run of other splats or settings", "num_queries", "--overwrite")
    assert listing(other) == kept
    code, _, err = run_cli(["train", "--data", micro_scene, "--out", other, *MICRO_TRAIN, "--seed", 3], capsys)
    assert code == 2
    one_line(err, "configuration (seed)")
    code, _, err = run_cli(["train", "--data", micro_scene, "--out", other, *MICRO_TRAIN], capsys)
    assert code == 0, err  # the same command again rebuilds the same run
    code, _, err = run_cli(["train", "--data", micro_scene, "--out", other, *MICRO_TRAIN, "--num-queries", 16,
                            "--iterations", 20, "--overwrite"], capsys)
    assert code == 0, err
    assert load_field(other).num_queries == 16


# ------------------------------------------------------------------------------------------ case 7


def _ply_header(fmt: str, count: int) -> str:
    names = "x y z f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3".split()
    return f"ply\nformat {fmt} 1.0\nelement vertex {count}\n" + "".join(f"property float {n}\n" for n in names) + "end_header\n"


def test_case07_small_files_cannot_exhaust_memory(micro_scene, micro_run, tmp_path, capsys):  # micro_run writes the segments
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ascii.ply").write_text(_ply_header("ascii", 10**12) + "0 " * 14 + "\n")
    (bad / "binary.ply").write_bytes(_ply_header("binary_little_endian", 10**12).encode() + bytes(56))
    for name in ("ascii.ply", "binary.ply"):
        out = tmp_path / f"run_{name}"
        tracemalloc.start()
        try:
            code, _, err = run_cli(["train", "--data", micro_scene, "--splats", bad / name, "--out", out, *MICRO_TRAIN], capsys)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert code == 2
        one_line(err, str(bad / name), "1000000000000", "truncated or corrupt")
        assert peak < 200e6 and not out.exists()

    # a small segments file holding one index of 2e9, and one whose header declares a huge array
    segs = tmp_path / "segments"
    shutil.copytree(micro_scene / "segments", segs)
    stem = sorted(segs.iterdir())[0].stem
    with np.load(segs / f"{stem}.npz") as z:
        segmaps = z["segmaps"].copy()
    segmaps[0, 0, 0] = 2_000_000_000
    np.savez_compressed(segs / f"{stem}.npz", segmaps=segmaps)
    assert (segs / f"{stem}.npz").stat().st_size < 20_000
    out = tmp_path / "run_segments"
    tracemalloc.start()
    try:
        code, _, err = run_cli(["train", "--data", micro_scene, "--segments", segs, "--out", out, *MICRO_TRAIN], capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2
    one_line(err, f"{stem}.npz", "2000000000")
    assert peak < 500e6 and not out.exists()

    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i4", "fortran_order": False, "shape": (4, 50000, 50000)})
    with zipfile.ZipFile(segs / f"{stem}.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("segmaps.npy", header.getvalue() + bytes(4096))
    code, _, err = run_cli(["train", "--data", micro_scene, "--segments", segs, "--out", out, *MICRO_TRAIN], capsys)
    assert code == 2
    one_line(err, f"{stem}.npz", "'segmaps'", "declares shape [4, 50000, 50000]")
    assert not out.exists()


# ------------------------------------------------------------------------------------------ case 8


def _within(seconds: float, fn):
    """Runs fn in a thread; fails (instead of hanging the suite) when it has not returned in time."""
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("result", fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "still running: the command hangs"
    return box["result"]


def test_case08_a_bad_port_or_a_failed_start_exits_at_once(micro_run, capsys, monkeypatch):
    for port in (70000, 0, 65536):
        code = _within(120, lambda: main(["view", "--run", str(micro_run), "--port", str(port)]))
        assert code == 2
        one_line(capsys.readouterr().err, "--port must be an integer in 1..65535", str(port))
    code = _within(120, lambda: main(["view", "--run", str(micro_run), "--host", "203.0.113.7", "--port", "8080"]))
    assert code == 2  # an address this machine does not have (TEST-NET-3)
    one_line(capsys.readouterr().err, "--host '203.0.113.7' cannot be bound")

    import websockets.asyncio.server as ws_server

    def dies(*args, **kwargs):  # viser's server thread dies before listening (e.g. a bad port)
        raise OverflowError("port must be 0-65535.")

    monkeypatch.setattr(ws_server, "serve", dies)
    code = _within(120, lambda: main(["view", "--run", str(micro_run), "--port", str(_free_port())]))
    assert code == 2
    one_line(capsys.readouterr().err, "could not start", "OverflowError")


# ------------------------------------------------------------------------------------------ case 9


def _broken_run(micro_run: Path, dest: Path, how: str) -> Path:
    run = copy_run(micro_run, dest)
    if how == "run.json is a list":
        write_json(run / "run.json", [1, 2, 3])
    elif how == "run.json lacks splats":
        info = json.loads((run / "run.json").read_text())
        del info["splats"]
        write_json(run / "run.json", info)
    elif how == "field.npz without lifted":
        with np.load(run / "field.npz") as z:
            arrays = {k: z[k] for k in z.files if k != "lifted"}
        save_npz(run / "field.npz", **arrays)
    elif how == "views.npz with fewer maps than names":
        with np.load(run / "views.npz") as z:
            arrays = {k: z[k] for k in z.files}
        arrays["maps"] = arrays["maps"][:-1]
        save_npz(run / "views.npz", **arrays)
    return run


@pytest.mark.parametrize("how, fragment", [
    ("run.json is a list", "holds a JSON list"),
    ("run.json lacks splats", "lacks 'splats'"),
    ("field.npz without lifted", "has no 'lifted' array"),
    ("views.npz with fewer maps than names", "maps must be ["),
])
def test_case09_a_broken_run_is_one_line(micro_run, tmp_path, capsys, how, fragment):
    run = _broken_run(micro_run, tmp_path / "run", how)
    out = tmp_path / "obj.ply"
    code, _, err = run_cli(["segment", "--run", run, "--click", "view_000", 5, 5, "--out", out], capsys)
    assert code == 2
    one_line(err, fragment)
    assert not out.exists()


@pytest.mark.parametrize("ckpt", ["corrupt", "truncated"])
def test_case09_a_broken_checkpoint_is_one_line(micro_run, micro_scene, tmp_path, capsys, ckpt):
    run = copy_run(micro_run, tmp_path / "run")
    data = (run / "ckpt.pt").read_bytes()
    (run / "ckpt.pt").write_bytes(bytes(200) + data[200:] if ckpt == "corrupt" else data[: len(data) // 2])
    before = listing(run)
    code, _, err = run_cli(["train", "--data", micro_scene, "--out", run, *MICRO_TRAIN], capsys)
    assert code == 2
    one_line(err, str(run / "ckpt.pt"), "corrupt")
    assert listing(run) == before


@pytest.mark.parametrize("flags, fragment", [
    (["--feature-dim", "0"], "--feature-dim must be an integer >= 1"),
    (["--num-queries", "0"], "--num-queries must be an integer >= 1"),
    (["--iterations", "0"], "--iterations must be an integer >= 1"),
    (["--out", ""], "--out was given an empty value"),
    (["--out="], "--out was given an empty value"),
])
def test_case09_unusable_settings_are_refused_before_any_work(micro_scene, tmp_path, capsys, monkeypatch, flags, fragment):
    monkeypatch.chdir(tmp_path)  # an empty --out must not land here either
    out = tmp_path / "run"
    args = ["train", "--data", micro_scene, *MICRO_TRAIN, *(flags if flags[0].startswith("--out") else ["--out", out, *flags])]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    one_line(err, fragment)
    assert list(tmp_path.iterdir()) == []


def test_case09_images_of_another_size_than_declared_are_refused(micro_scene, tmp_path, capsys):
    from PIL import Image

    scene = tmp_path / "scene"
    shutil.copytree(micro_scene, scene)
    image = sorted((scene / "images").iterdir())[2]
    Image.open(image).resize((40, 30)).save(image)
    code, _, err = run_cli(["train", "--data", scene, "--out", tmp_path / "run", *MICRO_TRAIN], capsys)
    assert code == 2
    one_line(err, str(image), "is 40x30 but its camera declares 48x36")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ case 10


def test_case10_interrupt_and_resume_equals_one_run(micro_scene, micro_run, tmp_path, monkeypatch):
    """Train 60 steps with a checkpoint at 30; the other run dies at step 36 (after that
    checkpoint), resumes from it, and must end bit-identical (every array of field.npz and
    views.npz). Pixel sampling is on (256 of 1728 pixels), so the sampling generator matters."""
    import splatseg.train.trainer as trainer

    kw = dict(iterations=60, checkpoint_every=30, pixels_per_step=256)
    one = train(micro_config(micro_scene, tmp_path / "one", **kw))
    real, calls = trainer.step_loss, []

    def dies_at_36(*args, **kwargs):
        calls.append(1)
        if len(calls) == 37:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "step_loss", dies_at_36)
    with pytest.raises(RuntimeError, match="killed"):
        train(micro_config(micro_scene, tmp_path / "two", **kw))
    monkeypatch.setattr(trainer, "step_loss", real)
    assert torch.load(tmp_path / "two" / "ckpt.pt", weights_only=True)["step"] == 30
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["ckpt.pt"]
    two = train(micro_config(micro_scene, tmp_path / "two", **kw))
    for name in ("field.npz", "views.npz"):
        with np.load(one / name) as a, np.load(two / name) as b:
            assert set(a.files) == set(b.files)
            for key in a.files:
                if key != "run_id":
                    assert np.array_equal(a[key], b[key]), (name, key)
    assert json.loads((one / "run.json").read_text())["final_loss"] == json.loads((two / "run.json").read_text())["final_loss"]


def test_case10_recon_interrupt_and_resume_equals_one_run(micro_scene, tmp_path, monkeypatch):
    """The same for `recon`: Ctrl+C at step 12 (the checkpoint written then) and a crash at step
    12 (the checkpoint of step 8 kept) both resume to a splats.ply identical byte for byte."""
    from splatseg.recon import ReconConfig, run_recon
    import splatseg.recon.trainer as recon_trainer

    kw = dict(steps=16, ckpt_every=8, eval_every=0, device="cpu", init_num_points=300, max_gaussians=600, refine_start=4,
              refine_every=4, refine_stop=14, reset_every=0, sh_degree=1, sh_degree_interval=6, progress=False, test_every=3)
    one = run_recon(ReconConfig(data=micro_scene, out=tmp_path / "one", **kw)).read_bytes()
    for stop, step in ((KeyboardInterrupt, 12), (RuntimeError, 8)):
        out = tmp_path / f"two_{stop.__name__}"
        real, calls = recon_trainer.render_views, []

        def dies(*args, **kwargs):
            calls.append(1)
            if len(calls) == 13:  # one render per step: the 13th is step 12's
                raise stop("stopped")
            return real(*args, **kwargs)

        monkeypatch.setattr(recon_trainer, "render_views", dies)
        with pytest.raises(stop):
            run_recon(ReconConfig(data=micro_scene, out=out, **kw))
        monkeypatch.setattr(recon_trainer, "render_views", real)
        assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == step
        assert run_recon(ReconConfig(data=micro_scene, out=out, **kw, resume=True)).read_bytes() == one


def test_run_errors_are_value_errors():
    assert issubclass(RunError, ValueError)


@pytest.mark.parametrize("utf8", [True, False])
def test_parse_errors_become_one_line_in_both_of_tyros_layouts(utf8, monkeypatch):
    """tyro draws a UTF-8 box when stdout is UTF-8 and an indented ASCII layout otherwise (pipes
    with another encoding, pytest's capture): both become the same line."""
    import contextlib
    import io

    import tyro

    from splatseg.cli import command_type
    from splatseg.errors import parse_error_line

    class Stdout(io.StringIO):
        encoding = "utf-8" if utf8 else "ascii"

    monkeypatch.setattr("sys.stdout", Stdout())
    lines = []
    for args in (["train", "--data", "x"], ["train"], ["segment", "--run", "r", "--out", "o", "--click", "a", "1"]):
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured), pytest.raises(SystemExit):
            tyro.cli(command_type(), args=args, prog="splatseg")
        assert len(captured.getvalue().splitlines()) > 3 and ("╭" in captured.getvalue()) == utf8
        lines.append(parse_error_line(captured.getvalue()))
    assert lines == ["missing option --out for `splatseg train` (see `splatseg train --help`)",
                     "missing option --out for `splatseg train` (see `splatseg train --help`)",  # --data may be left out
                     "Missing value for argument '--click'. Expected 3 values. (see `splatseg segment --help`)"]
