"""A tiny stand-in Family (EDM video or VP image) implementing tdd_video.families.base.Family,
used by the method/engine tests independently of the real SVD/SDXL adapters."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tdd_video.core import EDMSchedule, VPSchedule
from tdd_video.families.base import Conditioning, Family


@dataclass
class ToyCond(Conditioning):
    emb: torch.Tensor  # [B, D]


class ToyNet(nn.Module):
    """x [B, (F,) C, h, w] -> same shape; conditioned on a time scalar and an embedding."""

    def __init__(self, channels: int = 4, dim: int = 8, seed: int = 0, hidden: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.inp = nn.Conv2d(channels, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, channels, 3, padding=1)
        self.emb = nn.Linear(dim + 1, hidden)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 * (16 / hidden) ** 0.5)

    def forward(self, x, t, emb):
        dtype = self.inp.weight.dtype
        x, t, emb = x.to(dtype), t.to(dtype), emb.to(dtype)
        shape = x.shape
        x = x.reshape(-1, *shape[-3:])
        rep = x.shape[0] // emb.shape[0]
        e = self.emb(torch.cat([emb, t[:, None].to(emb.dtype)], 1)).repeat_interleave(rep, 0)
        h = torch.tanh(self.inp(x) + e[:, :, None, None])
        return self.out(h).reshape(shape)


class ToyFamily(Family):
    def __init__(self, kind: str = "edm", seed: int = 0, hidden: int = 16):
        self.name = "toy-" + kind
        self.schedule = EDMSchedule() if kind == "edm" else VPSchedule()
        self.unet = ToyNet(seed=seed, hidden=hidden)
        self.vae = nn.Identity()

    def encode_conditioning(self, batch, generator=None, train=True):
        return ToyCond(emb=batch["emb"].float())

    def null_conditioning(self, cond):
        return ToyCond(emb=torch.zeros_like(cond.emb))

    def encode_latents(self, batch, generator=None):
        return batch["latents"].float()

    def decode_latents(self, latents, decode_chunk=None):
        return latents

    def denoise(self, x, u, cond, unet=None):
        net = unet if unet is not None else self.unet
        u = torch.as_tensor(u, dtype=torch.float64)
        a, s = self.schedule.alpha_sigma(u)
        shape = (-1,) + (1,) * (x.ndim - 1)
        a, s = a.float().reshape(shape), s.float().reshape(shape)
        if self.schedule.kind == "edm":
            c_skip, c_out, c_in, c_noise = self.schedule.precondition(s.reshape(-1).clamp_min(1e-3))
            f = net(x * c_in.reshape(shape).float(), c_noise.float(), cond.emb)
            x0 = c_skip.reshape(shape) * x + c_out.reshape(shape) * f.float()
        else:
            eps = net(x, u.float(), cond.emb).float()
            x0 = (x - s * eps) / a
        return torch.where((u == 0).reshape(shape), x, x0.float())


def animatelcm_reference(denoise, noise: torch.Tensor, steps: int, generator: torch.Generator,
                         schedule: EDMSchedule | None = None, num_grid: int = 40) -> torch.Tensor:
    """AnimateLCM's multistep sampler written out independently of tdd_video.sampling (a test reference):
    Karras grid of `num_grid` σ from σ_max to σ_min, steps at indices [0, r, ..., (K−1)r], r = N // K;
    x = σ_0·ε, then x0 = D(x, u_i) and x = x0 + σ_next·z (fresh z) until the last step returns x0."""
    schedule = schedule or EDMSchedule()
    u_grid = 1.0 - torch.arange(num_grid, dtype=torch.float64) / (num_grid - 1)
    u_grid[-1] = 1e-12
    idx = [j * (num_grid // steps) for j in range(steps)]
    b = noise.shape[0]
    x = float(schedule.sigma(u_grid[idx[0]])) * noise.float()
    x0 = x
    for j, i in enumerate(idx):
        x0 = denoise(x, u_grid[i].repeat(b)).float()
        if j + 1 < len(idx):
            z = torch.randn(noise.shape, generator=generator, dtype=torch.float32).to(noise.device)
            x = x0 + float(schedule.sigma(u_grid[idx[j + 1]])) * z
    return x0
