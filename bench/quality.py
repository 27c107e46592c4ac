#!/usr/bin/env python
"""Quality bench: students vs the teacher on held-out real photos and seeds, mean ± standard error.

  OMP_NUM_THREADS=2 python bench/quality.py                                   # toy-svd + its shipped students
  python bench/quality.py --tdd-lora runs/x/export/lora --contenders teacher@8 teacher@25 tdd@4 tdd@8
  python bench/quality.py --model DIR --tdd-lora L --animatelcm-unet U --adv-lora A --num-images 32 --seeds 0 1

Contenders are METHOD@STEPS: teacher (Euler on the Karras grid, frame-wise CFG 1 → 3), base (the
untrained base with the TDD sampler), tdd / adv (TDD students: LoRA file or full UNet, TDD sampler with
--tdd-eta / --tdd-guidance), animatelcm (AnimateLCM student, its multistep sampler), default (what
`infer/img2vid.py --steps N` renders without --model: the student shipped with the model for that step count, at the
strength measured for it; tdd_video.zoo.STEP_STUDENTS). Every contender
starts from the same noise per (image, seed) pair. Held-out images: real photos no model here trained
on (tdd_video/eval/heldout.py). Printed: one JSON line per contender (latent MSE and PSNR to teacher@25
with the same noise; sharpness and motion relative to it; FD of fixed random video features against
teacher@25 on independent noise — teacher@25's own FD is the floor; every figure with its standard
error), then a line naming the plot (quality vs UNet passes) and the JSON file. Definitions:
docs/math.md §12.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _pair(text: str) -> tuple[float, float]:
    parts = [float(v) for v in text.replace(",", " ").split()]
    parts = parts * 2 if len(parts) == 1 else parts
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected G or GMIN,GMAX, got {text!r}")
    return parts[0], parts[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-svd", help="zoo name or diffusers SVD folder (default toy-svd)")
    p.add_argument("--contenders", nargs="+", default=None,
                   help="METHOD@STEPS list (default: teacher@4/8/25, base@4, tdd@1/2/4/8 and animatelcm@4/8, "
                        "adv@1/2/4 when their weights are given or shipped with the zoo teacher); default@N = the "
                        "CLI's default render at N steps (the zoo student and strength made for N)")
    for who in ("tdd", "animatelcm", "adv"):
        p.add_argument(f"--{who}-lora", default=None, help=f"{who} student LoRA (.safetensors or export folder)")
        p.add_argument(f"--{who}-unet", default=None, help=f"{who} student as a full UNet (file or folder)")
    p.add_argument("--num-images", type=int, default=32, help="held-out images (default 32, at most 32)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds per image (default 0 1)")
    p.add_argument("--tdd-eta", type=float, default=0.0, help="γ-sampling η of the TDD sampler (default 0)")
    p.add_argument("--tdd-lora-scale", type=float, default=1.0,
                   help="strength of the tdd LoRA (default 1 = as trained; like img2vid's --lora-scale)")
    p.add_argument("--adv-lora-scale", type=float, default=1.0, help="strength of the adv LoRA (default 1)")
    p.add_argument("--tdd-grid", type=int, nargs="+", default=None, metavar="IDX",
                   help="custom TDD levels as grid indices on the 250-point grid, noisiest first (e.g. 250 157 94 "
                        "47); used by the tdd@K contender with K = the number of indices (default: S_K)")
    p.add_argument("--tdd-guidance", type=float, default=1.0, help="CFG on TDD students (default 1)")
    p.add_argument("--animatelcm-guidance", type=_pair, default=(1.0, 1.0), help="frame-wise GMIN,GMAX")
    p.add_argument("--batch", type=int, default=16, help="videos per forward (default 16)")
    p.add_argument("--fd-versus", metavar="CONTENDER", default=None,
                   help="also print every row's FD minus this contender's (e.g. animatelcm@4), with a paired "
                        "standard error: a jackknife that leaves one held-out image out of both sets and the "
                        "reference at once, so their shared noise cancels")
    p.add_argument("--out", default="runs/quality", help="folder for quality.json and quality_vs_passes.png")
    p.add_argument("--cache", default="runs/quality_cache",
                   help="folder keeping the teacher's samples between runs ('' = no cache; default runs/quality_cache)")
    p.add_argument("--title", default=None, help="plot title")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def default_contenders(have: dict[str, bool]) -> list[str]:
    out = ["teacher@4", "teacher@8", "teacher@25", "base@4"]
    out += [f"tdd@{k}" for k in (1, 2, 4, 8)] if have["tdd"] else []
    out += [f"animatelcm@{k}" for k in (4, 8)] if have["animatelcm"] else []
    out += [f"adv@{k}" for k in (1, 2, 4)] if have["adv"] else []
    return out


def plot(rows: list[dict], path: Path, title: str | None) -> Path | None:
    """Quality vs UNet passes: same-noise latent MSE and FD, one line per method, ± SE error bars."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    floor = next(r for r in rows if r["contender"] == "teacher@25")
    for ax, key, label in ((axes[0], "latent_mse", "latent MSE to teacher@25 (same noise)"),
                           (axes[1], "fd", "FD to teacher@25 (independent noise)")):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["unet_passes"], r[key], r[f"{key}_se"], r["steps"]) for r in rows
                         if r["method"] == method and not (method == "teacher" and r["steps"] == 25))
            if not pts:
                continue
            xs, ys, es, ks = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
            for x, y, k in zip(xs, ys, ks):
                ax.annotate(f"{k}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if key == "fd":
            ax.axhline(floor["fd"], color="gray", ls="--", lw=1, label="teacher@25 floor")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("UNet passes per video")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, title or f"{floor['pairs']} held-out (image, seed) pairs; labels = sampling steps; "
                                          "± SE")


def save_figure(fig, path: Path, title: str) -> Path:
    """Title, tight layout, write as PNG (110 dpi) and close: the bench plots' common ending."""
    import matplotlib.pyplot as plt
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    from tdd_video.errors import ConfigError
    from tdd_video.eval.compare import zoo_students
    from tdd_video.eval.metrics import json_safe
    from tdd_video.eval.quality import QualityConfig, run_quality
    from tdd_video.families import load_family
    from tdd_video.zoo import is_zoo_name, resolve_model
    model = str(resolve_model(args.model)) if is_zoo_name(args.model) else args.model
    weights = {k: getattr(args, k) for k in ("tdd_lora", "tdd_unet", "animatelcm_lora", "animatelcm_unet",
                                             "adv_lora", "adv_unet")}
    for kind, path in zoo_students(model).items():
        if not weights.get(f"{kind}_lora") and not weights.get(f"{kind}_unet"):
            weights[f"{kind}_lora"] = path
    have = {k: bool(weights[f"{k}_lora"] or weights[f"{k}_unet"]) for k in ("tdd", "animatelcm", "adv")}
    cfg = QualityConfig(contenders=args.contenders or default_contenders(have), num_images=args.num_images,
                        seeds=list(args.seeds), batch=args.batch, tdd_eta=args.tdd_eta,
                        tdd_lora_scale=args.tdd_lora_scale, adv_lora_scale=args.adv_lora_scale, tdd_grid=args.tdd_grid,
                        tdd_guidance=args.tdd_guidance, animatelcm_guidance=args.animatelcm_guidance,
                        progress=not args.quiet, cache_dir=args.cache or None, fd_versus=args.fd_versus,
                        model_dir=model, **weights)
    t0 = time.time()
    try:
        family = load_family("svd", model)
        rows = run_quality(cfg, family, log=(lambda m: None) if args.quiet else
                           (lambda m: print(f"[{time.time() - t0:6.0f} s] {m}", file=sys.stderr, flush=True)))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = {"model": model, "weights": {k: v for k, v in weights.items() if v}, "tdd_eta": args.tdd_eta,
            "tdd_lora_scale": args.tdd_lora_scale, "tdd_grid": args.tdd_grid, "adv_lora_scale": args.adv_lora_scale,
            "tdd_guidance": args.tdd_guidance, "wall_s": round(time.time() - t0, 1),
            "loadavg_1min": round(os.getloadavg()[0], 2)}
    for row in rows:
        print(json.dumps(json_safe({"bench": "quality", **{k: v for k, v in row.items() if k != "image_names"},
                                    **({"meta": meta} if row is rows[0] else {})})), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(json_safe({"meta": meta, "rows": rows}), indent=1))
    png = plot(rows, out / "quality_vs_passes.png", args.title)
    print(json.dumps({"bench": "quality_files", "json": str(out / "quality.json"), "plot": str(png) if png else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
