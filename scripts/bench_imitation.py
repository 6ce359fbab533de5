"""Benchmark of the SAM-decoder path on a run with an imitation field (`splatseg imitate`).

(a) Per-frame time, side by side in one process: SAM's encoder on a rendered image (render RGB +
    `SamPredictor.set_image` + one decoder call) against rendering the embedding from the splats
    plus the same decoder call, for the vit_b and vit_h architectures with random weights (timing
    does not depend on the weights; the rendered path is the same for both: SAM's decoder is the
    same network for every backbone). Torch threads are printed.
(b) Imitation fidelity on the run's held-out views (SA-NeRF's protocol, `splatseg.imitation.fidelity`):
    5x5 grid of single positive points, decoder masks from the rendered embedding vs from the
    teacher's embedding of the held-out photo; pairs whose teacher mask covers < 1% or > 99% of
    the image are ignored. Beside it the minority-side IoU, the embedding's relative squared error
    (over the teacher's spatial variance) and two chance baselines: another held-out view's
    embedding, and the view's own embedding flattened to its mean. The teacher is rebuilt from the run (its random-init seed); a teacher
    from a checkpoint needs --sam-checkpoint. Cached teacher embeddings are reused.
(c) Training time, from the run's imitation.npz.

    python scripts/bench_imitation.py --run RUN [--threads 2] [--skip-vit-h] [--teacher-cache DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splatseg.imitation.decoder import PromptDecoder  # noqa: E402
from splatseg.imitation.distill import render_rgb  # noqa: E402
from splatseg.imitation.fidelity import view_fidelity  # noqa: E402
from splatseg.imitation.teacher import Teacher, TeacherSpec, build_teacher_model, cached_embedding, teacher_name  # noqa: E402
from splatseg.imitation.views import DecoderRun  # noqa: E402
from splatseg.io.images import load_image  # noqa: E402
from splatseg.run import write_json  # noqa: E402


def timed(fn, reps: int, warmup: bool = True) -> tuple[float, object]:
    """(median seconds, last result) of `reps` calls, after one untimed warm-up call if `warmup`."""
    out = fn() if warmup else None
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def bench_timing(run: DecoderRun, archs: list[str], reps: int, encoder_reps: int, encoder_warmup: bool) -> list[dict]:
    stem = run.info["heldout_views"][0] if run.info.get("heldout_views") else run.cameras.names[0]
    view = run.view(stem)
    W, H = view.width, view.height
    click = np.array([[W / 2, H / 2]])
    label = np.array([1])
    imi = run.imitation
    sh = run.splats.sh_degree

    def rendered_path():
        with torch.no_grad():
            emb = imi.model.render_embedding(run.params, view.viewmat, view.K, W, H)
        return emb

    t_render_emb, emb = timed(rendered_path, reps)
    t_decode, _ = timed(lambda: imi.decoder.predict(emb, W, H, click, label), reps)
    t_rgb, rgb = timed(lambda: render_rgb(run.params, sh, view.viewmat, view.K, W, H, 0), reps)
    rows = []
    for arch in archs:
        t0 = time.perf_counter()
        model = build_teacher_model(TeacherSpec(arch, random_init=0), "cpu")
        build = time.perf_counter() - t0
        teacher = Teacher(model, f"sam-{arch}/random-init-0")
        decoder = PromptDecoder.from_sam(model)
        t_enc, enc = timed(lambda: torch.from_numpy(teacher.encode(rgb))[None], encoder_reps, encoder_warmup)
        t_dec_arch, _ = timed(lambda: decoder.predict(enc, W, H, click, label), reps)
        encoder_frame = t_rgb + t_enc + t_dec_arch
        rendered_frame = t_render_emb + t_decode
        rows.append({"arch": arch, "build_s": round(build, 1), "render_rgb_s": t_rgb, "encoder_s": t_enc, "decoder_s": t_dec_arch,
                     "encoder_frame_s": encoder_frame, "render_embedding_s": t_render_emb, "rendered_decoder_s": t_decode,
                     "rendered_frame_s": rendered_frame, "encode_vs_render": t_enc / t_render_emb,
                     "frame_ratio": encoder_frame / rendered_frame})
        del model, teacher, decoder
    return rows


def bench_fidelity(run: DecoderRun, teacher: Teacher, cache: Path, grid: int) -> list[dict]:
    """Per held-out view: fidelity of the rendered embedding and of two chance baselines (another
    held-out view's encoder embedding; the view's own embedding averaged over the grid, i.e. no
    spatial content), and the rendered embedding's relative squared error against the encoder's."""
    held = list(run.info.get("heldout_views", []))
    encoded = {}
    for stem in held:
        i = run.cameras.index_of(stem)
        view = run.view(stem)
        rgb = load_image(run.cameras.image_paths[i], size=(view.width, view.height))
        t0 = time.perf_counter()
        enc, fresh = cached_embedding(cache, stem, rgb, teacher)
        encoded[stem] = (torch.from_numpy(enc)[None], round(time.perf_counter() - t0, 1) if fresh else "cached")
    rows = []
    for k, stem in enumerate(held):
        view = run.view(stem)
        enc, enc_s = encoded[stem]
        dec, W, H = run.imitation.decoder, view.width, view.height
        rendered = run.embedding(view)
        fid = view_fidelity(dec, rendered, enc, W, H, n=grid)
        other = view_fidelity(dec, encoded[held[(k + len(held) // 2) % len(held)]][0], enc, W, H, n=grid) if len(held) > 1 else None
        flat = view_fidelity(dec, enc.mean((2, 3), keepdim=True).expand_as(enc).contiguous(), enc, W, H, n=grid)
        rel = float(((rendered - enc) ** 2).mean() / ((enc - enc.mean((2, 3), keepdim=True)) ** 2).mean())
        rows.append({"view": stem, "token_iou": fid.token_mean, "best_iou": fid.best_mean, "minority_iou": fid.minority_mean,
                     "pairs": fid.counted, "other_view_token_iou": other.token_mean if other else float("nan"),
                     "other_view_minority_iou": other.minority_mean if other else float("nan"),
                     "flat_token_iou": flat.token_mean, "flat_minority_iou": flat.minority_mean,
                     "relative_sq_error": rel, "teacher_s": enc_s})
    return rows


FIDELITY_KEYS = ["token_iou", "best_iou", "minority_iou", "relative_sq_error", "other_view_token_iou", "other_view_minority_iou",
                 "flat_token_iou", "flat_minority_iou"]


def mean_fidelity(rows: list[dict]) -> dict:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in FIDELITY_KEYS}


def fidelity_table(run: DecoderRun, spec: TeacherSpec, teacher_id: str, args) -> list[dict]:
    """(b): builds the teacher, scores every held-out view and prints the table."""
    teacher = Teacher(build_teacher_model(spec, "cpu"), teacher_id)
    cache = args.teacher_cache or Path(args.run) / "teacher_cache"
    print(f"\n(b) fidelity on held-out views, {args.grid}x{args.grid} point grid, masks under 1% / over 99% ignored")
    rows = bench_fidelity(run, teacher, cache, args.grid)
    print(f"  {'':<10} {'rendered embedding':^33} | {'another view (chance)':^21} | {'flat embedding':^17} |")
    print(f"  {'view':<10} {'per mask':>9} {'best':>6} {'minority':>9} {'rel.err':>7} | {'per mask':>9} {'minority':>9} | "
          f"{'per mask':>8} {'minority':>8} | {'pairs':>5} {'teacher':>7}")
    for r in rows:
        print(f"  {r['view']:<10} {r['token_iou']:>9.3f} {r['best_iou']:>6.3f} {r['minority_iou']:>9.3f} {r['relative_sq_error']:>7.3f} | "
              f"{r['other_view_token_iou']:>9.3f} {r['other_view_minority_iou']:>9.3f} | {r['flat_token_iou']:>8.3f} "
              f"{r['flat_minority_iou']:>8.3f} | {r['pairs']:>5} {str(r['teacher_s']):>7}")
    if rows:
        mean = mean_fidelity(rows)
        print(f"  {'mean':<10} {mean['token_iou']:>9.3f} {mean['best_iou']:>6.3f} {mean['minority_iou']:>9.3f} "
              f"{mean['relative_sq_error']:>7.3f} | {mean['other_view_token_iou']:>9.3f} {mean['other_view_minority_iou']:>9.3f} | "
              f"{mean['flat_token_iou']:>8.3f} {mean['flat_minority_iou']:>8.3f} |")
        print(f"  worst view: per mask {min(r['token_iou'] for r in rows):.3f}, minority {min(r['minority_iou'] for r in rows):.3f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="run directory with imitation.npz")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions of the cheap steps (median)")
    ap.add_argument("--encoder-reps", type=int, default=1, help="timed repetitions of each encoder (median)")
    ap.add_argument("--encoder-warmup", action="store_true", help="one untimed encoder pass first (seconds-long passes hardly need it)")
    ap.add_argument("--skip-vit-h", action="store_true", help="time vit_b only")
    ap.add_argument("--skip-timing", action="store_true", help="fidelity and training time only")
    ap.add_argument("--skip-fidelity", action="store_true", help="timing and training time only")
    ap.add_argument("--grid", type=int, default=5, help="points per side of the fidelity grid")
    ap.add_argument("--teacher-cache", type=Path, default=None, help="cached teacher embeddings (default RUN/teacher_cache)")
    ap.add_argument("--sam-checkpoint", type=Path, default=None, help="the teacher's checkpoint, for runs imitated from one")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = DecoderRun.load(args.run, "cpu")
    meta = run.imitation.meta
    teacher_id = meta["teacher"]
    print(f"run {args.run}: {run.num_gaussians:,} Gaussians, teacher {teacher_id}, d={meta['feature_dim']}, "
          f"supersample {meta['supersample']}, torch threads {torch.get_num_threads()}, device cpu")
    report: dict = {"run": str(args.run), "teacher": teacher_id, "threads": torch.get_num_threads()}

    s = meta.get("summary", {})
    print("\n(c) training time (from imitation.npz)")
    print(f"  teacher on {s.get('teacher_views')} photos: {s.get('teacher_seconds')} s ({s.get('photos_encoded_now')} encoded then, "
          f"the rest cached); {s.get('augmented_targets')} augmented targets: {s.get('augment_seconds')} s; "
          f"optimisation ({meta['config']['steps']} steps x {meta['config']['batch_size']} views): {s.get('optimise_seconds')} s; "
          f"total {s.get('seconds')} s with {s.get('torch_threads')} threads")
    report["training"] = s

    arch = meta.get("sam_model", "vit_b")
    if "/random-init-" in teacher_id:
        spec = TeacherSpec(arch, random_init=int(teacher_id.rsplit("-", 1)[1]))
    else:
        spec = TeacherSpec(arch, checkpoint=args.sam_checkpoint)
        if teacher_name(spec) != teacher_id:
            sys.exit(f"error: the checkpoint does not match the run's teacher {teacher_id} (pass --sam-checkpoint)")
    rows = [] if args.skip_fidelity else fidelity_table(run, spec, teacher_id, args)
    if rows:
        report["fidelity"] = {"views": rows, "mean": mean_fidelity(rows)}

    if not args.skip_timing:
        archs = ["vit_b"] + ([] if args.skip_vit_h else ["vit_h"])
        print(f"\n(a) per-frame time on CPU, {torch.get_num_threads()} torch threads, random weights, one view "
              f"({run.view(run.info['heldout_views'][0]).width}x{run.view(run.info['heldout_views'][0]).height}), one click")
        timing = bench_timing(run, archs, args.reps, args.encoder_reps, args.encoder_warmup)
        print(f"  {'arch':<6} {'render RGB':>10} {'encoder':>9} {'decoder':>8} {'frame':>8} | {'render emb':>10} {'decoder':>8} "
              f"{'frame':>8} | {'encode/render':>13} {'frame ratio':>11}")
        for r in timing:
            print(f"  {r['arch']:<6} {r['render_rgb_s']:>9.3f}s {r['encoder_s']:>8.2f}s {r['decoder_s']:>7.3f}s {r['encoder_frame_s']:>7.2f}s | "
                  f"{r['render_embedding_s']:>9.3f}s {r['rendered_decoder_s']:>7.3f}s {r['rendered_frame_s']:>7.3f}s | "
                  f"{r['encode_vs_render']:>12.0f}x {r['frame_ratio']:>10.0f}x")
        report["timing"] = timing
    if args.json:
        write_json(args.json, json.loads(json.dumps(report, default=float)))


if __name__ == "__main__":
    main()
