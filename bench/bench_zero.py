#!/usr/bin/env python
"""2-rank DeepSpeed ZeRO-2 / ZeRO-3 TDD runs on CPU (gloo): does training progress, is the optimizer
state sharded, and does it track a plain 1-process run of the same recipe?

  OMP_NUM_THREADS=1 python bench/bench_zero.py                          # 1000 steps: plain, ZeRO-2, ZeRO-3
  python bench/bench_zero.py --steps 300 --metric-every 25 --runs zero2     # quicker look
  python bench/bench_zero.py --config configs/toy/tdd_svd_zoo.yaml --runs zero2   # the zoo student's recipe

Every run is the real CLI: `deepspeed --num_gpus 2 train/distill_svd.py --config RECIPE
train.backend=deepspeed train.deepspeed_config=configs/deepspeed/zeroS.json …` (OMP_NUM_THREADS=1 and
DS_ACCELERATOR=cpu per rank), or `python train/distill_svd.py …` for the plain run. Recipe (--config):
the zoo teacher toy-svd (32×32 px, 8 frames), rank-8 LoRA, lr 5e-4, global batch 2 (2 ranks × 1, or
1 process × 2), fp32; data: the tiny recipe's 16 synthetic clips, or the zoo recipe's 1024 clips
(runs/pretrain_toy_svd/data, written by tools/zoo/build_svd.py). A run that hangs is killed after
--timeout s (ZeRO-3 needs every rank to call the network equally often; methods/tdd.py and animatelcm.py \
never skip a forward on data-dependent conditions).

Progress is measured by the distillation distance (validation.metric_every, engine/validation.py):
latent MSE of the student's K-step sample (TDD sampler, η = `--eta`, g = 1) to the teacher's 25-step
Euler + frame-wise CFG 1 → 3 sample from the same noise (bench_zoo_quality's reference), on one
conditioning image × `--seeds`, logged during training; and, for the exported LoRA at the end, the
same distance on bench_zoo_quality's 4 images × 4 seeds (comparable with its table; the zero LoRA's
value there is the starting point). The consistency loss is reported too but it is not a progress measure
for TDD with an online target (it starts near 0 because student = teacher).

Optimizer state per rank: tensor bytes (AdamW moments + fp32 master partition, scalars excluded) in
each rank's `*optim_states.pt` of the final checkpoint, vs a short 1-rank run of the same stage
(`--opt-steps` steps). One JSON line per run, then a summary line.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "toy" / "tdd_svd_tiny.yaml"


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(run: str, world: int, steps: int, out: Path, a) -> list[str]:
    """The CLI command of one run: run = 'plain' | 'zero2' | 'zero3'."""
    keys = [f"run.output_dir={out}", f"train.max_steps={steps}", "train.progress=false", "train.checkpoint_every=0",
            "train.log_every=10", "validation.every=0", f"validation.eta={a.eta}", "validation.num_images=1",
            f"validation.seeds={json.dumps(a.seeds)}", f"validation.steps={json.dumps(a.k)}"]
    main_run = steps > a.opt_steps
    keys += [f"validation.metric_every={a.metric_every if main_run else 0}", f"export.lora={str(main_run).lower()}"]
    keys += list(a.overrides)
    if run == "plain":
        return [sys.executable, str(ROOT / "train" / "distill_svd.py"), "--config", str(a.config), *keys,
                "train.backend=plain", f"data.batch_size={a.global_batch}"]
    ds = ROOT / "configs" / "deepspeed" / f"{run}.json"
    return ["deepspeed", "--num_gpus", str(world), "--master_port", str(free_port()),
            str(ROOT / "train" / "distill_svd.py"), "--config", str(a.config), *keys, "train.backend=deepspeed",
            f"train.deepspeed_config={ds}", f"data.batch_size={a.global_batch // world}"]


def optimizer_bytes(run_dir: Path) -> list[int]:
    """Per-rank optimizer tensor bytes (ndim > 0) from the last checkpoint: DeepSpeed shards or optimizer.pt."""
    import torch
    ckpts = sorted((run_dir / "checkpoints").glob("step_*"))
    if not ckpts:
        return []
    files = sorted((ckpts[-1] / "deepspeed").glob("*optim_states.pt")) or [ckpts[-1] / "optimizer.pt"]

    def size(o) -> int:
        if torch.is_tensor(o):
            return o.numel() * o.element_size() if o.ndim > 0 else 0
        if isinstance(o, dict):
            return sum(size(v) for k, v in o.items() if k != "scheduler")
        if isinstance(o, (list, tuple)):
            return sum(size(v) for v in o)
        return 0
    return [size(torch.load(f, map_location="cpu", weights_only=False)) for f in files if f.is_file()]


def read_metrics(run_dir: Path) -> tuple[list[float], list[dict]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    dist = [{k: (round(v, 6) if k != "step" else v) for k, v in r.items()} for r in rows
            if any(k.startswith("val/") for k in r)]
    return losses, dist


def held_out_distance(lora: str | None, a) -> dict:
    """bench_zoo_quality's images (sample image + 3 held-out synthetic first frames) × its seeds 0–3:
    latent MSE of tdd@K (this LoRA, η = --eta, g = 1) to teacher@25 (Euler, CFG 1 → 3). lora None: a
    zero-initialised rank-8 LoRA, i.e. the teacher under the TDD sampler (= what training starts from)."""
    import tempfile

    from tdd_video.eval.compare import CompareConfig, run_compare
    from tdd_video.zoo import resolve_model
    model = str(resolve_model("toy-svd"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_zero_"))
    if lora is None:
        from tdd_video import lora as lora_api
        from tdd_video.families import load_family
        fam = load_family("svd", model)
        lora_api.add_lora(fam.unet, "student", rank=8, alpha=8, preset="attn")
        lora = str(lora_api.save_lora(fam.unet, tmp / "zero", adapter="student", family="svd"))
    cfg = CompareConfig(contenders=["teacher@25", *[f"tdd@{k}" for k in a.k]], model=model, tdd_lora=lora,
                        seeds=[0, 1, 2, 3], num_default_images=4, out=str(tmp / "compare"), tdd_guidance=1.0,
                        tdd_eta=a.eta, progress=False)
    return {f"k{r['steps']}": round(r["latent_mse"], 5) for r in run_compare(cfg).rows if r["method"] == "tdd"}


def run_once(run: str, world: int, steps: int, a) -> dict:
    out = Path(a.out) / f"{run}_w{world}_s{steps}"
    if out.exists():
        import shutil
        shutil.rmtree(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = command(run, world, steps, out, a)
    start = time.perf_counter()
    log = Path(a.out) / f"{out.name}.log"
    with open(log, "w") as fh:          # own session: a hung run is killed with all its ranks
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            rc = "timeout"
    wall = time.perf_counter() - start
    if rc != 0:
        losses, dist = read_metrics(out) if (out / "metrics.jsonl").is_file() else ([], [])
        return {"run": run, "world_size": world, "steps": steps, "error": rc, "wall_s": round(wall, 1),
                "steps_done": len(losses), "distance": dist, "tail": log.read_text()[-1500:]}
    losses, dist = read_metrics(out)
    w = min(a.window, max(1, len(losses) // 2))
    rates = [json.loads(line)["samples_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"samples_per_s"' in line][3:]
    row = {"run": run, "stage": {"plain": None, "zero2": 2, "zero3": 3}[run], "world_size": world, "steps": steps,
           "wall_s": round(wall, 1),
           "step_s_median": round(a.global_batch / statistics.median(rates), 3) if rates else None,
           "loss_window": w, "loss_first_mean": statistics.fmean(losses[:w]),
           "loss_last_mean": statistics.fmean(losses[-w:]),
           "loss_first_median": statistics.median(losses[:w]), "loss_last_median": statistics.median(losses[-w:]),
           "optimizer_bytes_per_rank": optimizer_bytes(out), "command": " ".join(cmd)}
    lora = sorted((out / "export" / "lora").glob("*.safetensors"))
    if a.held_out and lora:
        row["held_out"] = held_out_distance(str(lora[0]), a)
    if dist:
        row["distance"] = dist
        for k in a.k:
            key = f"val/mse_to_teacher_k{k}"
            row[f"k{k}_start"], row[f"k{k}_end"] = dist[0][key], dist[-1][key]
            row[f"k{k}_change_pct"] = round(100 * (dist[-1][key] / dist[0][key] - 1), 2)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=["plain", "zero2", "zero3"], choices=["plain", "zero2", "zero3"])
    p.add_argument("--config", default=str(RECIPE), help="recipe (configs/toy/tdd_svd_zoo.yaml: the zoo student's, "
                   "1024 clips from tools/zoo/build_svd.py; default: the tiny recipe, 16 synthetic clips)")
    p.add_argument("--steps", type=int, default=1000, help="the zoo student's budget (1000 steps, batch 2)")
    p.add_argument("--metric-every", type=int, default=100)
    p.add_argument("--window", type=int, default=50, help="loss means over the first / last this many steps")
    p.add_argument("--k", type=int, nargs="+", default=[4, 8], help="student steps of the distance")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--eta", type=float, default=0.0, help="TDD sampler η of the distance (0: deterministic)")
    p.add_argument("--global-batch", type=int, default=2)
    p.add_argument("--opt-steps", type=int, default=2, help="steps of the 1-rank runs (optimizer bytes only)")
    p.add_argument("--timeout", type=float, default=5400, help="seconds before a run is killed (all its ranks)")
    p.add_argument("--no-held-out", dest="held_out", action="store_false",
                   help="skip the held-out distance of the exported LoRAs (bench_zoo_quality's images and seeds)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[],
                   help="extra dotted recipe overrides for every run, e.g. --set train.lr_schedule=cosine")
    p.add_argument("--out", default="runs/bench_zero")
    a = p.parse_args(argv)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    if a.held_out:
        emit(bench="zero_held_out_start", note="zero LoRA = the teacher under the TDD sampler",
             **held_out_distance(None, a))
    rows = []
    for run in a.runs:
        row = run_once(run, 1 if run == "plain" else 2, a.steps, a)
        if run != "plain" and "error" not in row:
            one = run_once(run, 1, a.opt_steps, a)
            row["optimizer_bytes_1rank"] = one.get("optimizer_bytes_per_rank")
            if one.get("optimizer_bytes_per_rank") and row["optimizer_bytes_per_rank"]:
                row["optimizer_ratio_per_rank"] = round(max(row["optimizer_bytes_per_rank"])
                                                        / one["optimizer_bytes_per_rank"][0], 4)
        emit(bench="zero", **row)
        rows.append(row)
    ok = [r for r in rows if "error" not in r and "distance" in r]
    failed = {r["run"]: {"error": r["error"], "steps_done": r["steps_done"]} for r in rows if "error" in r}
    summary = {f"{r['run']}_k{k}": [r[f"k{k}_start"], r[f"k{k}_end"]] for r in ok for k in a.k}
    emit(bench="zero_summary", steps=a.steps, eta=a.eta, seeds=a.seeds, loadavg_1min=round(os.getloadavg()[0], 2),
         distance_start_end=summary, failed=failed,
         falls={f"{r['run']}_k{k}": r[f"k{k}_end"] < r[f"k{k}_start"] for r in ok for k in a.k})
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
