"""The teacher's reference sampler: Euler on diffusers' Karras σ grid (what the stock SVD pipeline runs).

K points σ_max → σ_min then 0 (core.karras_grid_u), starting at √(σ_max² + 1)·ε like the SVD
pipeline; each step x ← x0 + (σ_next/σ)·(x − x0) (= core.ddim on the EDM schedule). It has the
sampling protocol of `sampling.sample` (``set_timesteps``, ``timesteps``, ``u``, ``init_noise_sigma``,
``num_inference_steps``, ``step_denoised``), so the one sampling loop drives it like the TDD and
AnimateLCM schedulers; guidance (frame-wise CFG 1 → 3 for the pipeline default) is the loop's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tdd_video.core import EDMSchedule, jump, karras_grid_u
from tdd_video.errors import ConfigError, check_range

Tensor = torch.Tensor


@dataclass
class EulerStep:
    prev_sample: Tensor
    pred_original_sample: Tensor


class KarrasEulerSampler:
    """Deterministic Euler (DDIM) steps on the K-point Karras grid of an EDM schedule."""

    def __init__(self, schedule: EDMSchedule):
        if not isinstance(schedule, EDMSchedule):
            raise ConfigError("sampler", f"the Karras Euler sampler needs an EDM (σ) schedule like SVD's, "
                                         f"got {type(schedule).__name__}")
        self.schedule = schedule
        self.set_timesteps(25)

    def set_timesteps(self, num_inference_steps: int) -> None:
        check_range("num_inference_steps", num_inference_steps, 1, None)
        self.num_inference_steps = int(num_inference_steps)
        self.u = karras_grid_u(self.num_inference_steps)           # [K + 1], ends at the clean end
        self.timesteps = torch.arange(self.num_inference_steps)    # step indices

    @property
    def init_noise_sigma(self) -> float:
        return math.sqrt(float(self.schedule.sigma(self.u[0])) ** 2 + 1.0)

    def step_denoised(self, denoised: Tensor, timestep, sample: Tensor, generator=None) -> EulerStep:
        i = int(timestep)
        x0 = denoised.float()
        return EulerStep(jump(self.schedule, sample.float(), x0, self.u[i], self.u[i + 1]).float(), x0)
