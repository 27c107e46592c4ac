"""Distillation++: inference-time teacher refinement of the student's x0 (docs/math.md §7, arXiv 2412.08871).

At each of the first `steps` sampler steps, with the student's estimate x0_θ and the next sampler
level s = u_{i+1}:
  x_s   = α_s·x0_θ + σ_s·z                 (fresh z from the caller's generator; EDM α = 1)
  x0_ψ  = CFG teacher denoise at s          (one batched 2B forward; SVD frame-wise 1 → 3 by default)
  x0    = (1 − λ)·x0_θ + λ·x0_ψ            (x0-space lerp, λ = `strength`, default 0.05)
One teacher call per refined step, no inner loop. The teacher is
* an explicit frozen UNet (`RefineSettings.teacher`, e.g. for a fully fine-tuned student), or
* the student's own UNet with its LoRA adapters disabled (the default): no second copy in memory.
A student without adapters (fused, or a plain model) has no teacher inside and is refused.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from tdd_video.core import add_noise
from tdd_video.errors import ConfigError, check_range
from tdd_video.lora import adapters_disabled
from tdd_video.sampling.guided import guidance_scale, guided_denoise

Tensor = torch.Tensor


@dataclass
class RefineSettings:
    """Distillation++ settings: λ (`strength`), number of refined steps, teacher guidance, teacher."""

    strength: float = 0.05
    steps: int = 1
    guidance: float | tuple[float, float] | None = None   # None: frame-wise (1, 3) for video, 5.0 for images
    teacher: nn.Module | None = None

    def __post_init__(self):
        check_range("teacher_refine", self.strength, 0.0, 1.0)
        check_range("refine_steps", self.steps, 0, None)


def has_adapters(unet: nn.Module) -> bool:
    """True if `unet` carries (unfused or fused-but-unmerged) PEFT/LoRA adapter layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    return any(isinstance(m, BaseTunerLayer) for m in unet.modules())


def teacher_context(family, settings: RefineSettings):
    """(context manager, unet override) giving the teacher for refinement; clear error if none exists."""
    if settings.teacher is not None:
        return contextlib.nullcontext(), settings.teacher
    if not has_adapters(family.unet):
        raise ConfigError("teacher_refine", "Distillation++ needs a teacher: a LoRA student on the base "
                                            "(teacher = adapter disabled; do not --fuse) or an explicit teacher UNet")
    return adapters_disabled(family.unet), None


def refine_x0(family, x0_student: Tensor, u_next: float, cond, null_cond, settings: RefineSettings,
              generator: torch.Generator | None = None, stats=None) -> Tensor:
    """One Distillation++ correction of x0 (docs/math.md §7). x0_student [B, ...] float32; returns float32."""
    b = x0_student.shape[0]
    z = torch.randn(x0_student.shape, generator=generator, dtype=torch.float32,
                    device=generator.device if generator is not None else "cpu").to(x0_student.device)
    u = torch.full((b,), float(u_next), dtype=torch.float64, device=x0_student.device)
    x_s = add_noise(family.schedule, x0_student, z, u)
    ctx, unet = teacher_context(family, settings)
    passes_before = stats.unet_passes if stats is not None else 0
    with ctx, torch.no_grad():
        g = settings.guidance if settings.guidance is not None else ((1.0, 3.0) if x_s.ndim == 5 else 5.0)
        x0_teacher = guided_denoise(family, x_s, u, cond, null_cond, guidance_scale(g, x_s),
                                    unet=unet, stats=stats)
    if stats is not None:
        stats.refine_passes += stats.unet_passes - passes_before
    lam = float(settings.strength)
    return (1.0 - lam) * x0_student + lam * x0_teacher
