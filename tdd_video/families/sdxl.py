"""SDXL family adapter (discrete VP, ε-prediction, text-to-image) — docs/math.md §1b.

Latents are images [B, 4, h, w] (× vae scaling_factor). Conditioning per sample: prompt_embeds
[B, L, D1+D2] (penultimate hidden states of both CLIP text encoders, concatenated), pooled
[B, P] (projected text embedding of encoder 2) and add_time_ids [B, 6] = original_size (h, w) +
crop_coords (top, left) + target_size (h, w). Null conditioning ∅ = zero prompt embeds AND zero
pooled embeds (force_zeros_for_empty_prompt), the same tensor at training and inference.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from tdd_video.core.schedules import VPSchedule
from tdd_video.errors import ConfigError
from tdd_video.families.base import Conditioning, DiffusersFamily, place_modules
from tdd_video.families.tiny import SDXL_SCHEDULER_CONFIG, tiny_sdxl_components

Tensor = torch.Tensor
SDXL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class SDXLConditioning(Conditioning):
    prompt_embeds: Tensor   # [B, L, D1 + D2]
    pooled: Tensor          # [B, P] pooled (projected) embedding of text encoder 2
    add_time_ids: Tensor    # [B, 6] float32: original (h, w), crop (top, left), target (h, w)


def _sizes(batch: dict, key: str, b: int, default) -> Tensor:
    v = batch.get(key)
    t = torch.as_tensor(default if v is None else v, dtype=torch.float32).reshape(-1, 2)
    if t.shape[0] == 1:
        t = t.expand(b, 2)
    if t.shape[0] != b:
        raise ConfigError(key, f"expected [{b}, 2] (h, w) values, got shape {tuple(t.shape)}")
    return t


class SDXLFamily(DiffusersFamily):
    """SDXL adapter: owns unet, vae, both text encoders/tokenizers and the VP schedule."""

    name = "sdxl"
    components = SDXL_COMPONENTS
    pipeline_class = "StableDiffusionXLPipeline"

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, text_encoder_2: nn.Module,
                 tokenizer, tokenizer_2, scheduler_config: dict | None = None):
        self.unet, self.vae = unet, vae
        self.text_encoder, self.text_encoder_2, self.tokenizer, self.tokenizer_2 = \
            text_encoder, text_encoder_2, tokenizer, tokenizer_2
        self.scheduler_config = dict(scheduler_config or SDXL_SCHEDULER_CONFIG)
        sc = self.scheduler_config
        if sc.get("beta_schedule", "scaled_linear") != "scaled_linear":
            raise ConfigError("scheduler.beta_schedule",
                              f"got {sc.get('beta_schedule')!r}; only 'scaled_linear' is supported")
        self.prediction_type = sc.get("prediction_type", "epsilon")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError("scheduler.prediction_type", f"got {self.prediction_type!r}; allowed: {PREDICTION_TYPES}")
        self.schedule = VPSchedule(num_train_timesteps=int(sc.get("num_train_timesteps", 1000)),
                                   beta_start=float(sc.get("beta_start", 0.00085)),
                                   beta_end=float(sc.get("beta_end", 0.012)))
        for m in (self.vae, self.text_encoder, self.text_encoder_2):
            m.requires_grad_(False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pipeline(cls, pipe, device="cpu") -> "SDXLFamily":
        pipe.to(device)
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.tokenizer, pipe.tokenizer_2,
                   dict(pipe.scheduler.config))

    @classmethod
    def tiny(cls, seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu") -> "SDXLFamily":
        """Tiny random-weight SDXL built in memory (tests/demo only; see families/tiny.py)."""
        c = tiny_sdxl_components(seed)
        place_modules(c, ("unet", "vae", "text_encoder", "text_encoder_2"), dtype, device)
        return cls(c["unet"], c["vae"], c["text_encoder"], c["text_encoder_2"], c["tokenizer"], c["tokenizer_2"],
                   dict(c["scheduler"].config))

    # ------------------------------------------------------------------ properties
    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        f = self.vae_scale_factor
        return (batch, int(self.unet.config.in_channels), height // f, width // f)

    # ------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """(prompt_embeds [B, L, D1+D2], pooled [B, P]) exactly like StableDiffusionXLPipeline.encode_prompt."""
        if isinstance(prompts, str):
            prompts = [prompts]
        hidden, pooled = [], None
        for tok, enc in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(self.device)
            out = enc(ids, output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1).float(), pooled.float()

    @torch.no_grad()
    def encode_conditioning(self, batch: dict, generator: torch.Generator | None = None,
                            train: bool = True) -> SDXLConditioning:
        """Per-sample conditioning (docs/math.md §1b) from captions or cached embeddings; sizes per sample.

        Missing size keys default to the batch's pixel size (original = target, crop = (0, 0))."""
        if "prompt_embeds" in batch:
            pe = batch["prompt_embeds"].to(self.device, torch.float32)
            pooled = batch["pooled_prompt_embeds"].to(self.device, torch.float32)
        elif "caption" in batch:
            pe, pooled = self.encode_prompt(batch["caption"])
        else:
            raise ConfigError("batch", "an SDXL batch needs 'caption' (list[str]) or cached 'prompt_embeds' + "
                                       "'pooled_prompt_embeds'")
        b = pe.shape[0]
        if "pixel_values" in batch:
            hw = tuple(batch["pixel_values"].shape[-2:])
        elif "latents" in batch:
            hw = tuple(s * self.vae_scale_factor for s in batch["latents"].shape[-2:])
        else:
            hw = (self.unet.config.sample_size * self.vae_scale_factor,) * 2
        ids = torch.cat([_sizes(batch, "original_size", b, hw), _sizes(batch, "crop_coords", b, (0, 0)),
                         _sizes(batch, "target_size", b, hw)], dim=1).to(self.device)
        return SDXLConditioning(prompt_embeds=pe, pooled=pooled, add_time_ids=ids)

    def null_conditioning(self, cond: SDXLConditioning) -> SDXLConditioning:
        """∅ = zero prompt embeds and zero pooled embeds; time ids unchanged (force_zeros_for_empty_prompt)."""
        return replace(cond, prompt_embeds=torch.zeros_like(cond.prompt_embeds), pooled=torch.zeros_like(cond.pooled))

    # ------------------------------------------------------------------ latents
    @torch.no_grad()
    def encode_latents(self, batch: dict, generator: torch.Generator | None = None, chunk: int = 16) -> Tensor:
        """Clean latents [B, 4, h, w] × scaling_factor (posterior sample); cached 'latents' pass through."""
        if "latents" in batch:
            return batch["latents"].to(self.device, torch.float32)
        pix = batch["pixel_values"].to(self.device, self.vae.dtype)
        parts = [self.vae.encode(pix[i:i + chunk]).latent_dist.sample(generator).float()
                 for i in range(0, pix.shape[0], chunk)]
        return torch.cat(parts) * self.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: Tensor, decode_chunk: int | None = None) -> Tensor:
        """Pixels [B, 3, H, W] in [-1, 1] (float32) from latents [B, 4, h, w], `decode_chunk` images at a time."""
        chunk = latents.shape[0] if decode_chunk is None else max(1, int(decode_chunk))
        dec, scale = self.decode_module()
        z = (latents.float() / scale).to(dec.dtype)
        return torch.cat([dec.decode(z[i:i + chunk]).sample.float() for i in range(0, z.shape[0], chunk)])

    # ------------------------------------------------------------------ denoiser
    def denoise(self, x: Tensor, u, cond: SDXLConditioning, unet: nn.Module | None = None) -> Tensor:
        """x0_hat = (x_t − √(1−ᾱ_t)·ε_hat)/√ᾱ_t at t = t(u), fp32 math (docs/math.md §1b).
        x [B, 4, h, w]; u scalar or [B].

        v_prediction / sample prediction types are converted likewise; u = 0 (t = −1) returns x exactly."""
        net = self.unet if unet is None else unet
        x32 = x.float()
        b = x32.shape[0]
        u = torch.as_tensor(u, dtype=torch.float64, device=x.device).reshape(-1).expand(b)
        t = self.schedule.timestep(u)
        alpha, sigma = (v.float().view(-1, 1, 1, 1) for v in self.schedule.alpha_sigma(u))
        net_dtype = next(net.parameters()).dtype
        out = net(x32.to(net_dtype), t.clamp_min(0), encoder_hidden_states=cond.prompt_embeds.to(net_dtype),
                  added_cond_kwargs={"text_embeds": cond.pooled.to(net_dtype), "time_ids": cond.add_time_ids.float()},
                  return_dict=False)[0].float()
        if self.prediction_type == "epsilon":
            x0 = (x32 - sigma * out) / alpha
        elif self.prediction_type == "v_prediction":
            x0 = alpha * x32 - sigma * out
        else:
            x0 = out
        return torch.where((t >= 0).view(-1, 1, 1, 1), x0, x32)

    def pipeline(self, scheduler=None):
        """A StableDiffusionXLPipeline sharing this family's modules (force_zeros_for_empty_prompt=True)."""
        from diffusers import StableDiffusionXLPipeline
        scheduler = self.default_scheduler(scheduler, self.scheduler_config)
        return StableDiffusionXLPipeline(vae=self.vae, text_encoder=self.text_encoder,
                                         text_encoder_2=self.text_encoder_2,
                                         tokenizer=self.tokenizer, tokenizer_2=self.tokenizer_2, unet=self.unet,
                                         scheduler=scheduler, force_zeros_for_empty_prompt=True)
