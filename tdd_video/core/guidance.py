"""Classifier-free guidance, frame-wise guidance and the decoupled-guidance null mask (docs/math.md §1a, §4)."""
from __future__ import annotations

import torch

from tdd_video.errors import check_range

Tensor = torch.Tensor


def cfg(uncond: Tensor, cond: Tensor, scale) -> Tensor:
    """Imagen-form CFG: uncond + w·(cond − uncond). w scalar or broadcastable to [B, ...];
    w = 1 returns `cond` exactly, w = 0 returns `uncond`."""
    if isinstance(scale, (int, float)) and scale == 1:
        return cond
    return uncond + torch.as_tensor(scale, dtype=cond.dtype, device=cond.device) * (cond - uncond)


def framewise_scale(w_min, w_max, num_frames: int, ndim: int = 5) -> Tensor:
    """Frame-wise guidance w_f = linspace(w_min, w_max, F) per sample (SVD pipeline rule).

    w_min, w_max: scalars or [B]. Returns [B, F, 1, …] (ndim dims) ready to broadcast against
    video latents [B, F, C, H, W]."""
    w_min = torch.as_tensor(w_min, dtype=torch.float32).reshape(-1)
    w_max = torch.as_tensor(w_max, dtype=torch.float32).reshape(-1)
    w_min, w_max = torch.broadcast_tensors(w_min, w_max)
    frac = torch.linspace(0.0, 1.0, num_frames) if num_frames > 1 else torch.zeros(1)
    w = w_min[:, None] + (w_max - w_min)[:, None] * frac[None, :]
    return w.reshape(w.shape[0], num_frames, *([1] * (ndim - 2)))


def guidance_weights(w_min: Tensor, w_max: Tensor, x0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample guidance weights shaped for x0: video [B, F, ...] gets the frame-wise ramp
    linspace(w_min, w_max, F); an image [B, C, H, W] gets w_max. Returns (w, w_min, w_max), with
    w_min := w_max for images so logs show the weight actually used."""
    b = x0.shape[0]
    if x0.ndim == 5:
        return framewise_scale(w_min, w_max, x0.shape[1], ndim=5).to(x0.device), w_min, w_max
    return w_max.reshape(b, *([1] * (x0.ndim - 1))).to(x0.device), w_max, w_max


def sample_guidance_range(batch: int, w_min_range, w_max_range, generator=None) -> tuple[Tensor, Tensor]:
    """Draw per-sample (w_min, w_max) uniformly from [lo, hi] ranges (a single number = fixed). [B] each."""
    def draw(r):
        lo, hi = (r, r) if isinstance(r, (int, float)) else (float(r[0]), float(r[1]))
        check_range("guidance range", hi, lo, None)
        return lo + (hi - lo) * torch.rand(batch, generator=generator)
    return draw(w_min_range), draw(w_max_range)


def null_mask(batch: int, p_uncond: float, generator: torch.Generator | None = None) -> Tensor:
    """Decoupled guidance: which samples train on the null conditioning ∅ (prob. p_uncond each). bool [B]."""
    check_range("p_uncond", p_uncond, 0.0, 1.0)
    return torch.rand(batch, generator=generator) < p_uncond


def where_null(mask: Tensor, cond: Tensor, null: Tensor) -> Tensor:
    """Per-sample select: null[i] where mask[i] else cond[i]. mask [B], tensors [B, ...]."""
    m = mask.to(cond.device).reshape(mask.shape[0], *([1] * (cond.ndim - 1)))
    return torch.where(m, null.to(cond.dtype).expand_as(cond), cond)
