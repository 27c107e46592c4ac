#!/usr/bin/env python
"""ZeRO at real size on CPU: one TDD training step of the real SVD-xt UNet (1.5 B params, random bf16 weights)
with `trainable.kind=spatial` (and `lora` for reference) under plain 1 rank, ZeRO-2 ×2, ZeRO-3 ×2 and
ZeRO-3 + CPU offload ×2 (gloo, OMP_NUM_THREADS=1 per rank). One JSON line per (kind, layout, rank):

  python bench/bench_zero_real.py                                   # every case that fits, 2 steps each
  python bench/bench_zero_real.py --kinds spatial --layouts zero3   # one case
  python bench/bench_zero_real.py --toy                             # ZeRO-3 step cost on the toy recipe

Every rank runs the real trainer (tdd_video.engine.trainer.train) with the DeepSpeed backend from
configs/deepspeed/*.json on an SVDFamily whose conditioning comes precomputed with the batch (no VAE / CLIP:
they are not trained); latents 8×8 (64 px, the smallest size that runs every block), 4 frames, batch 1 per
rank, bf16 (DeepSpeed keeps fp32 master weights and AdamW moments for the trainable part). Per rank:
* params_bytes: bytes of the student's parameters this rank holds (ZeRO-3: its partitions), plus the frozen
  teacher copy that `spatial` needs (a plain module on every rank: ZeRO does not shard it);
* optimizer_bytes: AdamW moments + fp32 master partitions held by this rank;
* rss_*_gb: resident memory after building the model, after the DeepSpeed setup, and the peak (ru_maxrss);
  gradients live between backward and step and are part of the peak;
* step_s: wall time of the second step (the first one builds buffers).
A case that does not fit in memory is reported as `"fits": false` with how far it got.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"plain": None, "zero2": "zero2.json", "zero3": "zero3.json", "zero3_offload": "zero3_offload.json"}


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 ** 3


def worker(a) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_memory import real_svd_unet

    from tdd_video.engine.config import config_from_dict
    from tdd_video.engine.trainer import train
    from tdd_video.families.svd import SVDConditioning, SVDFamily

    torch.set_num_threads(1)
    marks = {"rss_start_gb": round(current_rss_gb(), 3)}

    class PrecomputedFamily(SVDFamily):
        def encode_conditioning(self, batch, generator=None, train=True, **kw):
            return SVDConditioning(image_emb=batch["image_emb"], cond_latent=batch["cond_latent"],
                                   added_time_ids=batch["added_time_ids"])

    class Loader:
        def __init__(self):
            self.pos = 0

        def infinite(self):
            while True:
                g = torch.Generator().manual_seed(self.pos)
                self.pos += 1
                h = a.px // 8
                yield {"latents": torch.randn(1, a.frames, 4, h, h, generator=g),
                       "image_emb": torch.randn(1, 1, 1024, generator=g),
                       "cond_latent": torch.randn(1, 4, h, h, generator=g),
                       "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]])}

        def state_dict(self):
            return {"pos": self.pos}

        def load_state_dict(self, s):
            self.pos = s["pos"]

    unet = real_svd_unet(torch.bfloat16)
    fam = PrecomputedFamily(unet, torch.nn.Identity(), torch.nn.Identity(), None)
    marks["rss_after_build_gb"] = round(current_rss_gb(), 3)
    backend = "plain" if a.layout == "plain" else "deepspeed"
    cfg = config_from_dict({
        "run": {"output_dir": a.out, "seed": 0}, "model": {"dtype": "bf16"},
        "trainable": {"kind": a.kind, "lora_rank": 64, "lora_preset": "attn"},
        "method": {"guidance_min_range": [1.0, 1.0], "guidance_max_range": [3.0, 3.0], "p_uncond": 0.0},
        "train": {"backend": backend, "max_steps": a.steps, "lr": 1e-5, "checkpoint_every": 0, "tensorboard": False,
                  "progress": False, "mixed_precision": "bf16" if backend == "deepspeed" else "no",
                  "deepspeed_config": str(ROOT / "configs" / "deepspeed" / LAYOUTS[a.layout]) if LAYOUTS[a.layout]
                  else None},
        "export": {"lora": False}, "data": {"path": "synthetic", "batch_size": 1, "num_frames": a.frames}})
    t0 = time.perf_counter()
    out = train(cfg, family=fam, loader=Loader())
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (Path(a.out) / "metrics.jsonl").read_text().splitlines()
            if '"samples_per_s"' in line] if (Path(a.out) / "metrics.jsonl").is_file() else []
    world = out["world_size"]
    step_s = [round(world / r["samples_per_s"], 2) for r in rows]
    params = 0
    for p in fam.unet.parameters():
        t = getattr(p, "ds_tensor", None)
        params += (t.numel() * t.element_size()) if t is not None else p.numel() * p.element_size()
    rank = out["rank"]
    result = {"bench": "zero_real", "kind": a.kind, "layout": a.layout, "rank": rank, "world_size": world,
              "trainable_params": out["trainable_params"], "params_bytes_student": params,
              "optimizer_bytes": out["optimizer_state_bytes"], **marks, "peak_rss_gb": round(rss_gb(), 3),
              "step_s": step_s, "wall_s": round(wall, 1), "px": a.px, "frames": a.frames}
    Path(a.out, f"result_rank{rank}.json").write_text(json.dumps(result))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(kind: str, layout: str, a) -> list[dict]:
    out = Path(a.out) / f"{kind}_{layout}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = [__file__, "--worker", "--kind", kind, "--layout", layout, "--out", str(out), "--steps", str(a.steps),
            "--px", str(a.px), "--frames", str(a.frames)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    if layout == "plain":
        cmd = [sys.executable, *args]
    else:
        cmd = [shutil.which("deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=a.timeout)
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("result_rank*.json"))]
    if not rows:
        killed = "Killed" in proc.stderr or proc.returncode in (-9, 137) or "MemoryError" in proc.stderr
        rows = [{"bench": "zero_real", "kind": kind, "layout": layout, "fits": False, "returncode": proc.returncode,
                 "out_of_memory": killed, "wall_s": round(time.perf_counter() - t0, 1),
                 "stderr_tail": proc.stderr[-600:]}]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--kind", default="spatial", help=argparse.SUPPRESS)
    p.add_argument("--layout", default="plain", help=argparse.SUPPRESS)
    p.add_argument("--kinds", nargs="+", default=["lora", "spatial"], choices=["lora", "spatial", "full"])
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--px", type=int, default=64)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--out", default="runs/bench_zero_real")
    p.add_argument("--timeout", type=int, default=3600)
    a = p.parse_args(argv)
    if a.worker:
        worker(a)
        return 0
    for kind in a.kinds:
        for layout in a.layouts:
            for row in run_case(kind, layout, a):
                print(json.dumps({**row, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
