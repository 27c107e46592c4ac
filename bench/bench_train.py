#!/usr/bin/env python
"""TDD training-step overhead on the tiny SVD, and batched vs unbatched teacher CFG.

* overhead ratio = time of one full TDD step (method.training_step + backward, LoRA on the shared
  base) / the sum of its network passes measured alone:
  teacher CFG forward on 2B rows + target forward on B rows + student forward+backward on B rows.
  Everything else the step does (target selection, noise, DDIM jumps, adapter switching, loss)
  is the overhead. Target: ≤ 1.10. Because separately timed passes are disturbed differently on
  a shared machine, the same ratio is also measured inside one step (`in_step_overhead_ratio`):
  step time / (UNet forward time, timed by hooks, + backward time).
* CFG: the teacher's guided x0 as ONE forward on [∅; c] (2B rows) vs two forwards of B rows.

Conditioning and latents are encoded once up front (VAE / CLIP encoding is data cost, not step
cost). Timings are the minimum over interleaved repetitions after warm-up (median/min reported as
`noise` — a shared machine disturbs single runs); prints one JSON line each.

  python bench/bench_train.py [--batch 2] [--frames 8] [--reps 15]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from tdd_video.core import cfg as cfg_combine
    from tdd_video.core import framewise_scale
    from tdd_video.engine.trainables import Trainables
    from tdd_video.families import load_family
    from tdd_video.methods import TDD, TDDConfig

    fam = load_family("svd", "tiny")
    nets = Trainables(fam, "lora", lora_rank=8, lora_preset="attn")
    g = torch.Generator().manual_seed(0)
    b, f = a.batch, a.frames
    batch = {"pixel_values": torch.rand(b, f, 3, 64, 64, generator=g) * 2 - 1, "fps_id": torch.full((b,), 6),
             "motion_bucket_id": torch.full((b,), 127)}
    x0 = fam.encode_latents(batch, g)
    cond = fam.encode_conditioning(batch, g, train=True)
    null = fam.null_conditioning(cond)
    method = TDD(TDDConfig(guidance_min_range=[1.0, 1.5], guidance_max_range=[2.0, 3.0]), fam)
    u = torch.full((b,), 0.6, dtype=torch.float64)
    xt = x0 + 3.0 * torch.randn(x0.shape, generator=g)
    w = framewise_scale(torch.full((b,), 1.0), torch.full((b,), 3.0), f)

    def step():
        out = method.training_step(x0, cond, nets, torch.Generator().manual_seed(1))
        out.loss.backward()
        for q in nets.parameters():
            q.grad = None

    def teacher_2b():
        with torch.no_grad(), nets.teacher() as t:
            fam.denoise(torch.cat([xt, xt]), torch.cat([u, u]), null.cat(cond), unet=t)

    def teacher_two_b():
        with torch.no_grad(), nets.teacher() as t:
            cfg_combine(fam.denoise(xt, u, null, unet=t), fam.denoise(xt, u, cond, unet=t), w)

    def target_fwd():
        with torch.no_grad(), nets.target(False) as t:
            fam.denoise(xt, u, cond, unet=t)

    def student_fb():
        with nets.student() as s:
            fam.denoise(xt, u, cond, unet=s).float().square().mean().backward()
        for q in nets.parameters():
            q.grad = None

    # in-step decomposition (robust to machine load): UNet forwards timed by hooks, backward timed
    fwd_time = {"t": 0.0}

    def pre_hook(mod, args, kwargs=None):
        fwd_time["start"] = time.perf_counter()

    def post_hook(mod, args, out):
        fwd_time["t"] += time.perf_counter() - fwd_time["start"]

    def decomposed() -> tuple[float, float]:
        fwd_time["t"] = 0.0
        h1 = fam.unet.register_forward_pre_hook(pre_hook)
        h2 = fam.unet.register_forward_hook(post_hook)
        try:
            t0 = time.perf_counter()
            out = method.training_step(x0, cond, nets, torch.Generator().manual_seed(1))
            tb = time.perf_counter()
            out.loss.backward()
            t1 = time.perf_counter()
        finally:
            h1.remove()
            h2.remove()
        for q in nets.parameters():
            q.grad = None
        return t1 - t0, fwd_time["t"] + (t1 - tb)

    fns = {"step": step, "teacher_2b": teacher_2b, "teacher_unbatched": teacher_two_b, "target": target_fwd,
           "student_fwd_bwd": student_fb}
    for fn in fns.values():   # warm-up
        fn()
    times = {k: [] for k in fns}
    for _ in range(a.reps):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    # min over repetitions: on a shared machine the fastest run is the least disturbed one
    dec = [decomposed() for _ in range(a.reps)]
    in_step_ratio = min(tot / net for tot, net in dec)
    med = {k: min(v) for k, v in times.items()}
    spread = {k: round(statistics.median(v) / min(v), 2) for k, v in times.items()}
    passes = med["teacher_2b"] + med["target"] + med["student_fwd_bwd"]
    common = {"batch": b, "frames": f, "px": 64, "threads": a.threads, "reps": a.reps}
    print(json.dumps({"bench": "tdd_step_overhead", **common, "step_s": round(med["step"], 4),
                      "teacher_2b_s": round(med["teacher_2b"], 4), "target_fwd_s": round(med["target"], 4),
                      "student_fwd_bwd_s": round(med["student_fwd_bwd"], 4), "sum_of_passes_s": round(passes, 4),
                      "overhead_ratio": round(med["step"] / passes, 3),
                      "in_step_overhead_ratio": round(in_step_ratio, 3), "noise_median_over_min": spread}))
    print(json.dumps({"bench": "teacher_cfg", **common, "batched_2b_s": round(med["teacher_2b"], 4),
                      "unbatched_2x_b_s": round(med["teacher_unbatched"], 4),
                      "unbatched_over_batched": round(med["teacher_unbatched"] / med["teacher_2b"], 3)}))


if __name__ == "__main__":
    main()
