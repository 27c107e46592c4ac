#!/usr/bin/env python
"""Motion follow: does the video's motion follow the motion_bucket_id it is given? Teacher and TDD student.

  OMP_NUM_THREADS=1 python bench/motion_follow.py --png docs/bench/motion_follow.png   # toy-svd + its TDD student
  python bench/motion_follow.py --tdd-lora runs/x/export/lora --buckets 0 127 255 --num-images 4 --seeds 0

For every held-out (image, seed) pair (the images of bench/quality.py, tdd_video/eval/heldout.py) and every
bucket, the teacher (Euler on the Karras grid, frame-wise CFG 1 → 3) and the TDD student (TDD sampler,
--tdd-eta, --tdd-guidance) render a video from THE SAME initial noise and conditioning noise; only
motion_bucket_id changes. Both go through the code of bench/quality.py (tdd_video.eval.quality/contenders).
Motion of each video, two ways: the mean absolute frame-to-frame change (pixels in [0, 1]; contrast ×
displacement, saturates) and tdd_video.data.motion.estimate_motion (optical flow, frame diagonals per
second at the fps given by --fps-id + 1). Printed, one JSON line each:
  kind=bucket  per (contender, bucket): mean ± standard error over pairs of both measures; for the
               student also the per-pair ratio student / teacher (same noise, same bucket);
  kind=trend   per contender and measure: Spearman rank correlation of bucket vs motion (per pair,
               mean ± SE; and on the per-bucket means) and the least-squares slope in motion per 255
               buckets (per pair, mean ± SE; also relative to the mean motion).
--png draws motion vs bucket (teacher and student, ± SE).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.quality import save_figure  # noqa: E402  (the bench plots' common ending)

MEASURES = {"frame_change": "mean |frame change| (pixels in [0, 1])", "flow": "estimate_motion (diagonals / s)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-svd", help="zoo name or diffusers SVD folder (default toy-svd)")
    p.add_argument("--tdd-lora", default=None, help="TDD student LoRA (.safetensors or export folder; default: "
                                                    "the zoo teacher's shipped student, zoo.default_student_lora)")
    p.add_argument("--buckets", nargs="+", type=int, default=[0, 32, 64, 127, 191, 255], help="motion_bucket_ids")
    p.add_argument("--num-images", type=int, default=8, help="held-out images (default 8)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds per image (default 0 1)")
    p.add_argument("--teacher", default="teacher@25", help="teacher contender METHOD@STEPS (default teacher@25)")
    p.add_argument("--student", default="tdd@4", help="student contender METHOD@STEPS (default tdd@4)")
    p.add_argument("--tdd-eta", type=float, default=0.0, help="γ-sampling η of the TDD sampler (default 0)")
    p.add_argument("--tdd-guidance", type=float, default=1.0, help="CFG on the student (default 1)")
    p.add_argument("--fps-id", type=int, default=6, help="fps_id conditioning; motion is measured at fps_id + 1 fps")
    p.add_argument("--batch", type=int, default=16, help="videos per forward (default 16)")
    p.add_argument("--png", default=None, help="write the motion-vs-bucket plot here")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def _ranks(x) -> np.ndarray:
    """Ranks 0..n-1, ties averaged."""
    _, inv, cnt = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True, return_counts=True)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    return (start + (cnt - 1) / 2.0)[inv]


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson of the ranks); NaN when either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def render_motion(family, cfg, buckets: list[int], specs: list[str], log=lambda m: None) -> dict:
    """{label: {measure: array [num_buckets, pairs]}} — every bucket from the same noise per (image, seed)."""
    from tdd_video.data.motion import estimate_motion
    from tdd_video.eval import metrics as M
    from tdd_video.eval.contenders import Contenders, parse_contender
    from tdd_video.eval.heldout import heldout_images
    from tdd_video.eval.quality import _Batches, _sample_all
    contenders = [parse_contender(s) for s in specs]
    size = int(family.unet.config.sample_size) * family.vae_scale_factor
    frames = int(getattr(family, "num_frames", 8))
    images, _ = heldout_images(cfg.num_images, size)
    bench = Contenders(family, cfg, contenders)
    out = {c.label: {m: np.zeros((len(buckets), len(images) * len(cfg.seeds))) for m in MEASURES} for c in contenders}
    try:
        for c in contenders:
            for k, b in enumerate(buckets):
                log(f"sampling {c.label} at motion_bucket_id {b}")
                batches = _Batches(family, images, list(cfg.seeds), dataclasses.replace(cfg, motion_bucket_id=b),
                                   frames)
                _, vids, _ = _sample_all(bench, c, batches)
                for p, v in enumerate(vids.float()):
                    out[c.label]["frame_change"][k, p] = M.temporal_change(v) / 2.0     # [-1, 1] -> [0, 1]
                    out[c.label]["flow"][k, p] = estimate_motion(v, fps=cfg.fps_id + 1)
    finally:
        bench.counter.close()
    return out


def summarize(motion: dict, buckets: list[int], teacher: str) -> list[dict]:
    """kind=bucket rows (mean ± SE per contender and bucket, ratio to the teacher) and kind=trend rows."""
    from tdd_video.eval import metrics as M
    from tdd_video.eval.quality import mean_se
    bx = np.asarray(buckets, dtype=np.float64)
    rows = []
    for label, per in motion.items():
        for k, b in enumerate(buckets):
            row = {"kind": "bucket", "contender": label, "bucket": b, "pairs": int(per["flow"].shape[1])}
            for m, vals in per.items():
                row[m], row[f"{m}_se"] = mean_se(vals[k].tolist())
                if label != teacher:
                    ratios = [M.ratio(s, t) for s, t in zip(vals[k], motion[teacher][m][k])]
                    row[f"{m}_ratio_to_teacher"], row[f"{m}_ratio_to_teacher_se"] = mean_se(ratios)
            rows.append(row)
    for label, per in motion.items():
        for m, vals in per.items():
            rhos = [spearman(bx, vals[:, p]) for p in range(vals.shape[1])]
            slopes = [float(np.polyfit(bx, vals[:, p], 1)[0] * 255.0) for p in range(vals.shape[1])]
            row = {"kind": "trend", "contender": label, "measure": m, "unit": MEASURES[m], "buckets": buckets,
                   "spearman_of_means": spearman(bx, vals.mean(1))}
            row["spearman_per_pair"], row["spearman_per_pair_se"] = mean_se([r for r in rhos if r == r])
            row["slope_per_255"], row["slope_per_255_se"] = mean_se(slopes)
            mean = float(vals.mean())
            row["slope_per_255_rel"] = row["slope_per_255"] / mean if mean else float("nan")
            rows.append(row)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> Path | None:
    """Motion vs bucket, one panel per measure, one line per contender, ± SE (the style of bench/quality.py)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (m, label) in zip(axes, MEASURES.items()):
        for who in dict.fromkeys(r["contender"] for r in rows if r["kind"] == "bucket"):
            pts = [(r["bucket"], r[m], r[f"{m}_se"]) for r in rows if r["kind"] == "bucket" and r["contender"] == who]
            trend = next(r for r in rows if r["kind"] == "trend" and r["contender"] == who and r["measure"] == m)
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3,
                        label=f"{who} (Spearman/pair {trend['spearman_per_pair']:.2f})")
        ax.set_xlabel("motion_bucket_id")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, title)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tdd_video import zoo
    from tdd_video.errors import ConfigError
    from tdd_video.eval.metrics import json_safe
    from tdd_video.eval.quality import QualityConfig
    from tdd_video.families import load_family
    model = str(zoo.resolve_model(args.model)) if zoo.is_zoo_name(args.model) else args.model
    lora_path = args.tdd_lora or (zoo.default_student_lora(args.model) if zoo.is_zoo_name(args.model) else None)
    if not lora_path:
        print(f"error: no TDD student for {args.model!r}: pass --tdd-lora", file=sys.stderr)
        return 2
    cfg = QualityConfig(contenders=[args.teacher, args.student], num_images=args.num_images, seeds=list(args.seeds),
                        batch=args.batch, tdd_lora=str(lora_path), tdd_eta=args.tdd_eta,
                        tdd_guidance=args.tdd_guidance, fps_id=args.fps_id, progress=not args.quiet)
    t0 = time.time()
    log = (lambda m: None) if args.quiet else (
        lambda m: print(f"[{time.time() - t0:6.0f} s] {m}", file=sys.stderr, flush=True))
    try:
        family = load_family("svd", model)
        motion = render_motion(family, cfg, list(args.buckets), [args.teacher, args.student], log)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = summarize(motion, list(args.buckets), args.teacher)
    meta = {"model": model, "tdd_lora": str(lora_path), "teacher": args.teacher, "student": args.student,
            "tdd_eta": args.tdd_eta, "tdd_guidance": args.tdd_guidance, "fps_id": args.fps_id,
            "fps": args.fps_id + 1, "num_images": args.num_images, "seeds": list(args.seeds),
            "wall_s": round(time.time() - t0, 1), "loadavg_1min": round(os.getloadavg()[0], 2)}
    for row in rows:
        print(json.dumps(json_safe({"bench": "motion_follow", **row, **({"meta": meta} if row is rows[0] else {})})),
              flush=True)
    if args.png:
        pairs = rows[0]["pairs"]
        png = plot(rows, Path(args.png), f"{args.model}: motion vs motion_bucket_id, {pairs} held-out (image, seed) "
                                         f"pairs, same noise per bucket; ± SE")
        print(json.dumps({"bench": "motion_follow_files", "plot": str(png) if png else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
