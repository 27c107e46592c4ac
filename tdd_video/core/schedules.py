"""Noise schedules of the two families on one shared time axis u in [0, 1] (docs/math.md §1).

Every schedule maps u to the pair (alpha(u), sigma(u)) of the forward process
x_u = alpha(u)·x0 + sigma(u)·eps, with u = 0 the exact clean end (alpha = 1, sigma = 0).

* EDMSchedule (SVD, variance exploding): alpha = 1, sigma = Karras ramp
  sigma(u) = (sigma_min^(1/rho) + u·(sigma_max^(1/rho) − sigma_min^(1/rho)))^rho for u > 0.
* VPSchedule (SDXL, discrete variance preserving): integer timestep t(u) = floor(u·T) − 1
  (u = k/N maps to t = k·T/N − 1), alpha = sqrt(abar_t), sigma = sqrt(1 − abar_t), with
  scaled-linear betas; t = −1 is the clean end.

Both expose `quantize(u)` (snap u onto the family's time lattice) and `shrink(u, η)`, TDD's target
level (1 − η)·u in the schedule's own units (docs/math.md §3.3): continuous u for EDM, integer
timesteps for VP.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from tdd_video.errors import check_range

Tensor = torch.Tensor


def _as_tensor(u) -> Tensor:
    return u if isinstance(u, torch.Tensor) else torch.as_tensor(u, dtype=torch.float64)


@dataclass(frozen=True)
class EDMSchedule:
    """EDM / VE schedule with v-style preconditioning (SVD, sigma_data = 1) — docs/math.md §1a."""

    sigma_min: float = 0.002
    sigma_max: float = 700.0
    rho: float = 7.0
    sigma_data: float = 1.0
    kind: str = field(default="edm", init=False)

    def __post_init__(self):
        check_range("schedule.sigma_min", self.sigma_min, 0.0, None, lo_open=True)
        check_range("schedule.sigma_max", self.sigma_max, self.sigma_min, None, lo_open=True)
        check_range("schedule.rho", self.rho, 0.0, None, lo_open=True)

    def sigma(self, u) -> Tensor:
        """sigma(u), Karras ramp (rho = 7) for u > 0 and exactly 0 at u = 0. Shape of u."""
        u = _as_tensor(u)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        ramp = (lo + u.to(torch.float64) * (hi - lo)) ** self.rho
        return torch.where(u > 0, ramp, torch.zeros_like(ramp)).to(u.dtype if u.is_floating_point() else torch.float64)

    def u_of_sigma(self, sigma) -> Tensor:
        """Inverse of the Karras ramp; sigma = 0 maps to u = 0."""
        sigma = _as_tensor(sigma).to(torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        u = (sigma.clamp_min(self.sigma_min) ** (1 / self.rho) - lo) / (hi - lo)
        return torch.where(sigma > 0, u, torch.zeros_like(u))

    def quantize(self, u) -> Tensor:
        """EDM time is continuous: identity."""
        return _as_tensor(u)

    def shrink(self, u, eta) -> Tensor:
        """TDD / γ-sampling target of level u: s = (1 − η)·u on the continuous u axis (docs/math.md §3.3, §5).

        η shrinks u, not σ. u and η broadcast (floats or tensors); s ≤ u for η ∈ [0, 1)."""
        return (1.0 - _as_tensor(eta)) * _as_tensor(u)

    def alpha_sigma(self, u) -> tuple[Tensor, Tensor]:
        """(alpha, sigma) of x_u = alpha·x0 + sigma·eps: (1, sigma(u))."""
        s = self.sigma(u)
        return torch.ones_like(s), s

    def precondition(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """EDM v-preconditioning in float32+: c_skip = sd²/(σ²+sd²), c_out = −σ·sd/√(σ²+sd²),
        c_in = 1/√(σ²+sd²), c_noise = ¼·ln σ.  (Karras et al. 2022, Table 1 with SVD's sign.)"""
        sigma = sigma.to(torch.float64 if sigma.dtype == torch.float64 else torch.float32)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = -sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1.0 / (sigma ** 2 + sd2).sqrt()
        c_noise = 0.25 * sigma.clamp_min(1e-20).log()
        return c_skip, c_out, c_in, c_noise


def scaled_linear_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> Tensor:
    """abar_t for SD/SDXL's scaled_linear betas: beta_t = linspace(√b0, √b1, T)²; float64 [T]."""
    betas = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_train_timesteps,
                           dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class VPSchedule:
    """Discrete VP schedule with eps-prediction (SDXL) — docs/math.md §1b."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    kind: str = field(default="vp", init=False)

    def __post_init__(self):
        check_range("schedule.num_train_timesteps", self.num_train_timesteps, 2, None)
        check_range("schedule.beta_start", self.beta_start, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range("schedule.beta_end", self.beta_end, self.beta_start, 1.0, hi_open=True)

    @property
    def alphas_cumprod(self) -> Tensor:
        return scaled_linear_alphas_cumprod(self.num_train_timesteps, self.beta_start, self.beta_end)

    def timestep(self, u) -> Tensor:
        """Integer timestep t(u) = floor(u·T + 1e-3) − 1 (int64); −1 denotes the clean end.

        The 1e-3 (of one timestep) absorbs float32 rounding of u = k/N."""
        u = _as_tensor(u).to(torch.float64)
        return torch.floor(u * self.num_train_timesteps + 1e-3).to(torch.int64) - 1

    def u_of_timestep(self, t) -> Tensor:
        """u = (t + 1)/T, the inverse of `timestep` on integers."""
        t = _as_tensor(t).to(torch.float64)
        return (t + 1) / self.num_train_timesteps

    def quantize(self, u) -> Tensor:
        """Round u down onto the integer timestep lattice (docs/math.md §3.3: 'round down')."""
        u_in = _as_tensor(u)
        out = self.u_of_timestep(self.timestep(u_in))
        return out.to(u_in.dtype) if u_in.is_floating_point() else out

    def shrink(self, u, eta) -> Tensor:
        """TDD / γ-sampling target of level u in integer timesteps: s = floor((1 − η)·τ), τ = t(u) (docs/math.md
        §3.3, §5). Returned as u = (s + 1)/T, in u's float dtype (float64 otherwise); u and η broadcast.

        This is the official TDD rule (scheduler `timesteps_s`, training `select_s`), evaluated in float64
        like the official numpy code. It is NOT quantize((1 − η)·u): shrinking u = (τ + 1)/T and rounding
        down lands one timestep lower for some pairs (η = 0.2, τ = 875: 700, not 699). The clean end
        (τ = −1) stays the clean end, and s ≤ τ always."""
        u_in = _as_tensor(u)
        tau = self.timestep(u_in)
        eta = _as_tensor(eta).to(torch.float64)
        s = torch.floor((1.0 - eta) * tau.to(torch.float64)).to(torch.int64)
        s = torch.where(tau < 0, tau, torch.minimum(s, tau))
        out = self.u_of_timestep(s)
        return out.to(u_in.dtype) if u_in.is_floating_point() else out

    def alpha_sigma(self, u) -> tuple[Tensor, Tensor]:
        """(sqrt(abar_t), sqrt(1 − abar_t)) at t = t(u); (1, 0) at the clean end t = −1."""
        u = _as_tensor(u)
        t = self.timestep(u)
        abar = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])[(t + 1).clamp(0, None)]
        dtype = u.dtype if u.is_floating_point() else torch.float64
        return abar.sqrt().to(dtype), (1.0 - abar).sqrt().to(dtype)


Schedule = EDMSchedule | VPSchedule


def make_schedule(kind: str, **kwargs) -> Schedule:
    """Build a schedule by family kind: 'edm' (SVD) or 'vp' (SDXL)."""
    if kind == "edm":
        return EDMSchedule(**kwargs)
    if kind == "vp":
        return VPSchedule(**kwargs)
    from tdd_video.errors import ConfigError
    raise ConfigError("schedule.kind", f"got {kind!r}, allowed values are 'edm', 'vp'")
