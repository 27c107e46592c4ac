#!/usr/bin/env python
"""ZeRO at real size on CPU: one TDD training step of the real SVD-xt UNet (1.5 B params, random bf16 weights)
with `trainable.kind=spatial` (and `lora` for reference) under plain 1 rank, ZeRO-2 ×2, ZeRO-3 ×2 and
ZeRO-3 + CPU offload ×2 (gloo, OMP_NUM_THREADS=1 per rank). One JSON line per (kind, layout, rank):

  python bench/bench_zero_real.py                                   # every case that fits, 2 steps each
  python bench/bench_zero_real.py --kinds spatial --layouts zero3   # one case
  python bench/bench_zero_real.py --unet toy --kinds lora --layouts zero2 zero3 zero3_persist --steps 12 --profile
                                                                    # where a ZeRO-3 step's time goes (toy UNet)

Every rank runs the real trainer (tdd_video.engine.trainer.train) with the DeepSpeed backend from
configs/deepspeed/*.json on an SVDFamily whose conditioning comes precomputed with the batch (no VAE / CLIP:
they are not trained); latents 8×8 (64 px, the smallest size that runs every block), 4 frames, batch 1 per
rank, bf16 (DeepSpeed keeps fp32 master weights and AdamW moments for the trainable part). Per rank:
* params_bytes_student / params_bytes_teacher: bytes of weights this rank holds for the student (LoRA: base +
  adapters) and for the frozen teacher copy that `spatial` needs (0 for LoRA); ZeRO-3 partitions both;
* optimizer_bytes: AdamW moments + fp32 master partitions held by this rank;
* rss_*_gb: resident memory after building the model, after the DeepSpeed setup, and the peak (ru_maxrss);
  gradients live between backward and step and are part of the peak;
* step_s: wall time of every step after the first (the first one builds buffers);
* with --profile: rank 0 runs under cProfile and the row gets `profile`: seconds per step by where they
  are spent (self time, summed by source): `zero3_python` = DeepSpeed's ZeRO-3 parameter coordination
  (deepspeed/runtime/zero: fetch / release / partition hooks around every submodule), `collectives` = c10d
  calls and waits (gloo all-gather / reduce-scatter), `hooks` = torch.nn.Module hook dispatch, `compute` =
  the rest of torch and C built-ins, `other_python` = everything else; plus `allgather_calls` (calls of any
  c10d all-gather function, wrappers included) and submodule fetches per step, and the 12 largest self times.
A case that does not fit in memory is reported as `"fits": false` with how far it got (`reached`: per rank the RSS
after building the model, the steps logged, and the anonymous RSS at the OOM kill when `dmesg` is readable).

--unet toy runs the same with the zoo teacher's UNet (tdd_video/zoo/toy-svd, 3.6 M params, 32×32 px,
8 frames): there a step is short, so the per-submodule cost of ZeRO-3 is what the profile shows.
Layout `zero3_persist` is `zero3.json` with stage3_param_persistence_threshold raised to 1e7 (parameters below
10 M elements are meant to stay whole on every rank) — the configuration lever DeepSpeed offers for small or
many-module models; on the toy it changed neither the collective count nor the step time (docs/zero.md).
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
LAYOUTS = {"plain": None, "zero2": "zero2.json", "zero3": "zero3.json", "zero3_offload": "zero3_offload.json",
           "zero3_persist": "zero3.json"}
PERSIST = {"zero3_persist": 10_000_000}       # layout -> stage3_param_persistence_threshold override


def layout_config(layout: str, out: Path) -> str | None:
    """Path of the DeepSpeed JSON for `layout` (a patched copy in `out` for the override layouts)."""
    if LAYOUTS[layout] is None:
        return None
    src = ROOT / "configs" / "deepspeed" / LAYOUTS[layout]
    if layout not in PERSIST:
        return str(src)
    ds = json.loads(src.read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = PERSIST[layout]
    dst = out / f"{layout}.json"
    dst.write_text(json.dumps(ds, indent=1))
    return str(dst)


def profile_summary(stats, steps: int) -> dict:
    """Self time per step by source (see the module docstring) and collective call counts."""
    buckets = {"zero3_python": 0.0, "collectives": 0.0, "hooks": 0.0, "compute": 0.0, "other_python": 0.0}
    gathers = fetches = 0
    for (file, _line, func), (_cc, nc, tt, _ct, _callers) in stats.stats.items():
        collective = "c10d" in f"{file}:{func}" or "torch/distributed" in file
        if "deepspeed/runtime/zero" in file:
            buckets["zero3_python"] += tt
        elif collective:
            buckets["collectives"] += tt
        elif "torch/nn/modules/module.py" in file and "call_impl" in func:
            buckets["hooks"] += tt
        elif file == "~" or "torch" in file:
            buckets["compute"] += tt
        else:
            buckets["other_python"] += tt
        if collective and "all_gather" in func:
            gathers += nc
        if func == "fetch_sub_module":
            fetches += nc
    per = max(steps, 1)
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:12]
    top = [{"where": f"{Path(f).name}:{fn}", "self_s": round(v[2] / per, 4), "calls": round(v[1] / per, 1)}
           for (f, _l, fn), v in top]
    return {**{k: round(v / per, 4) for k, v in buckets.items()}, "top_self": top,
            "allgather_calls": round(gathers / per, 1), "submodule_fetches": round(fetches / per, 1)}


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

    prof = None
    if a.profile and int(os.environ.get("RANK", "0")) == 0:
        import cProfile
        prof = cProfile.Profile()

    class Loader:
        def __init__(self):
            self.pos = 0

        def infinite(self):
            while True:
                if self.pos == 1 and prof is not None:      # profile from the second step on
                    prof.enable()
                g = torch.Generator().manual_seed(self.pos)
                self.pos += 1
                h = a.px // 8
                yield {"latents": torch.randn(1, a.frames, 4, h, h, generator=g),
                       "image_emb": torch.randn(1, 1, emb_dim, generator=g),
                       "cond_latent": torch.randn(1, 4, h, h, generator=g),
                       "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]])}

        def state_dict(self):
            return {"pos": self.pos}

        def load_state_dict(self, s):
            self.pos = s["pos"]

    if a.unet == "toy":
        from diffusers import UNetSpatioTemporalConditionModel

        from tdd_video.zoo import zoo_path
        unet = UNetSpatioTemporalConditionModel.from_pretrained(zoo_path("toy-svd") / "unet").to(torch.bfloat16)
    else:
        unet = real_svd_unet(torch.bfloat16)
    emb_dim = unet.config.cross_attention_dim
    fam = PrecomputedFamily(unet, torch.nn.Identity(), torch.nn.Identity(), None)
    marks["rss_after_build_gb"] = round(current_rss_gb(), 3)
    progress = Path(a.out, f"progress_rank{os.environ.get('RANK', '0')}.json")
    progress.write_text(json.dumps({"pid": os.getpid(), **marks}))
    backend = "plain" if a.layout == "plain" else "deepspeed"
    cfg = config_from_dict({
        "run": {"output_dir": a.out, "seed": 0}, "model": {"dtype": "bf16"},
        "trainable": {"kind": a.kind, "lora_rank": 8 if a.unet == "toy" else 64, "lora_preset": "attn"},
        "method": {"guidance_min_range": [1.0, 1.0], "guidance_max_range": [3.0, 3.0], "p_uncond": 0.0},
        "train": {"backend": backend, "max_steps": a.steps, "lr": 1e-5, "checkpoint_every": 0, "tensorboard": False,
                  "log_every": 1,
                  "progress": False, "mixed_precision": "bf16" if backend == "deepspeed" else "no",
                  "deepspeed_config": layout_config(a.layout, Path(a.out))},
        "export": {"lora": False}, "data": {"path": "synthetic", "batch_size": 1, "num_frames": a.frames}})
    t0 = time.perf_counter()
    out = train(cfg, family=fam, loader=Loader())
    wall = time.perf_counter() - t0
    profile = None
    if prof is not None:
        import pstats
        prof.disable()
        profile = profile_summary(pstats.Stats(prof), a.steps - 1)
    rows = step_rows(Path(a.out))
    world = out["world_size"]
    step_s = [round(world / r["samples_per_s"], 3) for r in rows][1:]
    rank = out["rank"]
    result = {"bench": "zero_real", "kind": a.kind, "layout": a.layout, "rank": rank, "world_size": world,
              "trainable_params": out["trainable_params"], "params_bytes_student": out["weights_bytes_held"]["student"],
              "params_bytes_teacher": out["weights_bytes_held"]["teacher"],
              "optimizer_bytes": out["optimizer_state_bytes"], **marks, "peak_rss_gb": round(rss_gb(), 3),
              "step_s": step_s, "wall_s": round(wall, 1), "px": a.px, "frames": a.frames, "unet": a.unet}
    if profile is not None:
        result["profile"] = profile
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
            "--px", str(a.px), "--frames", str(a.frames), "--unet", a.unet] + (["--profile"] if a.profile else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    if layout == "plain":
        cmd = [sys.executable, *args]
    else:
        cmd = [shutil.which("deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=a.timeout)
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("result_rank*.json"))]
    if not rows:
        reached = how_far(out)
        killed = ("Killed" in proc.stderr or proc.returncode in (-9, 137, 247) or "MemoryError" in proc.stderr
                  or "return code = -9" in proc.stderr or any("oom_killed_anon_rss_gb" in r for r in reached))
        rows = [{"bench": "zero_real", "kind": kind, "layout": layout, "fits": False, "returncode": proc.returncode,
                 "out_of_memory": killed, "reached": reached, "wall_s": round(time.perf_counter() - t0, 1),
                 "stderr_tail": proc.stderr[-600:]}]
    return rows


def step_rows(out: Path) -> list[dict]:
    """The per-step rows (those with samples_per_s) of a run's metrics.jsonl; [] before the first step."""
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return [json.loads(line) for line in lines if '"samples_per_s"' in line]


def how_far(out: Path) -> list[dict]:
    """Per rank of a failed case: its RSS after building the model, the steps it logged, and — when the kernel
    log is readable — the anonymous RSS at which the OOM killer ended it."""
    try:
        kernel = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        kernel = ""
    steps = len(step_rows(out))
    reached = []
    for f in sorted(out.glob("progress_rank*.json")):
        r = json.loads(f.read_text())
        row = {"rank": int(f.stem.removeprefix("progress_rank")), "rss_after_build_gb": r["rss_after_build_gb"],
               "steps_logged": steps}
        for line in kernel.splitlines():
            if f"Killed process {r['pid']} " in line and "anon-rss:" in line:
                kb = int(line.split("anon-rss:")[1].split("kB")[0])
                row["oom_killed_anon_rss_gb"] = round(kb * 1024 / 1e9, 2)
        reached.append(row)
    return reached


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
    p.add_argument("--unet", choices=["real", "toy"], default="real",
                   help="real: SVD-xt's UNet with random weights; toy: the zoo teacher's UNet")
    p.add_argument("--px", type=int, default=None, help="frame size in pixels (default 64 real, 32 toy)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default 4 real, 8 toy)")
    p.add_argument("--profile", action="store_true", help="cProfile rank 0 and report where a step's time goes")
    p.add_argument("--out", default="runs/bench_zero_real")
    p.add_argument("--timeout", type=int, default=3600)
    a = p.parse_args(argv)
    a.px = a.px or (32 if a.unet == "toy" else 64)
    a.frames = a.frames or (8 if a.unet == "toy" else 4)
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
