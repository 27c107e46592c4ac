"""x0 clipping for few-step sampling (docs/math.md §6)."""
from __future__ import annotations

import torch

from tdd_video.errors import ConfigError, check_range

Tensor = torch.Tensor


def clip_x0_static(x0: Tensor, bound: float) -> Tensor:
    """clamp(x0, −b, b), b > 0 in latent units. Values already in [−b, b] are returned unchanged."""
    check_range("clip_value", bound, 0.0, None, lo_open=True)
    return x0.clamp(-bound, bound)


def clip_x0_dynamic(x0: Tensor, bound: float, quantile: float = 0.995) -> Tensor:
    """Per-sample dynamic clipping: s = max(quantile(|x0|, q), b); clamp(x0, −s, s). x0 [B, ...].

    A sample is one image or one whole video; in-range values are never rescaled (unlike
    diffusers' thresholding, which divides by s — wrong for latents)."""
    check_range("clip_value", bound, 0.0, None, lo_open=True)
    check_range("clip_quantile", quantile, 0.0, 1.0, lo_open=True)
    flat = x0.detach().abs().reshape(x0.shape[0], -1).float()
    s = torch.quantile(flat, quantile, dim=1).clamp_min(bound).to(x0.dtype)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s)


def clip_x0(x0: Tensor, mode: str, bound: float, quantile: float = 0.995) -> Tensor:
    """Dispatch on mode: 'none' | 'static' | 'dynamic'."""
    if mode == "none":
        return x0
    if mode == "static":
        return clip_x0_static(x0, bound)
    if mode == "dynamic":
        return clip_x0_dynamic(x0, bound, quantile)
    raise ConfigError("clip_mode", f"got {mode!r}, allowed values are 'none', 'static', 'dynamic'")
