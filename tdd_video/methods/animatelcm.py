"""AnimateLCM-SVD's consistency-distillation recipe on the shared engine (docs/math.md §8; baseline for TDD).

    grid: Karras ρ = 7, N = 40 points σ_0 = 700 … σ_{N−1} = 0.002, plus σ_N = 0
          (tdd_video.core.karras_grid_u on the shared u axis)
    n ~ U{0..N−1};  x_n = x0 + σ_n·ε
    w_min ~ U{1, 1.25, 1.5}, w_max ~ U{2, 2.25, 2.5} per sample; w_f = linspace(w_min, w_max, F)
    x0_ψ = x0_ψ(x_n, ∅) + w_f·(x0_ψ(x_n, c) − x0_ψ(x_n, ∅))        (ONE batched 2B teacher forward)
    x_{n+1} = x0_ψ + (σ_{n+1}/σ_n)·(x_n − x0_ψ)                      (ONE Euler step n → n+1)
    target = D_θ⁻(x_{n+1}, σ_{n+1})   (fp32 EMA θ⁻, decay 0.95; = x_{n+1} at σ_N = 0, call skipped)
    pred   = D_θ(x_n, σ_n)            (plain EDM denoiser: no DDIM-jump / boundary parameterisation)
    loss   = mean_b (σ_n − σ_{n+1})^(−0.1) · pseudo-Huber(pred − target; c = 1e-3)   in x0 space, fp32
No unconditional training samples: every sample keeps its conditioning c (the null ∅ is used only
inside the teacher's CFG). Image families (no frame axis) use one w = w_max per sample.
Trainables (LoRA / spatial / temporal / full) and the data path are the engine's, exactly as for TDD.
"""
from __future__ import annotations

import torch

from tdd_video.core import add_noise, distill_loss, guidance_weights, jump, karras_grid_u
from tdd_video.errors import ConfigError
from tdd_video.methods.base import DistillMethod, NetworkRoles, StepOutput, register_method
from tdd_video.methods.configs import AnimateLCMConfig

Tensor = torch.Tensor


def _choose(values: list, batch: int, generator) -> Tensor:
    """Per-sample uniform choice from a finite set. float32 [B]."""
    v = torch.as_tensor([float(x) for x in values], dtype=torch.float32)
    return v[torch.randint(0, len(v), (batch,), generator=generator)]


class AnimateLCM(DistillMethod):
    """AnimateLCM-SVD consistency distillation step (docs/math.md §8); see the module docstring."""

    name = "animatelcm"
    sampler = "animatelcm"        # validation renders use AnimateLCM's multistep sampler (docs/math.md §8)

    def __init__(self, cfg: AnimateLCMConfig, family):
        super().__init__(cfg, family)
        self.schedule = family.schedule
        if getattr(self.schedule, "kind", "edm") != "edm":
            raise ConfigError("method.name", "animatelcm is defined on the EDM/Karras grid of SVD-type families; "
                                             f"family {family.name!r} uses a {self.schedule.kind!r} schedule")
        self.grid_u = karras_grid_u(cfg.num_grid)          # [N + 1], noisiest first
        self.grid_sigma = self.schedule.sigma(self.grid_u)

    def guidance_scale(self, x0: Tensor, generator) -> tuple[Tensor, Tensor, Tensor]:
        """(w broadcastable to x0, w_min [B], w_max [B]); frame-wise for video latents [B, F, ...]."""
        b = x0.shape[0]
        w_min = _choose(self.cfg.guidance_min_choices, b, generator)
        w_max = _choose(self.cfg.guidance_max_choices, b, generator)
        return guidance_weights(w_min, w_max, x0)

    def training_step(self, x0: Tensor, cond, nets: NetworkRoles,
                      generator: torch.Generator | None = None) -> StepOutput:
        cfg, sched = self.cfg, self.schedule
        b = x0.shape[0]
        x0 = x0.float()
        n = torch.randint(0, cfg.num_grid, (b,), generator=generator)
        u_n, u_next = self.grid_u[n], self.grid_u[n + 1]
        sigma_n, sigma_next = self.grid_sigma[n], self.grid_sigma[n + 1]
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
        x_n = add_noise(sched, x0, noise, u_n).float()
        w, w_min, w_max = self.guidance_scale(x0, generator)
        null = self.family.null_conditioning(cond)

        with torch.no_grad():
            with nets.teacher() as teacher:
                x0_teacher = self.family.denoise_cfg(x_n, u_n, cond, w, null=null, unet=teacher).float()
            x_next = jump(sched, x_n, x0_teacher, u_n, u_next).float()
            # σ_N = 0 is the boundary, D(x, 0) = x. The target forward runs on the whole batch anyway: a
            # data-dependent skip would desynchronise ZeRO-3 ranks (each forward gathers weights collectively).
            inner = (u_next > 0).to(x0.device)
            with nets.target(self.target_ema > 0) as target_net:
                denoised = self.family.denoise(x_next, u_next, cond, unet=target_net).float()
            target = torch.where(inner.reshape(-1, *([1] * (x_next.ndim - 1))), denoised, x_next)

        with nets.student() as student:
            pred = self.family.denoise(x_n, u_n, cond, unet=student)
        weight = (sigma_n - sigma_next).clamp_min(1e-12) ** cfg.weight_power
        per_sample = distill_loss(cfg.loss, pred.float(), target.float(), c=cfg.huber_c,
                                  weight=weight.float().to(x0.device), reduce=False)
        stats = {"n": n, "sigma": sigma_n, "weight": weight, "w_min": w_min, "w_max": w_max,
                 "loss": per_sample.detach().cpu(), "target_skipped": (~inner).to(torch.int64)}
        return StepOutput(loss=per_sample.mean(), stats=stats)


register_method("animatelcm", AnimateLCM)
