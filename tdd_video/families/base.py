"""The family contract: everything a method or sampler may know about a model family (SPEC §1).

A family adapter owns the networks (unet, vae, conditioning encoders) and the schedule, and
exposes the k-diffusion style denoiser ``denoise(x, u, cond) -> x0_hat``. Methods, samplers and
losses never see eps/v/timestep encodings.

Batch contract (what data loaders hand to ``encode_conditioning``), per family:

* SVD (video, latents [B, F, 4, H/8, W/8]):
  - ``pixel_values`` [B, F, 3, H, W] float in [-1, 1]   (raw-video path), or
    ``latents`` [B, F, 4, h, w] (already × scaling_factor) + ``first_frame`` [B, 3, H, W] in [-1, 1]
    + ``image_emb`` [B, 1, D]                            (latent-cache path);
  - ``fps_id`` [B] int (the clip's real fps − 1, SPEC §1a), ``motion_bucket_id`` [B] int.
* SDXL (image, latents [B, 4, H/8, W/8]):
  - ``pixel_values`` [B, 3, H, W] in [-1, 1] or ``latents``; ``caption`` list[str] (or cached
    ``prompt_embeds`` [B, 77, 2048] + ``pooled_prompt_embeds`` [B, 1280]);
  - ``original_size`` [B, 2], ``crop_coords`` [B, 2], ``target_size`` [B, 2] (int, (h, w)).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

Tensor = torch.Tensor


@dataclass
class Conditioning:
    """Base class of per-sample conditioning: every field is a tensor with batch dim 0."""

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def cat(self, *others: "Conditioning") -> "Conditioning":
        """Concatenate along the batch (for one batched CFG forward: [uncond; cond])."""
        return replace(self, **{k: torch.cat([v] + [o.tensors()[k] for o in others]) for k, v in self.tensors().items()})

    def select(self, mask: Tensor, null: "Conditioning") -> "Conditioning":
        """Per sample: null[i] where mask[i] else self[i] (decoupled guidance, SPEC §4)."""
        from tdd_video.core.guidance import where_null
        nt = null.tensors()
        return replace(self, **{k: where_null(mask, v, nt[k]) for k, v in self.tensors().items()})

    def index(self, idx) -> "Conditioning":
        return replace(self, **{k: v[idx] for k, v in self.tensors().items()})

    def to(self, *args, **kwargs) -> "Conditioning":
        return replace(self, **{k: v.to(*args, **kwargs) for k, v in self.tensors().items()})

    def detach(self) -> "Conditioning":
        return replace(self, **{k: v.detach() for k, v in self.tensors().items()})

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors().values())).shape[0]


class Family(ABC):
    """A model family adapter. Concrete: SVDFamily (EDM), SDXLFamily (VP)."""

    name: str
    schedule: object          # tdd_video.core.EDMSchedule | VPSchedule
    unet: nn.Module           # the (possibly LoRA-injected) denoiser network
    vae: nn.Module

    @abstractmethod
    def encode_conditioning(self, batch: dict, generator: torch.Generator | None = None,
                            train: bool = True) -> Conditioning:
        """Conditioning c for a data batch (SPEC §1a/§1b), per sample; no grad."""

    @abstractmethod
    def null_conditioning(self, cond: Conditioning) -> Conditioning:
        """The null conditioning ∅ the diffusers pipeline uses for its unconditional branch."""

    @abstractmethod
    def encode_latents(self, batch: dict, generator: torch.Generator | None = None) -> Tensor:
        """Clean latents x0 (× scaling_factor) of a batch: [B, F, C, h, w] (video) or [B, C, h, w]."""

    @abstractmethod
    def decode_latents(self, latents: Tensor, decode_chunk: int | None = None) -> Tensor:
        """Pixels in [-1, 1] from latents (inverse of encode_latents)."""

    @abstractmethod
    def denoise(self, x: Tensor, u: Tensor, cond: Conditioning, unet: nn.Module | None = None) -> Tensor:
        """x0_hat = D(x_u, u, c) in float32 math around a possibly bf16 network (SPEC §1).

        x: noisy latents [B, ...]; u: [B] on the shared time axis (float64); returns float32 x0
        of x's shape. u = 0 returns x exactly. `unet` overrides self.unet (e.g. a frozen teacher copy)."""
