"""Stage 3 of a toy SVD teacher: train a UNetSpatioTemporalConditionModel with SVD's EDM objective.

Everything goes through the project's SVDFamily (tdd_video/families/svd.py), i.e. the same code
that samples and distills the model (docs/math.md §1a):

* x0 = VAE posterior sample × scaling_factor of every frame (``family.encode_latents``);
* conditioning per sample (``family.encode_conditioning(train=True)``): CLIP embedding of the clean
  first frame, VAE ``.mode()`` latent of the first frame after pixel noise augmentation
  σ_aug ~ LogNormal(−3, 0.5), added_time_ids = [fps_id (= real fps − 1), motion_bucket_id, σ_aug];
* conditioning dropout: with probability ``cond_drop_prob`` the sample's image_emb AND cond_latent
  are replaced together by the null conditioning ∅ (``family.null_conditioning``) — what CFG uses;
* ln σ ~ N(p_mean, p_std²) clamped to [σ_min, σ_max]; x = x0 + σ·ε;
  x0_hat = ``family.denoise(x, u(σ), cond)`` (v-preconditioning of core.EDMSchedule.precondition);
* loss = mean over samples of λ(σ)·mean((x0_hat − x0)²), λ(σ) = (σ² + 1)/σ² (EDM, σ_data = 1),
  which equals the unit-weighted MSE of the network output against its v-target.

Latents, first frames and image embeddings are computed once after the VAE is trained (the
project's latent-cache batch path: ``latents`` + ``first_frame`` + ``image_emb``); the noise-
augmented conditioning latent is re-encoded every step, as SVD training does. EMA weights
(float32) are what gets exported.
"""
from __future__ import annotations

import copy
import time

import torch
from tqdm import tqdm

from tdd_video.engine.ema import EMA
from tdd_video.engine.lr import lr_multiplier
from tools.zoo.config import DataSection, ImageEncoderSection, UNetSection
from tools.zoo.fast_ops import fast_temporal_convs
from tools.zoo.stage import StageDir, step_generator

EVAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 80.0)


def build_unet(cfg: UNetSection, data: DataSection, enc: ImageEncoderSection, latent_channels: int,
               vae_factor: int, seed: int):
    """UNetSpatioTemporalConditionModel shaped like SVD's (cross-attention on all but the last level)."""
    from diffusers import UNetSpatioTemporalConditionModel
    levels = len(cfg.block_out_channels)
    down = ("CrossAttnDownBlockSpatioTemporal",) * (levels - 1) + ("DownBlockSpatioTemporal",)
    up = ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (levels - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNetSpatioTemporalConditionModel(
            sample_size=data.height // vae_factor, in_channels=2 * latent_channels, out_channels=latent_channels,
            down_block_types=down, up_block_types=up, block_out_channels=tuple(int(c) for c in cfg.block_out_channels),
            addition_time_embed_dim=cfg.addition_time_embed_dim,
            projection_class_embeddings_input_dim=3 * cfg.addition_time_embed_dim,
            layers_per_block=cfg.layers_per_block, cross_attention_dim=enc.projection_dim,
            transformer_layers_per_block=cfg.transformer_layers_per_block,
            num_attention_heads=tuple(int(h) for h in cfg.num_attention_heads), num_frames=data.num_frames)


@torch.no_grad()
def build_latent_cache(family, clips: dict, seed: int, chunk: int = 16) -> dict:
    """Latent-cache batch fields for all clips: latents [N,F,4,h,w], first_frame, image_emb, ids."""
    g = torch.Generator().manual_seed(seed)
    pix = clips["pixel_values"]
    lat = [family.encode_latents({"pixel_values": pix[i:i + chunk]}, generator=g) for i in range(0, len(pix), chunk)]
    emb = [family.encode_image_embedding(pix[i:i + chunk, 0]) for i in range(0, len(pix), chunk)]
    return {"latents": torch.cat(lat), "first_frame": pix[:, 0].clone(), "image_emb": torch.cat(emb),
            "fps_id": clips["fps_id"].clone(), "motion_bucket_id": clips["motion_bucket_id"].clone()}


def _take(cache: dict, idx: torch.Tensor) -> dict:
    return {k: v[idx] for k, v in cache.items()}


def edm_loss(family, batch: dict, cfg: UNetSection, g: torch.Generator, unet=None, sigma=None,
             drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scalar loss, per-sample λ-weighted MSE [B]) of the SVD EDM objective (module docstring)."""
    x0 = family.encode_latents(batch, generator=g)
    b = x0.shape[0]
    cond = family.encode_conditioning(batch, generator=g, train=True)
    if drop is None:
        drop = torch.rand(b, generator=g) < cfg.cond_drop_prob
    cond = cond.select(drop.to(x0.device), family.null_conditioning(cond))
    sched = family.schedule
    if sigma is None:
        sigma = torch.exp(cfg.p_mean + cfg.p_std * torch.randn(b, generator=g, dtype=torch.float64))
    sigma = sigma.to(torch.float64).clamp(sched.sigma_min, sched.sigma_max)
    u = sched.u_of_sigma(sigma)
    noise = torch.randn(x0.shape, generator=g)
    x = x0 + sigma.float().view(-1, 1, 1, 1, 1) * noise
    x0_hat = family.denoise(x, u, cond, unet=unet)
    weight = ((sigma ** 2 + 1) / sigma ** 2).float()
    per_sample = weight * ((x0_hat - x0) ** 2).flatten(1).mean(1)
    return per_sample.mean(), per_sample


@torch.no_grad()
def evaluate(family, unet, cache: dict, cfg: UNetSection, seed: int, max_clips: int = 32) -> dict:
    """Held-out x0-MSE per σ (fixed noise), with the conditioning and with ∅ (does the model use it?)."""
    n = min(max_clips, cache["latents"].shape[0])
    batch = _take(cache, torch.arange(n))
    out = {}
    for drop_all, key in ((False, "mse_cond"), (True, "mse_null")):
        vals = []
        for s in EVAL_SIGMAS:
            g = step_generator(seed, 0, stream=7)
            sigma = torch.full((n,), s, dtype=torch.float64)
            drop = torch.full((n,), drop_all)
            _, per = edm_loss(family, batch, cfg, g, unet=unet, sigma=sigma, drop=drop)
            vals.append(round(float((per / ((s ** 2 + 1) / s ** 2)).mean()), 5))
        out[key] = dict(zip([str(s) for s in EVAL_SIGMAS], vals))
    return out


def train_unet(cfg: UNetSection, family, train_cache: dict, held_cache: dict, stage: StageDir, seed: int,
               progress: bool = True):
    """Train (or resume) family.unet in place with EMA; returns (ema unet, metrics)."""
    from diffusers import UNetSpatioTemporalConditionModel
    final_dir = stage.dir / "final"
    if stage.is_done():
        return UNetSpatioTemporalConditionModel.from_pretrained(final_dir), stage.done_info()
    unet = family.unet
    fast_temporal_convs(unet)
    ema_unet = copy.deepcopy(unet).requires_grad_(False)    # the EMA weights as a module (evaluation, export)
    ema = EMA(unet.named_parameters(), cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_at = lr_multiplier(cfg.warmup_steps, "cosine", cfg.steps, cfg.lr_min / cfg.lr)
    start = stage.load_checkpoint(model=unet, ema=ema, opt=opt)
    n_train = train_cache["latents"].shape[0]
    history, t0, t_steps, steps_timed, ema_loss = [], time.time(), 0.0, 0, None
    unet.train()
    bar = tqdm(range(start, cfg.steps), desc="unet", disable=not progress, initial=start, total=cfg.steps)
    for step in bar:
        ts = time.time()
        g = step_generator(seed, step, stream=1)
        lr = cfg.lr * lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = _take(train_cache, torch.randint(0, n_train, (cfg.batch_clips,), generator=g))
        loss, _ = edm_loss(family, batch, cfg, g, unet=unet)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"unet stage: non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))      # EMA warm-up
        ema.update(unet.named_parameters(), decay)
        if step - start >= 2:
            t_steps += time.time() - ts
            steps_timed += 1
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema_loss:.4f}")
        last = step + 1 == cfg.steps
        if (step + 1) % 50 == 0 or last:
            stage.log(step=step + 1, loss=float(loss), loss_smooth=ema_loss, lr=lr)
        if (step + 1) % cfg.eval_every == 0 or last:
            ema.copy_to(ema_unet.named_parameters())
            ev = evaluate(family, ema_unet, held_cache, cfg, seed)
            history.append({"step": step + 1, "loss_smooth": round(ema_loss, 5), **ev})
            stage.log(step=step + 1, eval=ev)
        if (step + 1) % cfg.checkpoint_every == 0 and not last:
            stage.save_checkpoint(step + 1, model=unet, ema=ema, opt=opt)
    ema.copy_to(ema_unet.named_parameters())
    ema_unet.eval()
    ema_unet.save_pretrained(final_dir, safe_serialization=True)
    info = {"steps": cfg.steps, "final_loss_smooth": ema_loss, "params": sum(p.numel() for p in ema_unet.parameters()),
            "sec_per_step": round(t_steps / max(steps_timed, 1), 4), "wall_s_this_run": round(time.time() - t0, 1),
            "final_eval_ema": evaluate(family, ema_unet, held_cache, cfg, seed), "history": history}
    stage.mark_done(info)
    return ema_unet, info
