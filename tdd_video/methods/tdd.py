"""Target-Driven Distillation (TDD), one training step generic over model families (docs/math.md §3–4).

    n ~ density, t = u_n, t_n = u_{n−1};  K ~ U{K_min..K_max};  τ = next S_K point ≤ t_n;
    η ~ U[0, η_max];  s = (1 − η)·τ in the schedule's units (VP: floor on timesteps)   (select_targets)
    c' = ∅ with prob. p_uncond else c        (same c' for student, target, teacher cond branch)
    x_t = α_t x0 + σ_t ε
    x_{t_n} = teacher solver t → t_n on x0_ψ = x0_ψ(∅) + w·(x0_ψ(c') − x0_ψ(∅))   (ONE 2B forward)
    x_target = f_θ⁻(x_{t_n}, t_n → s)  (no grad; = x_{t_n} where s = t_n; target_hops / target_grid: sub-hops, §3.5)
               teacher_target: x_target = the teacher solver t → s in teacher_substeps, no θ⁻ call (§3.5)
    x_pred   = f_θ(x_t, t → s)
    loss     = pseudo-Huber / L2 in fp32 between x_pred and x_target, both divided by √(α_s²+σ_s²)

Guidance w (Imagen form, w = 1 = no guidance): video latents [B, F, ...] use frame-wise
w_f = linspace(w_min, w_max, F) with w_min, w_max drawn per sample from `guidance_min_range` /
`guidance_max_range`; image latents use one scalar w per sample drawn from `guidance_max_range`.

Loss space: x_s is compared after division by √(α_s² + σ_s²). For VP (SDXL) that factor is 1 and
this is exactly TDD's loss; for EDM (SVD, σ up to 700) it is the same VP-equivalent scale, so
one pseudo-Huber c works for both families instead of losses that grow with σ_s². `loss_x0_cap` > 1
multiplies that difference by min(√(α_s²+σ_s²)/c_ts, cap) (core.x0_loss_weight), moving it toward
the x0-space difference the jump's coefficient c_ts = α_s − σ_s α_t/σ_t otherwise shrinks.
"""
from __future__ import annotations

import torch

from tdd_video.core import (
    add_noise,
    distill_loss,
    grid_walk_bound,
    grid_walk_levels,
    guidance_weights,
    heun_step,
    hinge_d_loss,
    hinge_g_loss,
    jump,
    laplacian,
    null_mask,
    sample_guidance_range,
    select_targets,
    source_density,
    subhop_levels,
    x0_loss_weight,
)
from tdd_video.methods.adversarial import Discriminator, frozen_features, renoise_like, sample_levels
from tdd_video.methods.base import DistillMethod, NetworkRoles, StepOutput, register_method
from tdd_video.methods.configs import TDDConfig

Tensor = torch.Tensor


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like.device, torch.float32).reshape(v.shape[0], *([1] * (like.ndim - 1)))


class TDD(DistillMethod):
    """TDD step (docs/math.md §3–4); see the module docstring for the equations."""

    name = "tdd"

    def __init__(self, cfg: TDDConfig, family):
        super().__init__(cfg, family)
        self.schedule = family.schedule
        self._weights = source_density(cfg.num_grid, cfg.source_density)
        self.adv = Discriminator(cfg.adv, family) if cfg.adv.weight > 0 else None    # adversarial TDD, §11
        self._walk_len = (grid_walk_bound(cfg.num_grid, cfg.k_min, cfg.k_max, cfg.target_grid, cfg.teacher_hop)
                          if cfg.target_grid else 0)          # fixed per config: same target calls on every rank

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

    # -- the target ---------------------------------------------------------------------------
    def target_jump(self, nets: NetworkRoles, x_tn: Tensor, u_from: Tensor, u_to: Tensor, cond) -> Tensor:
        """x_target = f_θ⁻(x_{t_n}, t_n → s), in `target_hops` sub-hops (core.subhop_levels, §3.5), or along
        the S_{target_grid} points between t_n and s (core.grid_walk_levels, padded to a fixed length). Every
        sub-hop runs the target on the WHOLE batch, also rows whose sub-hop has zero length (those keep x):
        a data-dependent skip would make ranks call the network a different number of times, which
        deadlocks ZeRO-3 (every forward gathers the partitioned weights collectively)."""
        if self.cfg.target_grid:
            levels = grid_walk_levels(u_from, u_to, self.cfg.num_grid, self.cfg.target_grid, self._walk_len)
        else:
            levels = subhop_levels(u_from, u_to, self.cfg.target_hops, self.schedule)
        x = x_tn.float()
        with nets.target(self.target_ema > 0) as target:
            for ua, ub in zip(levels[:-1], levels[1:]):
                x0_tg = self.family.denoise(x, ua, cond, unet=target)
                moved = jump(self.schedule, x, x0_tg.float(), ua, ub).float()
                x = torch.where(_bcast(ub < ua, moved).bool(), moved, x)
        return x

    # -- the step -------------------------------------------------------------------------------
    def training_step(self, x0: Tensor, cond, nets: NetworkRoles,
                      generator: torch.Generator | None = None) -> StepOutput:
        cfg, sched = self.cfg, self.schedule
        b = x0.shape[0]
        x0 = x0.float()
        ts = select_targets(b, cfg.num_grid, cfg.k_min, cfg.k_max, cfg.eta_max, generator=generator,
                            source_weights=self._weights, schedule=sched, hop=cfg.teacher_hop)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
        x_t = add_noise(sched, x0, noise, ts.t)
        null_all = self.family.null_conditioning(cond)
        is_null = null_mask(b, cfg.p_uncond, generator)
        cond_used = cond.select(is_null, null_all)
        w, w_min, w_max = self.guidance_scale(x0, generator)
        no_guidance = bool((w == 1).all())

        with torch.no_grad():
            u_solve = ts.s if cfg.teacher_target else ts.t_next      # teacher_target: the teacher goes t → s
            with nets.teacher() as teacher:
                x_tn = self.teacher_solve(teacher, x_t, ts.t, u_solve, cond_used, null_all,
                                          None if no_guidance else w)
            if cfg.teacher_target:
                need, x_target = torch.ones_like(ts.s, dtype=torch.bool), x_tn
            else:
                need = ts.s < ts.t_next             # s == t_n: the jump is the identity (target_jump)
                x_target = self.target_jump(nets, x_tn, ts.t_next, ts.s, cond_used)

        with nets.student() as student:
            x0_pred = self.family.denoise(x_t, ts.t, cond_used, unet=student)
        x_pred = jump(sched, x_t, x0_pred.float(), ts.t, ts.s)

        a_s, s_s = sched.alpha_sigma(ts.s)
        scale = (a_s ** 2 + s_s ** 2).sqrt().reciprocal()
        if cfg.loss_x0_cap > 1:                                   # toward x0-space comparison (§3.7)
            scale = scale * x0_loss_weight(*sched.alpha_sigma(ts.t), a_s, s_s, cfg.loss_x0_cap).to(scale)
        scale = _bcast(scale, x_pred)
        x_pred_n, x_target_n = x_pred.float() * scale, x_target.float() * scale
        per_sample = distill_loss(cfg.loss, x_pred_n, x_target_n, c=cfg.huber_c, reduce=False)
        if cfg.hf_weight > 0:                                     # fine detail weighted up (§3.7)
            per_sample = per_sample + cfg.hf_weight * distill_loss(cfg.loss, laplacian(x_pred_n), laplacian(x_target_n),
                                                                   c=cfg.huber_c, reduce=False)
        _, sigma_t = sched.alpha_sigma(ts.t)
        stats = {"k": ts.k, "tau": ts.tau, "eta": ts.eta, "t": ts.t, "s": ts.s, "sigma": sigma_t,
                 "loss": per_sample.detach().cpu(), "null": is_null, "w_min": w_min, "w_max": w_max,
                 "target_skipped": (~need).to(torch.int64)}
        loss, scalars, aux = per_sample.mean(), {}, {}
        lam = cfg.adv.weight_at(self.step) if self.adv is not None else 0.0
        if lam > 0:                 # adversarial TDD (§11): the student's x0 re-noised, judged by D (frozen here)
            u_d = sample_levels(cfg.adv, b, generator, x0.device)
            fake = x0_pred.float()
            with nets.teacher() as teacher:
                self.adv.heads.requires_grad_(False)
                try:
                    g_logits = self.adv.logits(teacher, renoise_like(sched, fake, u_d, generator), u_d, cond_used)
                finally:
                    self.adv.heads.requires_grad_(True)
            g_loss = hinge_g_loss(g_logits)
            loss = loss + lam * g_loss
            scalars = {"adv/g_loss": float(g_loss.detach()), "adv/lambda": lam}
            aux = {"real": x0.detach(), "fake": fake.detach(), "cond": cond_used.detach(), "u_d": u_d}
        return StepOutput(loss=loss, stats=stats, scalars=scalars, aux=aux)

    # -- the discriminator's step (adversarial TDD) ------------------------------------------------
    def aux_update(self, auxes: list[dict], nets: NetworkRoles, backend, generator) -> dict[str, float]:
        """One hinge-loss update of the discriminator heads on real clip latents vs the student's x0 (both
        re-noised to the same u_d); the frozen features run without gradient, the student is untouched."""
        auxes = [a for a in auxes if a]
        if self.adv is None or not auxes:
            return {}
        real = torch.cat([a["real"] for a in auxes])
        fake = torch.cat([a["fake"] for a in auxes])
        u_d = torch.cat([a["u_d"] for a in auxes])
        cond = auxes[0]["cond"].cat(*[a["cond"] for a in auxes[1:]]) if len(auxes) > 1 else auxes[0]["cond"]
        x = torch.cat([renoise_like(self.schedule, real, u_d, generator),
                       renoise_like(self.schedule, fake, u_d, generator)])
        with torch.no_grad(), nets.teacher() as teacher:
            feats = frozen_features(self.family, teacher, x, torch.cat([u_d, u_d]), cond.cat(cond),
                                    self.adv.early_exit)
        b = real.shape[0]
        frames = real.shape[1] if real.ndim == 5 and self.cfg.adv.temporal else None
        logits = self.adv.heads([f.detach() for f in feats], 2 * b, frames)
        real_l, fake_l = logits[:b], logits[b:]
        d_loss = hinge_d_loss(real_l, fake_l)
        norm = self.adv.step(d_loss, backend)
        return {"adv/d_loss": float(d_loss.detach()), "adv/d_real": float(real_l.detach().mean()),
                "adv/d_fake": float(fake_l.detach().mean()), "adv/d_grad_norm": norm}

    def state_dict(self) -> dict:
        return {"discriminator": self.adv.state_dict()} if self.adv is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.adv is not None and "discriminator" in state:
            self.adv.load_state_dict(state["discriminator"])


register_method("tdd", TDD)
