"""Validation renders during training: fixed conditioning images, fixed seeds, K = 4 and 8 steps.

The conditioning batch is taken once, at the start of training, from the first `num_images`
samples of the data (inference conditioning: `train=False`, so SVD uses σ_aug = 0.02). Renders
use the student (LoRA on / trained weights) with the sampler of the method being trained: a method
with its own sampler provides `render_sample` (AnimateLCM: its multistep sampler, SPEC §8); TDD
uses tdd_video.sampling.sample on the shared base, else the same algorithm written here from
tdd_video.core (SPEC §5): DDIM jumps on S_K with γ-sampling re-noise. Files: <run>/validation/step_000100/k4_seed0_img0.gif (or .mp4).
"""
from __future__ import annotations

from pathlib import Path

import torch

from tdd_video.core import add_noise, cfg as cfg_combine, jump, renoise, schedule_indices


@torch.no_grad()
def tdd_sample(family, cond, null, shape, steps: int, *, num_grid: int = 250, eta: float = 0.3,
               guidance: float = 1.0, unet=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """K-step TDD sampling (SPEC §5) from pure noise to x0 latents of `shape` ([B, F, C, h, w] or [B, C, h, w])."""
    sched = family.schedule
    us = torch.cat([schedule_indices(num_grid, steps).to(torch.float64) / num_grid, torch.zeros(1, dtype=torch.float64)])
    b = shape[0]
    z = torch.randn(shape, generator=generator)
    x = add_noise(sched, torch.zeros(shape), z, torch.ones(b, dtype=torch.float64))
    x0 = x
    for i in range(steps):
        u_i, u_next = us[i].expand(b), us[i + 1].expand(b)
        if guidance == 1:
            x0 = family.denoise(x, u_i, cond, unet=unet)
        else:
            both = family.denoise(torch.cat([x, x]), torch.cat([u_i, u_i]), null.cat(cond), unet=unet)
            x0 = cfg_combine(*both.chunk(2), guidance)
        if i == steps - 1:
            break
        s = sched.quantize((1.0 - eta) * u_next)
        x = jump(sched, x, x0, u_i, s).float()
        if eta > 0:
            x = renoise(sched, x, s, u_next, torch.randn(shape, generator=generator)).float()
    return x0.float()


def _sampler():
    try:
        from tdd_video.sampling.sample import sample  # helper C's sampler, when present
        return sample
    except ImportError:
        return None


class Validator:
    """Renders the student every `cfg.every` steps on rank 0."""

    def __init__(self, cfg, family, batch: dict, latent_shape: tuple[int, ...], run_dir: Path, num_grid: int,
                 method=None):
        self.cfg, self.family, self.run_dir, self.num_grid = cfg, family, Path(run_dir), num_grid
        self.render_sample = getattr(method, "render_sample", None)   # the method's own sampler, if any
        n = min(cfg.num_images, latent_shape[0])
        small = {k: (v[:n] if hasattr(v, "__getitem__") and not isinstance(v, str) else v) for k, v in batch.items()}
        gen = torch.Generator().manual_seed(0)
        self.cond = family.encode_conditioning(small, gen, train=False)
        self.null = family.null_conditioning(self.cond)
        self.shape = (n, *latent_shape[1:])

    def due(self, step: int) -> bool:
        return self.cfg.every > 0 and step % self.cfg.every == 0

    @torch.no_grad()
    def render(self, step: int, roles) -> list[Path]:
        from tdd_video.data.video_io import write_video
        out_dir = self.run_dir / "validation" / f"step_{step:06d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        with roles.target(False) as unet:      # the student weights, no autograd
            for k in self.cfg.steps:
                for seed in self.cfg.seeds:
                    gen = torch.Generator().manual_seed(seed)
                    sample = _sampler()
                    if self.render_sample is not None:
                        lat = self.render_sample(self.cond, self.null, self.shape, k, guidance=self.cfg.guidance,
                                                 unet=unet, generator=gen)
                    elif sample is not None and unet is self.family.unet:
                        lat = sample(self.family, self.cond, self.null, steps=k, eta=self.cfg.eta,
                                     guidance=float(self.cfg.guidance), generator=gen, shape=self.shape,
                                     progress=False)
                    else:
                        lat = tdd_sample(self.family, self.cond, self.null, self.shape, k, num_grid=self.num_grid,
                                         eta=self.cfg.eta, guidance=self.cfg.guidance, unet=unet, generator=gen)
                    pix = self.family.decode_latents(lat)
                    for i in range(pix.shape[0]):
                        frames = pix[i] if pix.ndim == 5 else pix[i:i + 1]
                        path = out_dir / f"k{k}_seed{seed}_img{i}.{self.cfg.format}"
                        write_video(frames.clamp(-1, 1), path, fps=self.cfg.fps)
                        written.append(path)
        return written
