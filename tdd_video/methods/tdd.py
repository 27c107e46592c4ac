"""Target-Driven Distillation (TDD), one training step generic over model families (docs/math.md §3–4).

    n ~ density, t = u_n, t_n = u_{n−1};  K ~ U{K_min..K_max};  τ = next S_K point ≤ t_n;
    η ~ U[0, η_max];  s = quantize((1 − η)·τ)                                    (select_targets)
    c' = ∅ with prob. p_uncond else c        (same c' for student, target, teacher cond branch)
    x_t = α_t x0 + σ_t ε
    x_{t_n} = teacher solver t → t_n on x0_ψ = x0_ψ(∅) + w·(x0_ψ(c') − x0_ψ(∅))   (ONE 2B forward)
    x_target = f_θ⁻(x_{t_n}, t_n → s)  (no grad; = x_{t_n} where s = t_n, network call skipped)
    x_pred   = f_θ(x_t, t → s)
    loss     = pseudo-Huber / L2 in fp32 between x_pred and x_target, both divided by √(α_s²+σ_s²)

Guidance w (Imagen form, w = 1 = no guidance): video latents [B, F, ...] use frame-wise
w_f = linspace(w_min, w_max, F) with w_min, w_max drawn per sample from `guidance_min_range` /
`guidance_max_range`; image latents use one scalar w per sample drawn from `guidance_max_range`.

Loss space: x_s is compared after division by √(α_s² + σ_s²). For VP (SDXL) that factor is 1 and
this is exactly TDD's loss; for EDM (SVD, σ up to 700) it is the same VP-equivalent scale, so
one pseudo-Huber c works for both families instead of losses that grow with σ_s².
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tdd_video.core import (
    add_noise,
    distill_loss,
    guidance_weights,
    heun_step,
    jump,
    null_mask,
    sample_guidance_range,
    select_targets,
    source_density,
    validate_tdd_params,
)
from tdd_video.errors import ConfigError, check_range
from tdd_video.methods.base import DistillMethod, NetworkRoles, StepOutput, register_method

Tensor = torch.Tensor


@dataclass
class TDDConfig:
    """Options of the TDD method (the `method:` section of a recipe)."""

    num_grid: int = 250                 # N, teacher grid points
    k_min: int = 4
    k_max: int = 8
    eta_max: float = 0.3
    p_uncond: float = 0.2               # decoupled guidance: fraction of samples trained on ∅
    guidance_min_range: list = field(default_factory=lambda: [1.0, 1.0])   # w_min ~ U[lo, hi] (video)
    guidance_max_range: list = field(default_factory=lambda: [3.0, 3.0])   # w_max ~ U[lo, hi]; images: w
    teacher_solver: str = "euler"       # euler | heun
    teacher_substeps: int = 1
    target_ema: float = 0.0             # 0 = online student under no_grad; else fp32 EMA decay
    loss: str = "huber"                 # huber | l2
    huber_c: float = 1e-3
    source_density: str = "uniform"     # uniform | high-noise | low-noise

    def validate(self, p: str = "method") -> None:
        try:
            validate_tdd_params(self.num_grid, self.k_min, self.k_max, self.eta_max)
        except ConfigError as e:
            raise ConfigError(f"{p}.{e.key}", str(e).split(": ", 1)[-1]) from None
        check_range(f"{p}.p_uncond", self.p_uncond, 0.0, 1.0)
        for key in ("guidance_min_range", "guidance_max_range"):
            r = getattr(self, key)
            if len(r) != 2 or not all(isinstance(v, (int, float)) for v in r) or r[0] > r[1] or r[0] < 0:
                raise ConfigError(f"{p}.{key}", f"got {r!r}, need [lo, hi] with 0 <= lo <= hi")
        if self.guidance_min_range[0] > self.guidance_max_range[1]:
            raise ConfigError(f"{p}.guidance_min_range", "w_min range lies above the w_max range")
        if self.teacher_solver not in ("euler", "heun"):
            raise ConfigError(f"{p}.teacher_solver", f"got {self.teacher_solver!r}, allowed values are 'euler', 'heun'")
        check_range(f"{p}.teacher_substeps", self.teacher_substeps, 1, 64)
        check_range(f"{p}.target_ema", self.target_ema, 0.0, 1.0, hi_open=True)
        if self.loss not in ("huber", "l2"):
            raise ConfigError(f"{p}.loss", f"got {self.loss!r}, allowed values are 'huber', 'l2'")
        check_range(f"{p}.huber_c", self.huber_c, 0.0, None, lo_open=True)
        if self.source_density not in ("uniform", "high-noise", "low-noise"):
            raise ConfigError(f"{p}.source_density", f"got {self.source_density!r}, allowed values are "
                                                     "'uniform', 'high-noise', 'low-noise'")


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like.device, torch.float32).reshape(v.shape[0], *([1] * (like.ndim - 1)))


class TDD(DistillMethod):
    """TDD step (docs/math.md §3–4); see the module docstring for the equations."""

    name = "tdd"

    def __init__(self, cfg: TDDConfig, family):
        super().__init__(cfg, family)
        self.schedule = family.schedule
        self._weights = source_density(cfg.num_grid, cfg.source_density)

    # -- guidance ---------------------------------------------------------------------------
    def guidance_scale(self, x0: Tensor, generator) -> tuple[Tensor, Tensor, Tensor]:
        """(w broadcastable to x0, w_min [B], w_max [B]). Video [B, F, ...]: frame-wise; image: scalar."""
        b = x0.shape[0]
        w_min, w_max = sample_guidance_range(b, self.cfg.guidance_min_range, self.cfg.guidance_max_range, generator)
        return guidance_weights(w_min, w_max, x0)

    def guided_teacher(self, teacher, x: Tensor, u: Tensor, cond, null, w: Tensor | None) -> Tensor:
        """x0_ψ = x0_ψ(∅) + w·(x0_ψ(c) − x0_ψ(∅)): the family's guided denoiser, ONE batched forward on
        [∅; c] (2B). w None means w ≡ 1 (no guidance): a single B forward on c."""
        return self.family.denoise_cfg(x, u, cond, 1 if w is None else w, null=null, unet=teacher)

    # -- teacher solver -------------------------------------------------------------------------
    def teacher_solve(self, teacher, x_t: Tensor, u_t: Tensor, u_next: Tensor, cond, null, w) -> Tensor:
        """Solver step(s) t → t_n (euler = DDIM; heun = core.heun_step), `teacher_substeps` each."""
        m = self.cfg.teacher_substeps
        x = x_t.float()
        for j in range(m):
            ua = u_t + (u_next - u_t) * (j / m)
            ub = u_t + (u_next - u_t) * ((j + 1) / m)
            x0a = self.guided_teacher(teacher, x, ua, cond, null, w)
            x_euler = jump(self.schedule, x, x0a, ua, ub).float()
            if self.cfg.teacher_solver == "euler":
                x = x_euler
                continue
            # Heun's correction on every row (same number of forwards on every rank, see training_step)
            x0b = self.guided_teacher(teacher, x_euler, ub, cond, null, w)
            x = heun_step(self.schedule, x, x0a, x_euler, x0b, ua, ub)
        return x

    # -- the step -------------------------------------------------------------------------------
    def training_step(self, x0: Tensor, cond, nets: NetworkRoles,
                      generator: torch.Generator | None = None) -> StepOutput:
        cfg, sched = self.cfg, self.schedule
        b = x0.shape[0]
        x0 = x0.float()
        ts = select_targets(b, cfg.num_grid, cfg.k_min, cfg.k_max, cfg.eta_max, generator=generator,
                            source_weights=self._weights, quantize=sched.quantize)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
        x_t = add_noise(sched, x0, noise, ts.t)
        null_all = self.family.null_conditioning(cond)
        is_null = null_mask(b, cfg.p_uncond, generator)
        cond_used = cond.select(is_null, null_all)
        w, w_min, w_max = self.guidance_scale(x0, generator)
        no_guidance = bool((w == 1).all())

        with torch.no_grad():
            with nets.teacher() as teacher:
                x_tn = self.teacher_solve(teacher, x_t, ts.t, ts.t_next, cond_used, null_all,
                                          None if no_guidance else w)
            # s == t_n: the jump is the identity. The target forward still runs on the WHOLE batch: a
            # data-dependent skip would make ranks call the network a different number of times, which
            # deadlocks ZeRO-3 (every forward gathers the partitioned weights collectively).
            need = ts.s < ts.t_next
            with nets.target(self.target_ema > 0) as target:
                x0_tg = self.family.denoise(x_tn, ts.t_next, cond_used, unet=target)
            jumped = jump(sched, x_tn, x0_tg.float(), ts.t_next, ts.s).float()
            x_target = torch.where(_bcast(need, jumped).bool(), jumped, x_tn.float())

        with nets.student() as student:
            x0_pred = self.family.denoise(x_t, ts.t, cond_used, unet=student)
        x_pred = jump(sched, x_t, x0_pred.float(), ts.t, ts.s)

        a_s, s_s = sched.alpha_sigma(ts.s)
        scale = _bcast((a_s ** 2 + s_s ** 2).sqrt().reciprocal(), x_pred)
        per_sample = distill_loss(cfg.loss, x_pred.float() * scale, x_target.float() * scale, c=cfg.huber_c,
                                  reduce=False)
        _, sigma_t = sched.alpha_sigma(ts.t)
        stats = {"k": ts.k, "tau": ts.tau, "eta": ts.eta, "t": ts.t, "s": ts.s, "sigma": sigma_t,
                 "loss": per_sample.detach().cpu(), "null": is_null, "w_min": w_min, "w_max": w_max,
                 "target_skipped": (~need).to(torch.int64)}
        return StepOutput(loss=per_sample.mean(), stats=stats)


register_method("tdd", TDDConfig, TDD)
