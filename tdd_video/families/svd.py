"""Stable Video Diffusion family adapter (EDM, v-preconditioning, image-to-video) — docs/math.md §1a.

Latents are video tensors [B, F, 4, h, w] (× vae scaling_factor). Conditioning per sample:
CLIP image embedding of the clean first frame [B, 1, D], the VAE latent of the noise-augmented
first frame [B, 4, h, w] (``.mode()``, NOT scaled; repeated over frames inside ``denoise``) and
added_time_ids [B, 3] = [fps_id, motion_bucket_id, σ_aug].
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace

import torch
from einops import rearrange
from torch import nn

from tdd_video.core.schedules import EDMSchedule
from tdd_video.errors import ConfigError
from tdd_video.families.base import Conditioning, DiffusersFamily, place_modules
from tdd_video.families.tiny import SVD_SCHEDULER_CONFIG, tiny_svd_components

Tensor = torch.Tensor
SVD_COMPONENTS = ("unet", "vae", "image_encoder", "feature_extractor", "scheduler")


@dataclass
class SVDConditioning(Conditioning):
    image_emb: Tensor       # [B, 1, D] CLIP image embedding of the clean first frame
    cond_latent: Tensor     # [B, 4, h, w] VAE .mode() latent of the noise-augmented first frame (unscaled)
    added_time_ids: Tensor  # [B, 3] float32: fps_id, motion_bucket_id, noise_aug_strength


def _per_sample(value, batch: int, name: str, dtype=torch.float32) -> Tensor:
    """A scalar or [B] value as a float [B] tensor (clear error on a wrong batch size)."""
    t = torch.as_tensor(value, dtype=dtype).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch).clone()
    if t.numel() != batch:
        raise ConfigError(name, f"expected a scalar or {batch} per-sample values, got shape {tuple(t.shape)}")
    return t


class SVDFamily(DiffusersFamily):
    """SVD / SVD-xt adapter: owns unet, vae, image_encoder, feature_extractor and the EDM schedule."""

    name = "svd"
    components = SVD_COMPONENTS
    pipeline_class = "StableVideoDiffusionPipeline"

    def __init__(self, unet: nn.Module, vae: nn.Module, image_encoder: nn.Module, feature_extractor,
                 scheduler_config: dict | None = None):
        self.unet, self.vae, self.image_encoder, self.feature_extractor = unet, vae, image_encoder, feature_extractor
        self.scheduler_config = dict(scheduler_config or SVD_SCHEDULER_CONFIG)
        self.schedule = EDMSchedule(sigma_min=float(self.scheduler_config.get("sigma_min", 0.002)),
                                    sigma_max=float(self.scheduler_config.get("sigma_max", 700.0)))
        for m in (self.vae, self.image_encoder):
            m.requires_grad_(False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pipeline(cls, pipe, device="cpu") -> "SVDFamily":
        pipe.to(device)
        return cls(pipe.unet, pipe.vae, pipe.image_encoder, pipe.feature_extractor, dict(pipe.scheduler.config))

    @classmethod
    def tiny(cls, seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu", num_frames: int = 8) -> "SVDFamily":
        """Tiny random-weight SVD built in memory (tests/demo only; see families/tiny.py)."""
        c = tiny_svd_components(seed, num_frames)
        place_modules(c, ("unet", "vae", "image_encoder"), dtype, device)
        return cls(c["unet"], c["vae"], c["image_encoder"], c["feature_extractor"], dict(c["scheduler"].config))

    # ------------------------------------------------------------------ properties
    @property
    def num_frames(self) -> int:
        return int(self.unet.config.num_frames)

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """Shape [B, F, C, H/f, W/f] of the video latents for a pixel size."""
        f = self.vae_scale_factor
        return (batch, num_frames, int(self.unet.config.out_channels), height // f, width // f)

    # ------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def encode_image_embedding(self, frames: Tensor) -> Tensor:
        """CLIP image embedding [B, 1, D] (float32) of frames [B, 3, H, W] in [-1, 1].

        Resized antialiased to the encoder's image size and normalized exactly like
        StableVideoDiffusionPipeline._encode_image does for a PIL image."""
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
        size = self.image_encoder.config.image_size
        x = _resize_with_antialiasing(frames.float(), (size, size))
        x = (x + 1.0) / 2.0
        mean = torch.tensor(self.feature_extractor.image_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.feature_extractor.image_std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        enc_dtype = next(self.image_encoder.parameters()).dtype
        emb = self.image_encoder(x.to(enc_dtype)).image_embeds
        return emb.float().unsqueeze(1)

    @torch.no_grad()
    def encode_first_frame_latent(self, first_frame: Tensor, sigma_aug: Tensor,
                                  generator: torch.Generator | None = None) -> Tensor:
        """cond_latent = vae.encode(frame + σ_aug·ε).latent_dist.mode(), NOT scaled. [B, 4, h, w] fp32."""
        frame = first_frame.float()
        eps = torch.randn(frame.shape, generator=generator, device=frame.device, dtype=frame.dtype)
        noisy = frame + sigma_aug.to(frame).view(-1, 1, 1, 1) * eps
        return self.vae.encode(noisy.to(self.vae.dtype)).latent_dist.mode().float()

    @torch.no_grad()
    def encode_conditioning(self, batch: dict, generator: torch.Generator | None = None, train: bool = True,
                            noise_aug: float | Tensor = 0.02, fps_id: int = 6,
                            motion_bucket_id: int = 127) -> SVDConditioning:
        """Per-sample conditioning (docs/math.md §1a) from a raw-pixel or latent-cache batch (see base.py).

        train: σ_aug ~ LogNormal(−3, 0.5) per sample; else σ_aug = `noise_aug` (scalar or [B]).
        fps_id / motion_bucket_id: used only when the batch has no per-sample values.
        The CLIP embedding is, in this order of preference: the batch's cached ``image_emb``; the embedding of
        its ``embedding_image`` [B, 3, H', W'] in [-1, 1] (any size: e.g. the user's original photo, which
        StableVideoDiffusionPipeline embeds before its own resize, while the VAE latent is of the resized
        ``first_frame``); else the embedding of the first frame (training batches)."""
        if "first_frame" in batch:
            first = batch["first_frame"]
        elif "pixel_values" in batch:
            first = batch["pixel_values"][:, 0]
        else:
            raise ConfigError("batch", "an SVD batch needs 'pixel_values' [B,F,3,H,W] or 'first_frame' [B,3,H,W]")
        first = first.to(self.device, torch.float32)
        b = first.shape[0]
        if train:
            sigma_aug = torch.exp(-3.0 + 0.5 * torch.randn(b, generator=generator, device=first.device))
        else:
            sigma_aug = _per_sample(noise_aug, b, "noise_aug").to(first.device)
        cond_latent = self.encode_first_frame_latent(first, sigma_aug, generator)
        if "image_emb" in batch:
            image_emb = batch["image_emb"].to(self.device, torch.float32)
        elif "embedding_image" in batch:
            image_emb = self.encode_image_embedding(batch["embedding_image"].to(self.device, torch.float32))
        else:
            image_emb = self.encode_image_embedding(first)
        ids = torch.stack([_per_sample(batch.get("fps_id", fps_id), b, "fps_id"),
                           _per_sample(batch.get("motion_bucket_id", motion_bucket_id), b, "motion_bucket_id"),
                           sigma_aug.float().cpu()], dim=1).to(self.device)
        return SVDConditioning(image_emb=image_emb, cond_latent=cond_latent, added_time_ids=ids)

    def null_conditioning(self, cond: SVDConditioning) -> SVDConditioning:
        """The pipeline's unconditional branch: image_emb = 0, cond_latent = 0, time ids unchanged."""
        return replace(cond, image_emb=torch.zeros_like(cond.image_emb), cond_latent=torch.zeros_like(cond.cond_latent))

    # ------------------------------------------------------------------ latents
    @torch.no_grad()
    def encode_latents(self, batch: dict, generator: torch.Generator | None = None, chunk: int = 16) -> Tensor:
        """Clean latents [B, F, 4, h, w] × scaling_factor (posterior sample); cached 'latents' pass through."""
        if "latents" in batch:
            return batch["latents"].to(self.device, torch.float32)
        pix = batch["pixel_values"].to(self.device, torch.float32)
        b = pix.shape[0]
        flat = rearrange(pix, "b f c h w -> (b f) c h w").to(self.vae.dtype)
        parts = [self.vae.encode(flat[i:i + chunk]).latent_dist.sample(generator).float()
                 for i in range(0, flat.shape[0], chunk)]
        return rearrange(torch.cat(parts) * self.scaling_factor, "(b f) c h w -> b f c h w", b=b)

    @torch.no_grad()
    def decode_latents(self, latents: Tensor, decode_chunk: int | None = None) -> Tensor:
        """Pixels [B, F, 3, H, W] in [-1, 1] (float32) from latents [B, F, 4, h, w].

        Each clip is decoded on its own in chunks of `decode_chunk` frames (default: all F); a
        temporal-decoder VAE gets num_frames = chunk length, so its frames stay one contiguous clip. With a
        lighter ``decoder`` set (families/decoders.py) that decoder is used instead."""
        b, f = latents.shape[:2]
        chunk = f if decode_chunk is None else max(1, int(decode_chunk))
        dec, scale = self.decode_module()          # the VAE, or a lighter frame-wise decoder (families/decoders.py)
        takes_frames = "num_frames" in inspect.signature(dec.decode).parameters
        z = (latents.float() / scale).to(dec.dtype)
        clips = []
        for i in range(b):
            parts = []
            for j in range(0, f, chunk):
                zc = z[i, j:j + chunk]
                kw = {"num_frames": zc.shape[0]} if takes_frames else {}
                parts.append(dec.decode(zc, **kw).sample.float())
            clips.append(torch.cat(parts))
        return torch.stack(clips)

    # ------------------------------------------------------------------ denoiser
    def denoise(self, x: Tensor, u, cond: SVDConditioning, unet: nn.Module | None = None) -> Tensor:
        """x0_hat = c_skip·x + c_out·F(c_in·x ⊕ cond_latent, c_noise, image_emb, ids) in fp32 (docs/math.md §1a).

        x [B, F, 4, h, w]; u scalar or [B] (shared time axis). u = 0 (σ = 0) returns x exactly."""
        net = self.unet if unet is None else unet
        x32 = x.float()
        b, f = x32.shape[:2]
        u = torch.as_tensor(u, dtype=torch.float64, device=x.device).reshape(-1).expand(b)
        sigma = self.schedule.sigma(u)                                # float64 [B]
        sigma_net = sigma.clamp_min(self.schedule.sigma_min)
        c_skip, c_out, c_in, c_noise = (c.float() for c in self.schedule.precondition(sigma_net))
        view = (-1, 1, 1, 1, 1)
        cond_lat = cond.cond_latent.float().unsqueeze(1).expand(-1, f, -1, -1, -1)
        inp = torch.cat([c_in.view(view) * x32, cond_lat], dim=2)
        net_dtype = next(net.parameters()).dtype
        out = net(inp.to(net_dtype), c_noise, encoder_hidden_states=cond.image_emb.to(net_dtype),
                  added_time_ids=cond.added_time_ids.float(), return_dict=False)[0].float()
        x0 = c_skip.view(view) * x32 + c_out.view(view) * out
        return torch.where((sigma > 0).view(view), x0, x32)

    def pipeline(self, scheduler=None):
        """A StableVideoDiffusionPipeline sharing this family's modules (default: the Euler scheduler)."""
        from diffusers import StableVideoDiffusionPipeline
        scheduler = self.default_scheduler(scheduler, self.scheduler_config)
        return StableVideoDiffusionPipeline(vae=self.vae, image_encoder=self.image_encoder, unet=self.unet,
                                            scheduler=scheduler, feature_extractor=self.feature_extractor)
