"""The one sampling loop over a model family (docs/math.md §4–7).

`sample` drives a `TDDScheduler` (or any sampler of `make_sampler`) with the family's denoiser
``D(x, u, c) -> x0`` instead of raw
network outputs, so it adds what a stock pipeline cannot: frame-wise guidance on the student,
Distillation++ teacher refinement and an exact count of UNet passes. With the same starting noise
and settings it produces the same latents as the diffusers pipeline + TDDScheduler (tested).

`scheduler` may be any object with the TDDScheduler sampling protocol: ``set_timesteps(K)``,
``timesteps`` [K], ``u`` (float64 [K+1] levels on the shared time axis, ending at 0),
``init_noise_sigma``, ``num_inference_steps`` and ``step_denoised(x0, t, x, generator)``: the AnimateLCM
sampler (sampling/animatelcm.py) and the teacher's Karras Euler sampler (sampling/euler.py) have it.

UNet passes are counted per sample batch: a guided step (g ≠ 1) is ONE batched forward of 2B
(∅ and c) and counts 2 passes, as the stock pipeline's 25-step CFG run counts 50.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from tdd_video.core.params import DEFAULT_ETA
from tdd_video.errors import ConfigError, check_range
from tdd_video.sampling.animatelcm import AnimateLCMScheduler
from tdd_video.sampling.euler import KarrasEulerSampler
from tdd_video.sampling.guided import Guidance, SamplingStats, guidance_scale, guided_denoise
from tdd_video.sampling.refine import refine_x0
from tdd_video.sampling.scheduler import TDDScheduler

Tensor = torch.Tensor
SAMPLERS = ("tdd", "animatelcm", "euler")


@dataclass
class ClipSettings:
    """x0 clipping (docs/math.md §6): mode 'none' | 'static' | 'dynamic', bound b, quantile q, first `steps` steps."""

    mode: str = "none"
    value: float | None = None
    steps: int = 0
    quantile: float = 0.995


def make_scheduler(family, *, eta: float = DEFAULT_ETA, schedule: str = "equidistant", clip: ClipSettings | None = None,
                   num_grid: int = 250, k_min: int = 4, k_max: int = 8, seed: int = 0) -> TDDScheduler:
    """A TDDScheduler for `family` (from its base scheduler config when it has one)."""
    clip = clip or ClipSettings()
    kw = dict(eta=eta, schedule=schedule, clip_mode=clip.mode, clip_value=clip.value, clip_steps=clip.steps,
              clip_quantile=clip.quantile, num_grid=num_grid, k_min=k_min, k_max=k_max, seed=seed)
    base = getattr(family, "scheduler_config", None)
    if base is not None:
        return TDDScheduler.from_config(dict(base), **kw)
    kind = getattr(family.schedule, "kind", "vp")
    return TDDScheduler(family=kind, prediction_type="v_prediction" if kind == "edm" else "epsilon", **kw)


def make_sampler(family, name: str = "tdd", **tdd_kwargs):
    """The sampler object `sample` drives: 'tdd' (TDDScheduler via make_scheduler(**tdd_kwargs)),
    'animatelcm' (AnimateLCM's multistep sampler, docs/math.md §8) or 'euler' (the teacher's Karras Euler)."""
    if name == "tdd":
        return make_scheduler(family, **tdd_kwargs)
    if name == "animatelcm":
        return AnimateLCMScheduler.for_schedule(family.schedule)
    if name == "euler":
        return KarrasEulerSampler(family.schedule)
    raise ConfigError("sampler", f"got {name!r}, allowed values are {', '.join(SAMPLERS)}")


def sample(family, cond, null_cond=None, *, steps: int = 4, eta: float = DEFAULT_ETA, schedule: str = "equidistant",
           guidance: Guidance = 1.0, clip: ClipSettings | None = None, refine=None,
           generator: torch.Generator | None = None, latents: Tensor | None = None,
           shape: tuple[int, ...] | None = None, progress: bool = True, stats: SamplingStats | None = None,
           scheduler: TDDScheduler | None = None, timesteps: list | None = None) -> Tensor:
    """Few-step TDD sampling (docs/math.md §5) with the family's denoiser. Returns final latents x0 (float32).

    cond / null_cond: the family's Conditioning (null defaults to family.null_conditioning(cond)).
    latents: unit-variance starting noise [B, ...] (like the diffusers pipelines' ``latents``; it is
    multiplied by the scheduler's init_noise_sigma), or drawn from `generator` with `shape`.
    guidance: g (plain CFG on the student; 1 = one forward per step) or (g_min, g_max) frame-wise.
    refine: a `RefineSettings` (Distillation++, docs/math.md §7) or None. `stats` is filled in place.
    scheduler: use this sampler object instead of a TDDScheduler built from (eta, schedule, clip);
    timesteps: custom levels in the scheduler's units instead of `steps`."""
    check_range("steps", steps, 1, None)
    check_range("eta", eta, 0.0, 1.0, hi_open=True)
    sched = scheduler or make_scheduler(family, eta=eta, schedule=schedule, clip=clip)
    if timesteps is not None:
        sched.set_timesteps(timesteps=timesteps)
    else:
        sched.set_timesteps(steps)
    if latents is None:
        if shape is None:
            raise ConfigError("shape", "pass `latents` or the latent `shape` [B, ...] to sample")
        latents = torch.randn(shape, generator=generator, dtype=torch.float32,
                              device=generator.device if generator is not None else "cpu")
    device = getattr(family, "device", latents.device)
    x = latents.to(device, torch.float32) * sched.init_noise_sigma
    null_cond = family.null_conditioning(cond) if null_cond is None else null_cond
    scale = guidance_scale(guidance, x)
    stats = stats if stats is not None else SamplingStats()
    from tqdm.auto import tqdm
    bar = tqdm(total=sched.num_inference_steps, desc="denoise", disable=not progress, leave=False)
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            start = time.perf_counter()
            u = torch.full((x.shape[0],), float(sched.u[i]), dtype=torch.float64, device=x.device)
            x0 = guided_denoise(family, x, u, cond, null_cond, scale, stats=stats)
            u_next = float(sched.u[i + 1])
            if refine is not None and i < refine.steps and u_next > 0:
                r0 = time.perf_counter()
                x0 = refine_x0(family, x0, u_next, cond, null_cond, refine, generator=generator, stats=stats)
                stats.refine_seconds.append(time.perf_counter() - r0)
            x = sched.step_denoised(x0, t, x, generator=generator).prev_sample
            stats.step_seconds.append(time.perf_counter() - start)
            bar.update()
    bar.close()
    return x
