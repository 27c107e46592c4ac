"""The guided denoiser every sampler calls, with the UNet-pass bookkeeping of a sampling run.

`guided_denoise` is the family's one guided denoiser (``Family.denoise_cfg``: ∅ and c as ONE batched
forward of 2B, Imagen-form CFG, docs/math.md §4) plus a count of UNet passes: a guided call
(g ≠ 1) counts 2 passes, as the stock pipeline's 25-step CFG run counts 50.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from tdd_video.core import framewise_scale
from tdd_video.errors import ConfigError

Tensor = torch.Tensor
Guidance = float | tuple[float, float]


@dataclass
class SamplingStats:
    """What a sampling run cost: UNet passes (per-sample-batch evaluations), forward calls, wall time."""

    unet_passes: int = 0
    forward_calls: int = 0
    refine_passes: int = 0
    step_seconds: list[float] = field(default_factory=list)
    refine_seconds: list[float] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.step_seconds))


def guidance_scale(guidance: Guidance, x: Tensor) -> float | Tensor:
    """Scalar g, or (g_min, g_max) → frame-wise weights linspace(g_min, g_max, F) [1, F, 1, 1, 1] (video)."""
    if isinstance(guidance, (tuple, list)):
        g_min, g_max = (float(v) for v in guidance)
        if g_min == g_max:
            return g_min
        if x.ndim != 5:
            raise ConfigError("guidance", "frame-wise guidance (g_min, g_max) needs video latents [B, F, C, h, w]")
        return framewise_scale(g_min, g_max, x.shape[1], ndim=x.ndim).to(x.device)
    return float(guidance)


def is_identity(scale) -> bool:
    return isinstance(scale, float) and scale == 1.0


def guided_denoise(family, x: Tensor, u: Tensor, cond, null, scale, unet: nn.Module | None = None,
                   stats: SamplingStats | None = None) -> Tensor:
    """x0 = x0(∅) + g·(x0(c) − x0(∅)) through ``family.denoise_cfg``; g = 1 → one plain forward.
    x [B, ...]; u [B] float64; `stats` counts the passes."""
    out = family.denoise_cfg(x, u, cond, scale, null=null, unet=unet)
    if stats is not None:
        stats.unet_passes += 1 if is_identity(scale) else 2
        stats.forward_calls += 1
    return out
