#!/usr/bin/env python
"""Sampler cost at a scale where the UNet dominates: 4-step TDD vs the teacher's 25-step Euler with
frame-wise CFG, sampler overhead, and the cost of Distillation++ (one JSON line per result).

  OMP_NUM_THREADS=1 python bench/bench_sampler.py                       # real-size SVD UNet, bf16, 64x64x8
  python bench/bench_sampler.py --size mid --dtype fp32 --frames 8       # a mid-size UNet instead

The UNet has the real SVD-xt configuration (1.5 B parameters) with RANDOM weights: speed, not quality.
All runs use the same process, model, latents and conditioning. Definitions:
* passes: per-sample-batch UNet evaluations (a batched CFG forward of 2B counts 2, as the stock pipeline's 50);
* t_pass(B), t_pass(2B): median wall time of one bare UNet forward at batch B and 2B;
* overhead = denoising wall time / Σ(bare forward time of the calls made)  (target ≤ 1.05);
* overhead_in_loop = denoising wall time / time spent inside the UNet's forward during that run
  (measured with forward hooks in the same run, so it is robust to load changes on a shared machine);
* ideal speed-up = teacher passes / TDD passes; time-ideal = 25·t_pass(2B) / (4·t_pass(B)).
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

SIZES = {"real": {}, "mid": dict(block_out_channels=(128, 256, 512, 512), num_attention_heads=(2, 4, 8, 8),
                                 cross_attention_dim=1024)}


def emit(**kw):
    print(json.dumps({**kw, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)


def build_family(size: str, dtype: torch.dtype, frames: int):
    from diffusers import UNetSpatioTemporalConditionModel

    from tdd_video.families.svd import SVDFamily
    from tdd_video.families.tiny import tiny_clip_image_processor, tiny_clip_vision, tiny_svd_vae
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)           # build directly in the bench dtype (real size: 3 GB in bf16)
    try:
        torch.manual_seed(0)
        unet = UNetSpatioTemporalConditionModel(num_frames=frames, **SIZES[size]).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(prev)
    return SVDFamily(unet, tiny_svd_vae(0), tiny_clip_vision(0), tiny_clip_image_processor())


class UNetClock:
    """Accumulates wall time spent inside `module.forward` (forward pre/post hooks)."""

    def __init__(self, module):
        self.total, self._t = 0.0, None
        module.register_forward_pre_hook(lambda m, a: setattr(self, "_t", time.perf_counter()))
        module.register_forward_hook(lambda m, a, o: setattr(self, "total", self.total + time.perf_counter() - self._t))

    def since(self, mark: float) -> float:
        return self.total - mark


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="real")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--pixels", type=int, default=64, help="square frame size in pixels (latents = pixels/8)")
    p.add_argument("--teacher-steps", type=int, default=25)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="repeats of the bare forward and TDD runs (median)")
    p.add_argument("--lora-rank", type=int, default=64)
    args = p.parse_args(argv)
    from diffusers import EulerDiscreteScheduler

    from tdd_video import lora
    from tdd_video.core import framewise_scale
    from tdd_video.families.svd import SVDConditioning
    from tdd_video.sampling.refine import RefineSettings
    from tdd_video.sampling.sample import SamplingStats, guided_denoise, sample

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    t0 = time.perf_counter()
    fam = build_family(args.size, dtype, args.frames)
    n_params = sum(p.numel() for p in fam.unet.parameters())
    emit(bench="sampler", what="setup", unet_params=n_params, size=args.size, dtype=args.dtype, frames=args.frames,
         pixels=args.pixels, threads=torch.get_num_threads(), build_s=round(time.perf_counter() - t0, 1))
    b, f, h = 1, args.frames, args.pixels // 8
    g = torch.Generator().manual_seed(0)
    cond = SVDConditioning(image_emb=torch.randn(b, 1, 1024, generator=g),
                           cond_latent=torch.randn(b, 4, h, h, generator=g),
                           added_time_ids=torch.tensor([[6.0, 127.0, 0.02]]).repeat(b, 1))
    null = fam.null_conditioning(cond)
    noise = torch.randn(b, f, 4, h, h, generator=g)

    # bare UNet forward time at batch B and 2B (what the sampler cannot avoid)
    def bare(batch):
        x = torch.randn(batch, f, 8, h, h).to(dtype)
        emb = torch.randn(batch, 1, 1024).to(dtype)
        ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(batch, 1)
        t = torch.full((batch,), 0.5)
        return lambda: fam.unet(x, t, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)
    with torch.no_grad():
        bare(b)()                                          # warm-up
        t_b = statistics.median(timed(bare(b), args.repeats))
        t_2b = statistics.median(timed(bare(2 * b), args.repeats))
    emit(bench="sampler", what="unet_forward", t_pass_B_s=round(t_b, 4), t_pass_2B_s=round(t_2b, 4),
         cfg_batch_ratio=round(t_2b / t_b, 3))

    clock = UNetClock(fam.unet)

    # TDD student, 4 steps, guidance 1 (one pass per step); the fused-LoRA student costs what the base costs
    def tdd(refine=None, stats=None):
        return sample(fam, cond, null, steps=args.steps, eta=0.3, guidance=1.0, latents=noise, refine=refine,
                      generator=torch.Generator().manual_seed(1), progress=False, stats=stats)
    st = SamplingStats()
    mark = clock.total
    tdd_times = timed(lambda: tdd(stats=st), args.repeats)
    t_tdd = statistics.median(tdd_times)
    passes_tdd = st.unet_passes // args.repeats
    emit(bench="sampler", what="tdd", steps=args.steps, unet_passes=passes_tdd, wall_s=round(t_tdd, 3),
         wall_all_repeats_s=[round(t, 3) for t in tdd_times], overhead=round(t_tdd / (passes_tdd * t_b), 4),
         overhead_in_loop=round(sum(tdd_times) / clock.since(mark), 4))

    # teacher: diffusers' Euler on the Karras σ schedule, frame-wise CFG 1→3 batched (2B) — the stock recipe
    euler = EulerDiscreteScheduler.from_config(fam.scheduler_config, prediction_type="sample")
    scale = framewise_scale(1.0, 3.0, f, ndim=5)

    def teacher(stats):
        euler.set_timesteps(args.teacher_steps)
        euler.set_begin_index(0)
        x = noise * euler.init_noise_sigma
        with torch.no_grad():
            for i, t in enumerate(euler.timesteps):
                u = fam.schedule.u_of_sigma(euler.sigmas[i].double()).reshape(1).expand(b)
                euler.scale_model_input(x, t)
                x0 = guided_denoise(fam, x, u, cond, null, scale, stats=stats)
                x = euler.step(x0, t, x).prev_sample
        return x
    st_t = SamplingStats()
    mark = clock.total
    t_teacher = timed(lambda: teacher(st_t), 1)[0]
    emit(bench="sampler", what="teacher_euler_cfg", steps=args.teacher_steps, unet_passes=st_t.unet_passes,
         wall_s=round(t_teacher, 3), overhead=round(t_teacher / (args.teacher_steps * t_2b), 4),
         overhead_in_loop=round(t_teacher / clock.since(mark), 4))
    emit(bench="sampler", what="speedup", tdd_steps=args.steps, teacher_steps=args.teacher_steps,
         speedup=round(t_teacher / t_tdd, 2), ideal_from_passes=round(st_t.unet_passes / passes_tdd, 2),
         ideal_from_pass_times=round(args.teacher_steps * t_2b / (args.steps * t_b), 2))

    # Distillation++: LoRA student (unfused; teacher = adapters disabled), refine 0 / 1 / 2 steps
    lora.add_lora(fam.unet, "student", rank=args.lora_rank, preset="attn", dtype=dtype, trainable=False)
    rows = {}
    for k in (0, 1, 2):
        refine = RefineSettings(strength=0.05, steps=k) if k else None
        stats = SamplingStats()
        rows[k] = (statistics.median(timed(lambda: tdd(refine, stats), max(1, args.repeats - 1))), stats)
    base = rows[0][0]
    for k in (1, 2):
        extra = (rows[k][0] - base) / k
        emit(bench="sampler", what="distillation_pp", lora_rank=args.lora_rank, refine_steps=k,
             wall_s=round(rows[k][0], 3), wall_no_refine_s=round(base, 3), cost_per_refined_step_s=round(extra, 3),
             cost_per_refined_step_in_student_steps=round(extra / (base / args.steps), 2),
             teacher_passes_per_refined_step=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
