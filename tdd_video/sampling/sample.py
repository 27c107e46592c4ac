"""The direct few-step sampling loop over a model family (SPEC §4–7).

`sample` drives a `TDDScheduler` with the family's denoiser ``D(x, u, c) -> x0`` instead of raw
network outputs, so it adds what a stock pipeline cannot: frame-wise guidance on the student,
Distillation++ teacher refinement and an exact count of UNet passes. With the same starting noise
and settings it produces the same latents as the diffusers pipeline + TDDScheduler (tested).

`scheduler` may be any object with the TDDScheduler sampling protocol: ``set_timesteps(K)``,
``timesteps`` [K], ``u`` (float64 [K+1] levels on the shared time axis, ending at 0),
``init_noise_sigma``, ``num_inference_steps`` and ``step_denoised(x0, t, x, generator)`` (e.g. the
AnimateLCM sampler in sampling/animatelcm.py).

UNet passes are counted per sample batch: a guided step (g ≠ 1) is ONE batched forward of 2B
(∅ and c) and counts 2 passes, as the stock pipeline's 25-step CFG run counts 50.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from tdd_video.core import framewise_scale
from tdd_video.core.guidance import cfg
from tdd_video.errors import ConfigError, check_range
from tdd_video.sampling.scheduler import TDDScheduler

Tensor = torch.Tensor
Guidance = float | tuple[float, float]


@dataclass
class ClipSettings:
    """x0 clipping (SPEC §6): mode 'none' | 'static' | 'dynamic', bound b, quantile q, first `steps` steps."""

    mode: str = "none"
    value: float | None = None
    steps: int = 0
    quantile: float = 0.995


class StageTimer:
    """Wall time per named stage of a render: call ``timer(name)`` when a stage ends; the time since the
    previous call is stored in ``timer.timings[name]`` and reported through ``log``."""

    def __init__(self, log=lambda msg: None):
        self._now, self._log = time.perf_counter, log
        self.timings: dict[str, float] = {}
        self._clock = self._now()

    def __call__(self, name: str) -> None:
        now = self._now()
        self.timings[name] = now - self._clock
        self._clock = now
        self._log(f"[{name}] {self.timings[name]:.2f} s")


@dataclass
class SamplingStats:
    """What a sampling run cost: UNet passes (per-sample-batch evaluations), forward calls, wall time."""

    unet_passes: int = 0
    forward_calls: int = 0
    refine_passes: int = 0
    step_seconds: list[float] = field(default_factory=list)
    refine_seconds: list[float] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.step_seconds))


def make_scheduler(family, *, eta: float = 0.3, schedule: str = "equidistant", clip: ClipSettings | None = None,
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


def guidance_scale(guidance: Guidance, x: Tensor) -> float | Tensor:
    """Scalar g, or (g_min, g_max) → frame-wise weights linspace(g_min, g_max, F) [1, F, 1, 1, 1] (video)."""
    if isinstance(guidance, (tuple, list)):
        g_min, g_max = (float(v) for v in guidance)
        if g_min == g_max:
            return g_min
        if x.ndim != 5:
            raise ConfigError("guidance", "frame-wise guidance (g_min, g_max) needs video latents [B, F, C, h, w]")
        return framewise_scale(g_min, g_max, x.shape[1], ndim=x.ndim).to(x.device)
    return float(guidance)


def is_identity(scale) -> bool:
    return isinstance(scale, float) and scale == 1.0


def guided_denoise(family, x: Tensor, u: Tensor, cond, null, scale, unet: nn.Module | None = None,
                   stats: SamplingStats | None = None) -> Tensor:
    """x0 = x0(∅) + g·(x0(c) − x0(∅)) (Imagen form, SPEC §4); g = 1 → one plain forward.

    x [B, ...]; u [B] float64. The guided case runs ∅ and c as ONE batched forward of 2B."""
    b = x.shape[0]
    if is_identity(scale):
        out = family.denoise(x, u, cond, unet)
        passes = 1
    else:
        both = family.denoise(torch.cat([x, x]), torch.cat([u, u]), null.cat(cond), unet)
        out = cfg(both[:b], both[b:], scale)
        passes = 2
    if stats is not None:
        stats.unet_passes += passes
        stats.forward_calls += 1
    return out


def sample(family, cond, null_cond=None, *, steps: int = 4, eta: float = 0.3, schedule: str = "equidistant",
           guidance: Guidance = 1.0, clip: ClipSettings | None = None, refine=None,
           generator: torch.Generator | None = None, latents: Tensor | None = None,
           shape: tuple[int, ...] | None = None, progress: bool = True, stats: SamplingStats | None = None,
           scheduler: TDDScheduler | None = None, timesteps: list | None = None) -> Tensor:
    """Few-step TDD sampling (SPEC §5) with the family's denoiser. Returns final latents x0 (float32).

    cond / null_cond: the family's Conditioning (null defaults to family.null_conditioning(cond)).
    latents: unit-variance starting noise [B, ...] (like the diffusers pipelines' ``latents``; it is
    multiplied by the scheduler's init_noise_sigma), or drawn from `generator` with `shape`.
    guidance: g (plain CFG on the student; 1 = one forward per step) or (g_min, g_max) frame-wise.
    refine: a `RefineSettings` (Distillation++, SPEC §7) or None. `stats` is filled in place.
    scheduler: use this sampler object instead of a TDDScheduler built from (eta, schedule, clip);
    timesteps: custom levels in the scheduler's units instead of `steps`."""
    from tdd_video.sampling.refine import refine_x0
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
