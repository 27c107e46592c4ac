"""Stage 1 of a toy SVD teacher: train a tiny AutoencoderKLTemporalDecoder on the synthetic clips.

Objective: per-pixel MSE of the reconstruction of a clip decoded as ONE clip
(``decode(z, num_frames=F)``, so the temporal decoder's mixing is trained) from a posterior
sample z. Two phases (measured here: learning is limited by how many different images a step
sees, not by frames of the same clip): first short windows (``window_frames`` consecutive frames)
from ``window_batch_clips`` clips, then for the last ``full_clip_fraction`` of the steps whole
clips (``num_frames``) so the temporal decoder sees the clip length it decodes at inference.
Loss: plus ``kl_weight`` × the per-element KL to N(0, I). The posterior log-variance starts at
``init_logvar`` (quant_conv's log-variance half zeroed, bias = init_logvar) so early training is
not drowned in sampling noise. After training, the latent std over the training clips is measured
and ``scaling_factor = 1/std`` is stored in the VAE config (a fresh VAE is far from SD's 0.18215).
"""
from __future__ import annotations

import math
import time

import torch
from tqdm import tqdm

from tdd_video.engine.lr import lr_multiplier
from tools.zoo.config import DataSection, VAESection
from tools.zoo.fast_ops import fast_temporal_convs
from tools.zoo.stage import StageDir, step_generator


def build_vae(cfg: VAESection, data: DataSection, seed: int):
    """A fresh AutoencoderKLTemporalDecoder (len(block_out_channels) levels, factor 2^(levels-1))."""
    from diffusers import AutoencoderKLTemporalDecoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLTemporalDecoder(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(cfg.block_out_channels),
            block_out_channels=tuple(int(c) for c in cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
            latent_channels=cfg.latent_channels, sample_size=max(data.height, data.width))
    with torch.no_grad():
        qc, c = vae.quant_conv, cfg.latent_channels
        qc.weight[c:].zero_()
        qc.bias[c:].fill_(cfg.init_logvar)
    return vae


def reconstruct(vae, clips: torch.Tensor, sample: bool, generator: torch.Generator | None = None):
    """clips [B, F, 3, H, W] -> (reconstruction [B·F, 3, H, W], posterior); each clip decoded as one clip."""
    b, f = clips.shape[:2]
    post = vae.encode(clips.flatten(0, 1)).latent_dist
    z = post.sample(generator) if sample else post.mode()
    return vae.decode(z, num_frames=f).sample, post


@torch.no_grad()
def heldout_psnr(vae, clips: torch.Tensor, chunk: int = 8) -> float:
    """PSNR (dB, peak-to-peak 2 for [-1, 1] pixels) of mode() reconstructions, clamped to [-1, 1]."""
    se, n = 0.0, 0
    for i in range(0, clips.shape[0], chunk):
        x = clips[i:i + chunk]
        y, _ = reconstruct(vae, x, sample=False)
        se += ((y.clamp(-1, 1) - x.flatten(0, 1)) ** 2).sum().item()
        n += y.numel()
    return 10.0 * math.log10(4.0 / max(se / n, 1e-12))


@torch.no_grad()
def measure_latent_std(vae, clips: torch.Tensor, seed: int, chunk: int = 16) -> tuple[float, float]:
    """(std, mean) of posterior samples over `clips` [N, F, 3, H, W] (what diffusion training sees)."""
    g = torch.Generator().manual_seed(seed)
    zs = [vae.encode(clips[i:i + chunk].flatten(0, 1)).latent_dist.sample(g) for i in range(0, clips.shape[0], chunk)]
    z = torch.cat(zs)
    return float(z.std()), float(z.mean())


def train_vae(cfg: VAESection, data: DataSection, train_clips: torch.Tensor, held_clips: torch.Tensor,
              stage: StageDir, seed: int, progress: bool = True):
    """Train (or resume) the VAE; returns (vae with scaling_factor set, metrics dict)."""
    from diffusers import AutoencoderKLTemporalDecoder
    final_dir = stage.dir / "final"
    if stage.is_done():
        return AutoencoderKLTemporalDecoder.from_pretrained(final_dir), stage.done_info()
    vae = build_vae(cfg, data, seed)
    fast_temporal_convs(vae)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    lr_at = lr_multiplier(cfg.warmup_steps, "cosine", cfg.steps, cfg.lr_min / cfg.lr)
    start = stage.load_checkpoint(model=vae, opt=opt)
    n_train = train_clips.shape[0]
    history = []
    t0, t_steps, steps_timed = time.time(), 0.0, 0
    bar = tqdm(range(start, cfg.steps), desc="vae", disable=not progress, initial=start, total=cfg.steps)
    vae.train()
    for step in bar:
        ts = time.time()
        g = step_generator(seed, step)
        lr = cfg.lr * lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        full = step >= int(round(cfg.steps * (1.0 - cfg.full_clip_fraction)))
        n_frames = train_clips.shape[1] if full else min(cfg.window_frames, train_clips.shape[1])
        idx = torch.randint(0, n_train, (cfg.batch_clips if full else cfg.window_batch_clips,), generator=g)
        first = int(torch.randint(0, train_clips.shape[1] - n_frames + 1, (1,), generator=g))
        x = train_clips[idx, first:first + n_frames]
        y, post = reconstruct(vae, x, sample=True, generator=g)
        mse = ((y - x.flatten(0, 1)) ** 2).mean()
        kl = post.kl().mean() / post.mean[0].numel()
        loss = mse + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step - start >= 2:                     # time steps from the third on
            t_steps += time.time() - ts
            steps_timed += 1
        bar.set_postfix(mse=f"{mse.item():.4f}", frames=n_frames)
        last = step + 1 == cfg.steps
        if (step + 1) % cfg.eval_every == 0 or last:
            vae.eval()
            psnr = heldout_psnr(vae, held_clips)
            vae.train()
            history.append({"step": step + 1, "heldout_psnr_db": round(psnr, 2)})
            stage.log(step=step + 1, mse=float(mse), kl=float(kl), lr=lr, frames=n_frames, heldout_psnr_db=psnr)
        if (step + 1) % cfg.checkpoint_every == 0 and not last:
            stage.save_checkpoint(step + 1, model=vae, opt=opt)
    vae.eval()
    psnr = heldout_psnr(vae, held_clips)
    std, mean = measure_latent_std(vae, train_clips[: min(256, n_train)], seed)
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(final_dir, safe_serialization=True)
    info = {"heldout_psnr_db": round(psnr, 3), "latent_std": std, "latent_mean": mean,
            "scaling_factor": 1.0 / std, "steps": cfg.steps,
            "params": sum(p.numel() for p in vae.parameters()),
            "sec_per_step": round(t_steps / max(steps_timed, 1), 4),
            "wall_s_this_run": round(time.time() - t0, 1), "history": history}
    stage.mark_done(info)
    return vae, info
