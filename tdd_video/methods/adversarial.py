"""The discriminator of adversarial TDD (docs/math.md §11): frozen UNet features + small trainable heads.

Features: ONE forward of the shared base UNet with the LoRA adapters disabled (the teacher role, no extra
copy), on latents re-noised to a level u_d, with the sample's conditioning; forward hooks take the
outputs of every down block and of the mid block (the up blocks are skipped by stopping the forward
after the mid block, `early_exit`). Heads (trainable, fp32):
* spatial, one per feature map: conv 3×3 → GroupNorm → SiLU → conv 1×1 → one logit per position,
  averaged over positions (per frame for video: the video UNet folds frames into the batch);
* temporal (video only), one per feature map: the map pooled over space, conv1d over the frame axis
  (k = 3) → SiLU → conv1d → one logit per frame, averaged.
D(x) = mean of every head's logit (frame logits averaged per video): one logit per sample [B].
"""
from __future__ import annotations

import contextlib

import torch
from einops import rearrange
from torch import nn

from tdd_video.core import add_noise

Tensor = torch.Tensor


class _StopForward(Exception):
    """Raised by the mid block's hook to end the frozen forward early (the up blocks are not needed)."""


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class SpatialHead(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.GroupNorm(_groups(hidden), hidden),
                                 nn.SiLU(), nn.Conv2d(hidden, 1, 1))

    def forward(self, feat: Tensor) -> Tensor:          # [N, C, h, w] -> [N]
        return self.net(feat).mean(dim=(1, 2, 3))


class TemporalHead(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(channels, hidden, 3, padding=1), nn.SiLU(), nn.Conv1d(hidden, 1, 1))

    def forward(self, pooled: Tensor) -> Tensor:        # [B, C, F] -> [B]
        return self.net(pooled).mean(dim=(1, 2))


class DiscriminatorHeads(nn.Module):
    """Trainable heads on the frozen features; `channels` = channels of each feature map (down blocks, mid)."""

    def __init__(self, channels: list[int], hidden: int = 64, temporal: bool = True):
        super().__init__()
        self.spatial = nn.ModuleList(SpatialHead(c, hidden) for c in channels)
        self.temporal = nn.ModuleList(TemporalHead(c, hidden) for c in channels) if temporal else None

    def forward(self, feats: list[Tensor], batch: int, frames: int | None) -> Tensor:
        """feats: [B·F, C, h, w] (video, frames folded into the batch) or [B, C, h, w]; returns logits [B]."""
        logits = []
        for i, f in enumerate(feats):
            f = f.float()
            per = self.spatial[i](f)
            logits.append(per.reshape(batch, -1).mean(dim=1))
            if self.temporal is not None and frames:
                pooled = rearrange(f.mean(dim=(2, 3)), "(b f) c -> b c f", b=batch)
                logits.append(self.temporal[i](pooled))
        return torch.stack(logits).mean(dim=0)


def feature_channels(unet: nn.Module) -> list[int]:
    """Channels of the down-block outputs and of the mid block, from a diffusers UNet config."""
    ch = [int(c) for c in unet.config.block_out_channels]
    return ch + [ch[-1]]


@contextlib.contextmanager
def _hooks(unet: nn.Module, feats: list, early_exit: bool):
    def keep(module, args, out):
        feats.append(out[0] if isinstance(out, tuple) else out)

    def keep_and_stop(module, args, out):
        keep(module, args, out)
        if early_exit:
            raise _StopForward

    handles = [blk.register_forward_hook(keep) for blk in unet.down_blocks]
    handles.append(unet.mid_block.register_forward_hook(keep_and_stop))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def frozen_features(family, unet: nn.Module, x: Tensor, u: Tensor, cond, early_exit: bool = True) -> list[Tensor]:
    """Down-block and mid-block outputs of `unet` for the noisy latents x at levels u [B] (one forward)."""
    feats: list[Tensor] = []
    with _hooks(unet, feats, early_exit):
        try:
            family.denoise(x, u, cond, unet=unet)
        except _StopForward:
            pass
    return feats


class Discriminator:
    """D(x, u, c) = heads(frozen features); owns the heads and their AdamW optimizer (docs/math.md §11)."""

    def __init__(self, cfg, family, device=None):
        self.cfg, self.family = cfg, family
        video = hasattr(family, "num_frames")              # temporal heads only for video families
        with torch.random.fork_rng(devices=[]):            # the same initial heads on every rank (and run)
            torch.manual_seed(0)
            self.heads = DiscriminatorHeads(feature_channels(family.unet), cfg.head_channels, cfg.temporal and video)
        self.heads.to(device if device is not None else getattr(family, "device", "cpu"))
        self.optimizer = torch.optim.AdamW(self.heads.parameters(), lr=cfg.d_lr, betas=tuple(cfg.d_betas),
                                           weight_decay=cfg.d_weight_decay)
        self.early_exit = cfg.early_exit

    def logits(self, unet: nn.Module, x: Tensor, u: Tensor, cond) -> Tensor:
        """[B] logits; gradients flow to x (and to the heads if they require grad), never to the UNet."""
        frames = x.shape[1] if x.ndim == 5 and self.cfg.temporal else None
        feats = frozen_features(self.family, unet, x, u, cond, self.early_exit)
        return self.heads(feats, x.shape[0], frames)

    def state_dict(self) -> dict:
        return {"heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])

    def step(self, d_loss: Tensor, backend=None) -> float:
        """One update of the heads from `d_loss` (gradients averaged over ranks so every rank keeps the same
        heads). Returns the heads' gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        params = [p for p in self.heads.parameters() if p.grad is not None]
        if backend is not None and backend.world_size > 1:
            for p in params:
                p.grad.copy_(backend.all_reduce_mean(p.grad))
        clip = self.cfg.d_grad_clip if self.cfg.d_grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        if torch.isfinite(torch.tensor(norm)):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm


def renoise_like(schedule, x0: Tensor, u: Tensor, generator) -> Tensor:
    """x_u = α_u·x0 + σ_u·ε with fresh ε from `generator` (docs/math.md §11)."""
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
    return add_noise(schedule, x0.float(), eps, u)


def sample_levels(cfg, batch: int, generator, device) -> Tensor:
    """u_d ~ U[lo, hi] per sample (float64 [B])."""
    lo, hi = (float(v) for v in cfg.noise_u_range)
    return (lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=torch.float64)).to(device)


__all__ = ["Discriminator", "DiscriminatorHeads", "feature_channels", "frozen_features", "renoise_like",
           "sample_levels"]
