#!/usr/bin/env python
"""One row of the TDD recipe study on the toy zoo: train a student with overrides, then measure it.

  OMP_NUM_THREADS=1 python bench/recipe_study.py NAME [--config RECIPE] [--set key=value ...]
  python bench/recipe_study.py attn_r8 --set trainable.lora_rank=8 trainable.lora_preset=attn
  python bench/recipe_study.py full_lr5e-5 --set trainable.kind=full train.lr=5e-5 --eval-only

1. `train/distill_svd.py --config RECIPE run.output_dir=runs/study/NAME <overrides>` with the zoo data
   read from the latent cache (`--cache-data`, built once with tdd-cache-video), resumed if interrupted;
2. `bench/quality.py` on its export (LoRA or full UNet) with the student at 1, 2, 4 and 8 steps
   (TDD sampler, η = `--eta`) on the held-out photos; teacher rows come from the bench's cache;
3. one JSON line, appended to runs/study/study.jsonl and printed: name, overrides, budget (steps ×
   batch, training wall time, trainable params) and the bench rows (mean ± SE of every figure).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="row name; the run goes to runs/study/NAME")
    p.add_argument("--config", default="configs/toy/tdd_svd_zoo.yaml", help="base recipe")
    p.add_argument("--set", nargs="*", default=[], dest="overrides", help="dotted overrides of the recipe")
    p.add_argument("--cache-data", default="runs/cache/toy_svd_zoo",
                   help="latent cache of the zoo clips ('' = read the videos)")
    p.add_argument("--eta", type=float, default=0.0, help="γ-sampling η of the measured student (default 0)")
    p.add_argument("--contenders", nargs="+", default=["tdd@1", "tdd@2", "tdd@4", "tdd@8"])
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--eval-only", action="store_true", help="measure an existing run")
    p.add_argument("--out", default="runs/study", help="study folder (runs and study.jsonl)")
    p.add_argument("--table", action="store_true",
                   help="print the study so far (OUT/study.jsonl) as a Markdown table and exit ('name' is then "
                        "the JSON-lines file to read, or '-' for OUT/study.jsonl)")
    return p.parse_args(argv)


def train(args, run: Path) -> dict:
    if (run / "export").is_dir() and any((run / "export").iterdir()):
        return {"trained_now": False}
    cmd = [sys.executable, str(ROOT / "train" / "distill_svd.py"), "--config", args.config,
           f"run.output_dir={run}", "train.progress=false"]
    if args.cache_data:
        cmd += ["data.use_cache=true", f"data.cache_dir={args.cache_data}"]
    cmd += list(args.overrides)
    if (run / "checkpoints").is_dir():
        cmd += ["--resume", "auto"]
    t0 = time.time()
    with open(run.parent / f"{run.name}.train.log", "a") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if rc != 0:
        raise SystemExit(f"training {run.name} failed (exit {rc}); see {run.parent / (run.name + '.train.log')}")
    return {"trained_now": True, "train_wall_s": round(time.time() - t0, 1)}


def measure(args, run: Path) -> list[dict]:
    exp = run / "export"
    weights = (["--tdd-lora", str(exp / "lora")] if (exp / "lora").is_dir() else ["--tdd-unet", str(exp / "unet")])
    cmd = [sys.executable, str(ROOT / "bench" / "quality.py"), "--model", "toy-svd", *weights, "--contenders",
           *args.contenders, "--tdd-eta", str(args.eta), "--num-images", str(args.num_images), "--seeds",
           *map(str, args.seeds), "--out", str(run / "quality"), "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"bench failed for {run.name}:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if '"bench": "quality"' in line]


def _cell(row: dict, key: str, digits: int = 4) -> str:
    return f"{row[key]:.{digits}f} ± {row[key + '_se']:.{digits}f}"


def table(records: list[dict]) -> str:
    """Markdown: one line per study row (held-out bench at η of the row; mean ± SE)."""
    head = ("| row | change | steps × batch | wall s | MSE@1 | MSE@2 | MSE@4 | MSE@8 | FD@4 | FD@8 | sharp@4 | "
            "motion@4 | in-run MSE@4 min–max |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for d in records:
        r = {x["contender"]: x for x in d["rows"]}
        change = " ".join(o for o in d["overrides"] if not o.startswith(("validation.", "train.checkpoint_every",
                                                                         "train.keep_last"))) or "(zoo recipe)"
        curve = [c[1] for c in d.get("val_curve_step_k4_k8", [])[1:]]
        swing = f"{min(curve):.3f}–{max(curve):.3f}" if curve else "—"
        cells = [d["name"], f"`{change}`", f"{d['steps']} × {d['batch']}", f"{d.get('train_wall_s') or 0:.0f}"]
        cells += [_cell(r[f"tdd@{k}"], "latent_mse") if f"tdd@{k}" in r else "—" for k in (1, 2, 4, 8)]
        cells += [_cell(r[k], "fd", 3) if k in r else "—" for k in ("tdd@4", "tdd@8")]
        cells += [_cell(r["tdd@4"], "sharpness_ratio", 2), _cell(r["tdd@4"], "motion_ratio", 2), swing]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table:
        path = ROOT / args.out / "study.jsonl" if args.name == "-" else Path(args.name)
        print(table([json.loads(line) for line in path.read_text().splitlines() if line.strip()]))
        return 0
    study = ROOT / args.out
    run = study / args.name
    run.mkdir(parents=True, exist_ok=True)
    info = {} if args.eval_only else train(args, run)
    cfg_path = run / "config.yaml"
    import yaml
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    rows = measure(args, run)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] \
        if (run / "metrics.jsonl").is_file() else []
    losses = [m["loss"] for m in metrics if "loss" in m]
    curve = [[m["step"], *(round(m[f"val/mse_to_teacher_k{k}"], 5) for k in (4, 8))] for m in metrics
             if "val/mse_to_teacher_k4" in m and "val/mse_to_teacher_k8" in m]
    record = {"bench": "recipe_study", "name": args.name, "config": args.config, "overrides": args.overrides,
              "steps": cfg.get("train", {}).get("max_steps"), "batch": cfg.get("data", {}).get("batch_size"),
              **info, "final_loss_mean_last_100": (sum(losses[-100:]) / max(1, len(losses[-100:]))) if losses else None,
              "val_curve_step_k4_k8": curve, "eta": args.eta, "loadavg_1min": round(os.getloadavg()[0], 2),
              "rows": [{k: v for k, v in r.items() if k not in ("bench", "meta", "seeds", "method")} for r in rows]}
    with open(study / "study.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
