"""Distillation losses, computed in float32 (docs/math.md §3.7, §8)."""
from __future__ import annotations

import torch

from tdd_video.errors import ConfigError, check_range

Tensor = torch.Tensor


def _per_sample(err: Tensor) -> Tensor:
    return err.reshape(err.shape[0], -1).mean(dim=1)


def pseudo_huber_loss(pred: Tensor, target: Tensor, c: float = 1e-3, weight: Tensor | None = None,
                      reduce: bool = True) -> Tensor:
    """mean(√((pred − target)² + c²) − c) (Song & Dhariwal 2023), per-sample weight [B] optional.
    Returns a scalar, or [B] per-sample losses with reduce=False."""
    check_range("huber_c", c, 0.0, None, lo_open=True)
    d = pred.float() - target.float()
    per = _per_sample(torch.sqrt(d * d + c * c) - c)
    if weight is not None:
        per = per * weight.to(per)
    return per.mean() if reduce else per


def l2_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None, reduce: bool = True) -> Tensor:
    """mean((pred − target)²) per sample, optionally weighted [B]; scalar or [B]."""
    d = pred.float() - target.float()
    per = _per_sample(d * d)
    if weight is not None:
        per = per * weight.to(per)
    return per.mean() if reduce else per


def distill_loss(kind: str, pred: Tensor, target: Tensor, c: float = 1e-3, weight: Tensor | None = None,
                 reduce: bool = True) -> Tensor:
    """Dispatch: 'huber' (pseudo-Huber) or 'l2'."""
    if kind == "huber":
        return pseudo_huber_loss(pred, target, c, weight, reduce)
    if kind == "l2":
        return l2_loss(pred, target, weight, reduce)
    raise ConfigError("loss", f"got {kind!r}, allowed values are 'huber', 'l2'")


def laplacian(x: Tensor) -> Tensor:
    """3×3 Laplacian [[0,1,0],[1,−4,1],[0,1,0]] over the last two (spatial) dims of [..., H, W], edges replicated,
    so a constant image maps to 0 (docs/math.md §3.7, option `method.hf_weight`). float32, same shape."""
    shape = x.shape
    if len(shape) < 2:
        raise ValueError(f"laplacian needs [..., H, W], got shape {tuple(shape)}")
    y = torch.nn.functional.pad(x.float().reshape(-1, 1, *shape[-2:]), (1, 1, 1, 1), mode="replicate")
    lap = (y[..., :-2, 1:-1] + y[..., 2:, 1:-1] + y[..., 1:-1, :-2] + y[..., 1:-1, 2:] - 4 * y[..., 1:-1, 1:-1])
    return lap.reshape(shape)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss mean(relu(1 − D(real))) + mean(relu(1 + D(fake))) (docs/math.md §11), fp32."""
    return torch.relu(1.0 - real_logits.float()).mean() + torch.relu(1.0 + fake_logits.float()).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator hinge loss −mean(D(fake)) (docs/math.md §11), fp32."""
    return -fake_logits.float().mean()
