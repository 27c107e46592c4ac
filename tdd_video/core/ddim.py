"""The DDIM jump used as TDD's student parameterisation and sampler step (docs/math.md §2, §5).

Written once for any forward process x_u = alpha(u)·x0 + sigma(u)·eps:
  eps_hat = (x_t − alpha_t·x0_hat)/sigma_t,   x_s = alpha_s·x0_hat + sigma_s·eps_hat.
EDM (alpha ≡ 1): x_s = x0_hat + (σ_s/σ_t)(x_t − x0_hat).  VP: DDIM (Song et al. 2021, Eq. 12, η = 0).
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def _bcast(v, like: Tensor) -> Tensor:
    """Per-sample [B] (or scalar) coefficients broadcast to x's shape [B, ...], in x's dtype."""
    v = torch.as_tensor(v, device=like.device)
    if v.ndim == 0:
        return v.to(like.dtype)
    return v.to(like.dtype).reshape(v.shape[0], *([1] * (like.ndim - 1)))


def ddim_jump(x_t: Tensor, x0_hat: Tensor, alpha_t, sigma_t, alpha_s, sigma_s) -> Tensor:
    """DDIM step t → s given the denoised estimate. Shapes: x_t, x0_hat [B, ...]; coefficients [B] or scalar.

    Exact at the ends: s = t returns x_t, sigma_s = 0 returns x0_hat; a clean source
    (sigma_t = 0) returns alpha_s·x0_hat."""
    a_t, s_t, a_s, s_s = (_bcast(v, x_t) for v in (alpha_t, sigma_t, alpha_s, sigma_s))
    safe = torch.where(s_t > 0, s_t, torch.ones_like(s_t))
    eps_hat = torch.where(s_t > 0, (x_t - a_t * x0_hat) / safe, torch.zeros_like(x_t))
    same = (a_s == a_t) & (s_s == s_t)
    return torch.where(same, x_t, a_s * x0_hat + s_s * eps_hat)


def jump(schedule, x_t: Tensor, x0_hat: Tensor, u_t, u_s) -> Tensor:
    """f(x_t, t → s) on the shared u axis: `ddim_jump` with the schedule's (alpha, sigma)."""
    a_t, s_t = schedule.alpha_sigma(torch.as_tensor(u_t, dtype=torch.float64))
    a_s, s_s = schedule.alpha_sigma(torch.as_tensor(u_s, dtype=torch.float64))
    return ddim_jump(x_t, x0_hat, a_t, s_t, a_s, s_s)


def x0_loss_weight(alpha_t, sigma_t, alpha_s, sigma_s, cap: float) -> Tensor:
    """Per-sample factor min(√(α_s² + σ_s²) / c_ts, cap), with c_ts = α_s − σ_s·α_t/σ_t the weight the
    DDIM jump t → s puts on x̂0 (docs/math.md §3.7). Multiplying the VP-scaled x_s difference by the
    uncapped factor turns it into the x̂0 difference; cap = 1 returns 1 (the x_s-space loss unchanged),
    and at the clean end (σ_s = 0) the factor is 1 for any cap. Coefficients [B] or scalar, float64 math."""
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    a_t, s_t, a_s, s_s = (torch.as_tensor(v, dtype=torch.float64) for v in (alpha_t, sigma_t, alpha_s, sigma_s))
    c_ts = a_s - s_s * a_t / torch.where(s_t > 0, s_t, torch.ones_like(s_t))
    ratio = (a_s ** 2 + s_s ** 2).sqrt() / c_ts.clamp_min(1e-12)
    return ratio.clamp(1.0, float(cap)).float()


def add_noise(schedule, x0: Tensor, noise: Tensor, u) -> Tensor:
    """Forward process x_u = alpha(u)·x0 + sigma(u)·noise (u [B] or scalar)."""
    a, s = schedule.alpha_sigma(torch.as_tensor(u, dtype=torch.float64))
    return _bcast(a, x0) * x0 + _bcast(s, x0) * noise


def renoise(schedule, x_s: Tensor, u_s, u_to, noise: Tensor) -> Tensor:
    """γ-sampling re-noise from s up to a noisier u_to ≥ u_s with fresh noise z (docs/math.md §5).

    General form: x = (a_to/a_s)·x_s + sqrt(σ_to² − (a_to/a_s)²·σ_s²)·z.
    EDM: x_s + sqrt(σ_to² − σ_s²)·z;  VP: sqrt(abar_to/abar_s)·x_s + sqrt(1 − abar_to/abar_s)·z."""
    a_s, s_s = schedule.alpha_sigma(torch.as_tensor(u_s, dtype=torch.float64))
    a_to, s_to = schedule.alpha_sigma(torch.as_tensor(u_to, dtype=torch.float64))
    ratio = a_to / a_s
    std = (s_to ** 2 - (ratio * s_s) ** 2).clamp_min(0).sqrt()
    return _bcast(ratio, x_s) * x_s + _bcast(std, x_s) * noise


def heun_step(schedule, x: Tensor, x0_a: Tensor, x_euler: Tensor, x0_b: Tensor, u_a, u_b) -> Tensor:
    """Heun's second-order step u_a → u_b (docs/math.md §3, teacher solver), float32 [B, ...].

    x0_a = D(x, u_a); x_euler = the Euler/DDIM jump of x to u_b; x0_b = D(x_euler, u_b). In the
    coordinates x̄ = x/α, σ̄ = σ/α the probability-flow ODE is dx̄/dσ̄ = ε, so
        x̄_b = x/α_a + (σ_b/α_b − σ_a/α_a)·(ε_a + ε_b)/2,  x_b = α_b·x̄_b
    (EDM's Heun step when α ≡ 1). Rows that land on the clean end (u_b = 0, where ε is undefined)
    keep the Euler step."""
    def col(v):
        v = torch.as_tensor(v, dtype=torch.float64)
        return v.to(x.device, torch.float32).reshape(v.shape[0], *([1] * (x.ndim - 1)))

    a_a, s_a = schedule.alpha_sigma(torch.as_tensor(u_a, dtype=torch.float64))
    a_b, s_b = schedule.alpha_sigma(torch.as_tensor(u_b, dtype=torch.float64))
    a_a, s_a, a_b, s_b = (col(v) for v in (a_a, s_a, a_b, s_b))
    inner = col(torch.as_tensor(u_b) > 0).bool()
    eps_a = (x - a_a * x0_a) / s_a
    eps_b = (x_euler - a_b * x0_b) / torch.where(inner, s_b, torch.ones_like(s_b))
    x_bar = x / a_a + (s_b / a_b - s_a / a_a) * 0.5 * (eps_a + eps_b)
    return torch.where(inner, a_b * x_bar, x_euler).float()
