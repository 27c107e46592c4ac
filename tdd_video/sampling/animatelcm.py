"""AnimateLCM-SVD's multistep consistency sampler as a diffusers scheduler (docs/math.md §8).

Grid: Karras ρ = 7, N = 40 points from σ_0 = σ_max = 700 down to σ_{N−1} = σ_min = 0.002, plus
σ_N = 0. On the shared time axis of tdd_video.core.EDMSchedule, grid index i has
u_i = 1 − i/(N − 1) (core.karras_grid_u; u_{N−1} is a tiny positive number so that σ = σ_min rather than the exact
clean end u = 0, which is σ_N = 0).

K-step sampling visits grid indices [0, r, 2r, …, (K−1)·r], r = N // K (K = 4: 0, 10, 20, 30):
    x0 = D(x, σ_i)                       (plain EDM denoiser, CFG applied by the caller)
    x  = x0 + σ_next·z,  z ~ N(0, I)     (fresh noise from the caller's generator)
and the last step returns x0.

`AnimateLCMScheduler` drops into StableVideoDiffusionPipeline:
    pipe.scheduler = AnimateLCMScheduler.from_config(pipe.scheduler.config)
    pipe.scheduler.set_generator(torch.Generator().manual_seed(0))   # reproducible re-noising
    pipe(image, num_inference_steps=4, min_guidance_scale=1.0, max_guidance_scale=1.2)
The pipeline's `step` call has no generator argument; without `set_generator` (or `generator=` to
`set_timesteps`/`step`) the re-noising noise comes from a generator seeded with `config.seed`
when `set_timesteps` is called, never from the global RNG.
The UNet receives timestep = c_noise = ¼·ln σ (as with SVD's Euler scheduler) and the input
scaled by c_in = 1/√(σ² + 1) (`scale_model_input`); `step` gets the raw network output F.
The family sampling loop (`tdd_video.sampling.sample(..., scheduler=AnimateLCMScheduler...)`) drives the
same sampler over a family's guided denoiser.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput

from tdd_video.core import ANIMATELCM_NUM_GRID, EDMSchedule, add_noise, animatelcm_step_indices, karras_grid_u
from tdd_video.errors import ConfigError, check_range

Tensor = torch.Tensor

def animatelcm_grid_sigmas(schedule: EDMSchedule | None = None, num_grid: int = ANIMATELCM_NUM_GRID) -> Tensor:
    """σ of the AnimateLCM grid: [N + 1] float64, σ_0 = σ_max … σ_{N−1} = σ_min, σ_N = 0."""
    return (schedule or EDMSchedule()).sigma(karras_grid_u(num_grid))


@dataclass
class AnimateLCMSchedulerOutput(BaseOutput):
    """prev_sample: the next sampler state (x0 after the last step); pred_original_sample: this step's x0."""

    prev_sample: Tensor
    pred_original_sample: Tensor


class AnimateLCMScheduler(SchedulerMixin, ConfigMixin):
    """Multistep consistency sampler of AnimateLCM-SVD (docs/math.md §8), diffusers-compatible."""

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(self, num_grid: int = ANIMATELCM_NUM_GRID, sigma_min: float = 0.002, sigma_max: float = 700.0,
                 rho: float = 7.0, sigma_data: float = 1.0, prediction_type: str = "v_prediction",
                 seed: int = 0):
        check_range("num_grid", num_grid, 2, None)
        if prediction_type not in ("v_prediction", "epsilon", "sample"):
            raise ConfigError("prediction_type", f"got {prediction_type!r}, allowed values are "
                                                 "'v_prediction', 'epsilon', 'sample'")
        self.schedule = EDMSchedule(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, sigma_data=sigma_data)
        self.grid_u = karras_grid_u(num_grid)
        self.grid_sigmas = self.schedule.sigma(self.grid_u)
        self.generator: torch.Generator | None = None
        self._own_generator = True
        self.set_timesteps(4)

    @classmethod
    def for_schedule(cls, schedule: EDMSchedule, **kwargs) -> "AnimateLCMScheduler":
        """The scheduler on a family's EDM schedule (same σ range, ρ and σ_data)."""
        if not isinstance(schedule, EDMSchedule):
            raise ConfigError("sampler", f"the AnimateLCM sampler needs an EDM (σ) schedule like SVD's, "
                                         f"got {type(schedule).__name__}")
        return cls(sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max, rho=schedule.rho,
                   sigma_data=schedule.sigma_data, **kwargs)

    # -- diffusers interface -------------------------------------------------------------------
    @property
    def init_noise_sigma(self) -> float:
        """x_T = σ_{i_0}·ε (σ_max for the default schedule)."""
        return float(self.sigmas[0])

    @property
    def step_index(self) -> int | None:
        return self._step_index

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Use `generator` (the caller's) for the re-noising noise of every following step."""
        self.generator = generator
        self._own_generator = generator is None

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      generator: torch.Generator | None = None, grid_indices: list[int] | None = None) -> None:
        """Select K = num_inference_steps grid points [0, r, …, (K−1)·r] (or explicit `grid_indices`,
        strictly increasing in [0, N−1]). Sets `sigmas` [K + 1] (trailing 0), `timesteps` [K] = ¼·ln σ."""
        n = self.config.num_grid
        if grid_indices is not None:
            idx = torch.as_tensor(list(grid_indices), dtype=torch.int64)
            if idx.numel() == 0 or bool((idx < 0).any()) or bool((idx >= n).any()) or bool((idx.diff() <= 0).any()):
                raise ConfigError("grid_indices",
                                  f"got {list(grid_indices)}, need strictly increasing indices in [0, {n - 1}]")
        else:
            if num_inference_steps is None:
                raise ConfigError("num_inference_steps", "give num_inference_steps or grid_indices")
            idx = animatelcm_step_indices(int(num_inference_steps), n)
        self.num_inference_steps = int(idx.numel())
        self.step_grid_indices = idx
        self.u = torch.cat([self.grid_u[idx], torch.zeros(1, dtype=torch.float64)])
        self.sigmas = torch.cat([self.grid_sigmas[idx], torch.zeros(1, dtype=torch.float64)]).to(torch.float32)
        _, _, _, c_noise = self.schedule.precondition(self.grid_sigmas[idx])
        self.timesteps = c_noise.to(torch.float32).to(device) if device is not None else c_noise.to(torch.float32)
        if generator is not None:
            self.set_generator(generator)
        elif self._own_generator:
            self.generator = torch.Generator().manual_seed(int(self.config.seed))
        self._step_index = None
        self._begin_index = None

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def index_for_timestep(self, timestep) -> int:
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[0].cpu()
        hits = (self.timesteps.cpu() - t).abs() < 1e-4
        if not bool(hits.any()):
            raise ValueError(f"timestep {float(t)} is not one of this scheduler's timesteps {self.timesteps.tolist()}")
        return int(hits.nonzero()[0])

    def _init_step_index(self, timestep) -> None:
        self._step_index = self._begin_index if self._begin_index is not None else self.index_for_timestep(timestep)

    def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
        """Network input c_in(σ)·x (float32 math, sample's dtype)."""
        if self._step_index is None:
            self._init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        _, _, c_in, _ = self.schedule.precondition(sigma)
        return (sample.float() * c_in.to(sample.device)).to(sample.dtype)

    def denoised(self, model_output: Tensor, sample: Tensor, sigma: Tensor) -> Tensor:
        """x0 = D(x, σ) from the network output (EDM preconditioning in float32)."""
        c_skip, c_out, _, _ = self.schedule.precondition(sigma.to(torch.float32))
        x, out = sample.float(), model_output.float()
        if self.config.prediction_type == "v_prediction":
            return c_skip.to(x.device) * x + c_out.to(x.device) * out
        if self.config.prediction_type == "epsilon":
            return x - sigma.to(x.device, torch.float32) * out
        return out

    def step(self, model_output: Tensor, timestep, sample: Tensor, generator: torch.Generator | None = None,
             return_dict: bool = True) -> AnimateLCMSchedulerOutput | tuple:
        """One step from the raw network output (what diffusers pipelines call). Shapes [B, ...]."""
        if self._step_index is None:
            self._init_step_index(timestep)
        x0 = self.denoised(model_output, sample, self.sigmas[self._step_index])
        return self.step_denoised(x0, timestep, sample, generator=generator, return_dict=return_dict)

    def step_denoised(self, denoised: Tensor, timestep, sample: Tensor, generator: torch.Generator | None = None,
                      return_dict: bool = True) -> AnimateLCMSchedulerOutput | tuple:
        """One step given x0 = D(x, σ_i): re-noise to σ_{i+1} with fresh noise (last step: return x0)."""
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        if i >= self.num_inference_steps:
            raise ConfigError("step", f"all {self.num_inference_steps} steps were taken; call set_timesteps again")
        x0 = denoised.float()
        if i == self.num_inference_steps - 1:
            prev = x0
        else:
            gen = generator or self.generator
            z = torch.randn(sample.shape, generator=gen, dtype=torch.float32,
                            device=gen.device if gen is not None else sample.device).to(sample.device)
            prev = add_noise(self.schedule, x0, z, self.u[i + 1]).float()
        self._step_index = i + 1
        prev, x0 = prev.to(sample.dtype), x0.to(sample.dtype)
        if not return_dict:
            return (prev, x0)
        return AnimateLCMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def __len__(self) -> int:
        return self.config.num_grid
