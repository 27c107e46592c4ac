"""TDD few-step sampler as a diffusers scheduler, for EDM (SVD) and VP (SDXL) models (docs/math.md §5–6).

One class serves both families: the family is read from the base pipeline's scheduler config
(`timestep_type == "continuous"` — diffusers' marker for EDM c_noise timesteps — means EDM/SVD,
anything else discrete VP/SDXL), so ``pipe.scheduler = TDDScheduler.from_config(pipe.scheduler.config)``
works for StableVideoDiffusionPipeline and StableDiffusionXLPipeline alike.

Step i (u_i → u_{i+1} on the shared time axis, docs/math.md §1c):
  x0 = D(x, u_i)                       (from the model output, or given directly: `step_denoised`)
  x0 = clip(x0)                        (docs/math.md §6, first `clip_steps` steps only)
  s  = shrink(u_{i+1}, η)              (γ-sampling target: EDM (1 − η)·u_{i+1}; VP floor((1 − η)·t_{i+1}))
  x_s = DDIM jump u_i → s              (core.ddim)
  x  = re-noise s → u_{i+1} with z     (core.renoise; only if η > 0 and not the last step)
The last step ends at u = 0 and returns x0. z comes from the caller's generator (``step(...,
generator=g)``), else from the generator given to `set_generator`, else from a private generator
seeded with ``config.seed`` at every `set_timesteps` — never from torch's global RNG.
η is ``config.eta`` unless `step` / `step_denoised` get ``eta=`` (StableDiffusionXLPipeline always passes
its own, default 0.0; StableVideoDiffusionPipeline passes none).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput

from tdd_video.core import (
    EDMSchedule,
    VPSchedule,
    add_noise,
    clip_x0,
    jump,
    nonuniform_schedule_indices,
    renoise,
    schedule_indices,
)
from tdd_video.core.params import DEFAULT_ETA
from tdd_video.errors import ConfigError, check_range

Tensor = torch.Tensor
SCHEDULES = ("equidistant", "tdd-nonuniform")
CLIP_MODES = ("none", "static", "dynamic")


@dataclass
class TDDSchedulerOutput(BaseOutput):
    """prev_sample: x at the next level [B, ...]; pred_original_sample: the (clipped) x0 used. Input dtype."""

    prev_sample: Tensor
    pred_original_sample: Tensor


class TDDScheduler(SchedulerMixin, ConfigMixin):
    """Target-Driven Distillation sampler (docs/math.md §5): K steps on the TDD schedule set S_K, γ-sampling,
    x0 clipping. Config keys shared with EulerDiscreteScheduler keep their meaning, so the config of
    the base pipeline's scheduler is a valid starting point.

    TDD keys: ``num_grid`` N of the training grid (250), ``k_min``/``k_max`` (the trained step range,
    used by the non-uniform schedule), ``schedule`` ('equidistant' | 'tdd-nonuniform'), ``eta`` η ∈ [0, 1)
    (the default of `step`'s per-call ``eta``),
    ``clip_mode`` ('none' | 'static' | 'dynamic'), ``clip_value`` b (latent units), ``clip_quantile``,
    ``clip_steps`` (clip during the first n steps), ``seed`` (fallback noise seed)."""

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: str = "scaled_linear", prediction_type: str = "epsilon",
                 timestep_type: str = "discrete", sigma_min: float | None = None, sigma_max: float | None = None,
                 use_karras_sigmas: bool | None = False, family: str | None = None, rho: float = 7.0,
                 num_grid: int = 250, k_min: int = 4, k_max: int = 8, schedule: str = "equidistant",
                 eta: float = DEFAULT_ETA, clip_mode: str = "none", clip_value: float | None = None,
                 clip_quantile: float = 0.995, clip_steps: int = 0, seed: int = 0):
        family = family or ("edm" if timestep_type == "continuous" else "vp")
        if family == "edm":
            self.noise_schedule = EDMSchedule(sigma_min=sigma_min or 0.002, sigma_max=sigma_max or 700.0, rho=rho)
        elif family == "vp":
            if beta_schedule != "scaled_linear":
                raise ConfigError("beta_schedule",
                                  f"got {beta_schedule!r}; the TDD VP sampler supports 'scaled_linear'")
            self.noise_schedule = VPSchedule(num_train_timesteps, beta_start, beta_end)
        else:
            raise ConfigError("family", f"got {family!r}, allowed values are 'edm', 'vp' (or None to detect)")
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError("prediction_type",
                              f"got {prediction_type!r}, allowed: 'epsilon', 'v_prediction', 'sample'")
        if schedule not in SCHEDULES:
            raise ConfigError("schedule", f"got {schedule!r}, allowed values are {', '.join(map(repr, SCHEDULES))}")
        if clip_mode not in CLIP_MODES:
            raise ConfigError("clip_mode", f"got {clip_mode!r}, allowed values are {', '.join(map(repr, CLIP_MODES))}")
        if clip_mode != "none" and clip_value is None:
            raise ConfigError("clip_value", f"clip_mode {clip_mode!r} needs a bound b > 0 in latent units")
        check_range("eta", eta, 0.0, 1.0, hi_open=True)
        check_range("clip_steps", clip_steps, 0, None)
        check_range("k_min", k_min, 1, None)
        check_range("k_max", k_max, k_min, num_grid)
        self.family = family
        self.num_inference_steps: int | None = None
        self._generator: torch.Generator | None = None
        self._fallback_generator: torch.Generator | None = None
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self.set_timesteps(k_min)

    # ------------------------------------------------------------------ timesteps
    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list | None = None, sigmas: list | None = None) -> None:
        """Choose the K sampling levels, noisiest first.

        * ``num_inference_steps`` K: S_K (or the TDD non-uniform schedule) on the N-point grid.
        * ``timesteps``: custom levels in the units the UNet receives (VP: integer t ∈ [0, T−1];
          EDM: c_noise = ¼·ln σ), strictly decreasing.
        * ``sigmas`` (EDM only): custom σ levels, strictly decreasing; a trailing 0 (diffusers' final
          sigma) is accepted and dropped. Every schedule ends at the clean end u = 0."""
        given = [v is not None for v in (num_inference_steps, timesteps, sigmas)]
        if sum(given) != 1:
            raise ConfigError("set_timesteps", "pass exactly one of num_inference_steps, timesteps, sigmas")
        sched = self.noise_schedule
        if num_inference_steps is not None:
            k = int(num_inference_steps)
            check_range("num_inference_steps", k, 1, self.config.num_grid)
            if self.config.schedule == "tdd-nonuniform":
                idx = nonuniform_schedule_indices(self.config.num_grid, k, self.config.k_min, self.config.k_max)
            else:
                idx = schedule_indices(self.config.num_grid, k)
            u = idx.to(torch.float64) / self.config.num_grid
        elif timesteps is not None:
            u = self._u_of_timestep(torch.as_tensor(timesteps, dtype=torch.float64).reshape(-1))
        else:
            if self.family != "edm":
                raise ConfigError("sigmas", "custom sigmas are supported for EDM (SVD) models; use timesteps for VP")
            sig = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
            if len(sig) > 1 and float(sig[-1]) == 0.0:
                sig = sig[:-1]
            if len(sig) == 0 or bool((sig <= 0).any()):
                raise ConfigError("sigmas", "need at least one positive sigma")
            u = sched.u_of_sigma(sig)
        if len(u) == 0 or bool((u[1:] >= u[:-1]).any()) or bool((u <= 0).any()) or bool((u > 1 + 1e-9).any()):
            raise ConfigError("timesteps", "custom levels must be strictly decreasing and inside the model's range "
                                           "(excluding the clean end)")
        self.u = torch.cat([u, torch.zeros(1, dtype=torch.float64)])     # [K+1], ends at the clean end
        self.num_inference_steps = len(u)
        self.timesteps = self._timestep_of_u(u).to(device)
        if self.family == "edm":
            self.sigmas = sched.sigma(self.u).to(torch.float32)
        else:
            a, s = sched.alpha_sigma(self.u)
            self.sigmas = (s / a).to(torch.float32)
        self._step_index = None
        self._begin_index = None
        self._fallback_generator = torch.Generator().manual_seed(int(self.config.seed))

    def timesteps_of_grid(self, indices, key: str = "grid") -> Tensor:
        """Custom sampling levels given as grid indices k ∈ {1..N} (u = k/N, noisiest first, strictly
        decreasing), in the pipeline units ``set_timesteps(timesteps=...)`` takes. Picking points of a
        training schedule S_K keeps every step on a level the student was trained from (docs/math.md §5).
        `key` names the setting in the ConfigError a bad list raises (e.g. a command-line flag)."""
        n = self.config.num_grid
        idx = torch.as_tensor(indices).reshape(-1)
        if idx.numel() == 0 or idx.is_floating_point() or bool((idx < 1).any()) or bool((idx > n).any()) \
                or bool((idx[1:] >= idx[:-1]).any()):
            raise ConfigError(key, f"got {idx.tolist()}; grid indices must be integers in [1, {n}], "
                                      "strictly decreasing (noisiest first)")
        return self._timestep_of_u(idx.to(torch.float64) / n)

    def _timestep_of_u(self, u: Tensor) -> Tensor:
        """Pipeline units: EDM c_noise = ¼·ln σ (float32), VP integer t (int64)."""
        if self.family == "edm":
            return (0.25 * self.noise_schedule.sigma(u).log()).to(torch.float32)
        return self.noise_schedule.timestep(u)

    def _u_of_timestep(self, t: Tensor) -> Tensor:
        t = t.to(torch.float64)
        if self.family == "edm":
            return self.noise_schedule.u_of_sigma(torch.exp(4.0 * t))
        if bool((t != t.round()).any()) or bool((t < 0).any()) or bool((t >= self.config.num_train_timesteps).any()):
            raise ConfigError("timesteps",
                              f"VP timesteps must be integers in [0, {self.config.num_train_timesteps - 1}]")
        return self.noise_schedule.u_of_timestep(t)

    @property
    def init_noise_sigma(self) -> float:
        """Std of the starting latents: EDM √(σ_0² + 1) (as diffusers' Euler), VP 1."""
        if self.family == "edm":
            return math.sqrt(float(self.sigmas[0]) ** 2 + 1.0)
        return 1.0

    # ------------------------------------------------------------------ step bookkeeping
    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Noise source for γ-sampling when the pipeline does not pass its generator to `step` (SVD's)."""
        self._generator = generator

    def index_for_timestep(self, timestep) -> int:
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)[:1].cpu()
        diff = (self.timesteps.cpu().to(torch.float64) - t).abs()
        i = int(diff.argmin())
        if float(diff[i]) > 1e-4 * max(1.0, float(t.abs())):
            raise ConfigError("timestep", f"{float(t)} is not one of the scheduler's timesteps "
                                          f"{self.timesteps.tolist()}; call set_timesteps first")
        return i

    def _init_step_index(self, timestep) -> None:
        self._step_index = self._begin_index if self._begin_index is not None else self.index_for_timestep(timestep)

    def _levels(self, timestep) -> tuple[float, float, int]:
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        if i >= self.num_inference_steps:
            raise ConfigError("step", f"all {self.num_inference_steps} steps were taken; call set_timesteps again")
        return float(self.u[i]), float(self.u[i + 1]), i

    # ------------------------------------------------------------------ model I/O
    def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
        """EDM: c_in·x = x/√(σ²+1) (docs/math.md §1a); VP: unchanged."""
        if self.family != "edm":
            return sample
        if self._step_index is None:
            self._init_step_index(timestep)
        sigma = float(self.sigmas[self._step_index])
        return sample / math.sqrt(sigma ** 2 + 1.0)

    def convert_model_output(self, model_output: Tensor, sample: Tensor, u: float) -> Tensor:
        """x0 from the raw network output at level u, in float32 (docs/math.md §1a/§1b).

        EDM: x0 = c_skip·x + c_out·F ('v_prediction'), x − σ·ε ('epsilon'). VP: x0 = (x − σ_t·ε)/α_t,
        α_t·x − σ_t·v. 'sample': the output itself."""
        out, x = model_output.to(torch.float32), sample.to(torch.float32)
        kind = self.config.prediction_type
        if kind == "sample":
            return out
        a, s = (float(v) for v in self.noise_schedule.alpha_sigma(torch.tensor(u, dtype=torch.float64)))
        if self.family == "edm" and kind == "v_prediction":
            c_skip, c_out, _, _ = self.noise_schedule.precondition(torch.tensor(s, dtype=torch.float64))
            return float(c_skip) * x + float(c_out) * out
        if kind == "epsilon":
            return (x - s * out) / a
        return a * x - s * out       # VP v-prediction

    # ------------------------------------------------------------------ the update
    def _eta(self, eta: float | None) -> float:
        """The η of this step: the per-call value, or the config's when None; validated like the config key."""
        if eta is None:
            return float(self.config.eta)
        check_range("eta", eta, 0.0, 1.0, hi_open=True)
        return float(eta)

    def step(self, model_output: Tensor, timestep, sample: Tensor, eta: float | None = None,
             generator: torch.Generator | None = None, return_dict: bool = True) -> TDDSchedulerOutput | tuple:
        """One TDD step from the raw model output (what diffusers pipelines call). Shapes [B, ...].

        ``eta``: γ-sampling η ∈ [0, 1) for this step; None uses ``config.eta`` (docs/math.md §5). diffusers
        pipelines pass ``eta`` (and ``generator``) to any scheduler whose `step` accepts them, so
        StableDiffusionXLPipeline always passes its own ``eta``, default 0.0, which then wins over the
        config value (as with the official TDD scheduler): call ``pipe(..., eta=0.3)`` for γ-sampling.
        StableVideoDiffusionPipeline passes no ``eta``, so the config's η applies there."""
        eta = self._eta(eta)
        u_t, _, _ = self._levels(timestep)
        x0 = self.convert_model_output(model_output, sample, u_t)
        return self.step_denoised(x0, timestep, sample, eta=eta, generator=generator, return_dict=return_dict)

    def step_denoised(self, denoised: Tensor, timestep, sample: Tensor, eta: float | None = None,
                      generator: torch.Generator | None = None,
                      return_dict: bool = True) -> TDDSchedulerOutput | tuple:
        """One TDD step given x0 = D(x, u_i) directly (the family sampling loop's entry point). docs/math.md §5.

        ``eta`` as in `step` (None: ``config.eta``). The γ target is the schedule's
        ``shrink(u_{i+1}, η)``: EDM (1 − η)·u_{i+1}; VP floor((1 − η)·t_{i+1}) in integer timesteps."""
        eta = self._eta(eta)
        u_t, u_next, i = self._levels(timestep)
        cfg = self.config
        x = sample.to(torch.float32)
        x0 = denoised.to(torch.float32)
        if cfg.clip_mode != "none" and i < cfg.clip_steps:
            x0 = clip_x0(x0, cfg.clip_mode, float(cfg.clip_value), cfg.clip_quantile)
        last = i == self.num_inference_steps - 1
        if last or u_next == 0.0:
            prev = x0
        else:
            s = min(float(self.noise_schedule.shrink(torch.tensor(u_next, dtype=torch.float64), eta)), u_next)
            prev = jump(self.noise_schedule, x, x0, u_t, s)
            if s < u_next:
                gen = generator or self._generator or self._fallback_generator
                z = torch.randn(x.shape, generator=gen, dtype=torch.float32,
                                device=gen.device if gen is not None else x.device).to(x.device)
                prev = renoise(self.noise_schedule, prev, s, u_next, z)
        self._step_index = i + 1
        prev, x0 = prev.to(sample.dtype), x0.to(sample.dtype)
        if not return_dict:
            return prev, x0
        return TDDSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """Forward process x = α_t·x0 + σ_t·noise (core.add_noise) at per-sample timesteps [B] (pipeline units)."""
        u = self._u_of_timestep(torch.as_tensor(timesteps).reshape(-1).cpu())
        out = add_noise(self.noise_schedule, original_samples.to(torch.float32), noise.to(torch.float32), u)
        return out.to(original_samples.dtype)

    def previous_timestep(self, timestep):
        i = self.index_for_timestep(timestep)
        return self.timesteps[i + 1] if i + 1 < len(self.timesteps) else torch.tensor(-1)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
