"""Validation renders during training: fixed conditioning images, fixed seeds, K = 4 and 8 steps.

The conditioning batch is taken once, at the start of training: the first `num_images` samples of
the data (`images: data`), or for video families `num_images` held-out real photos
(`images: heldout`, tdd_video.eval.heldout, with the pipeline's default fps 7 / motion 127) — the
quality bench's conditioning, so the in-training distance is the bench's. Inference conditioning:
`train=False`, so SVD uses σ_aug = 0.02. Renders
use the student (LoRA on / trained weights) with the sampler of the method being trained (the
method's `sampler` name: TDD's scheduler, or AnimateLCM's multistep sampler, docs/math.md §8),
driven by the one sampling loop `tdd_video.sampling.sample`.
Files: <run>/validation/step_000100/k4_seed0_img0.gif (or .mp4).

Distillation distance (`validation.metric_every` > 0): the consistency loss of TDD with an online
target cannot show progress (it starts near 0 because student = teacher and grows as the student
moves), so training progress is measured as the latent MSE between the student's K-step sample
(exactly the render above: same sampler, seeds, η, guidance) and the teacher's many-step sample
from THE SAME starting noise, on the same conditioning. The reference is bench_zoo_quality's /
infer/compare.py's `teacher@25`: for EDM (video) families Euler on the Karras σ grid with
frame-wise CFG `reference_guidance` (1 → 3, the SVD pipeline's default); for VP (image) families
DDIM (the TDD sampler with η = 0) with CFG g, like bench_sdxl_quality. The teacher is
`roles.teacher()` (LoRA off, or the frozen copy); the reference is computed once and cached.
Every sampler draws its starting noise first, from a generator seeded with the seed, so the
student and the reference start from the same ε. Logged as `val/mse_to_teacher_k{K}` (mean over
(image, seed) pairs of the per-pair latent MSE), with its standard error over the pairs as
`val/mse_to_teacher_k{K}_se`, at step 0 (before the first update; student = teacher there for a
zero-initialised LoRA), every `metric_every` steps and at the end. With 32 held-out images × 3 seeds
the standard error is a few per cent of the value; the same pairs are used at every evaluation, so
changes between evaluations are paired differences.

Ranks: renders and the metric run on rank 0 only, except that under ZeRO-3 every rank computes
the metric (each forward all-gathers the partitioned weights, a collective, so every rank must
make the same forward calls; the calls do not depend on the data, and rank 0 logs its values).
"""
from __future__ import annotations

from pathlib import Path

import torch

from tdd_video.data.video_io import write_video
from tdd_video.errors import ConfigError
from tdd_video.eval.heldout import heldout_images
from tdd_video.families.base import using_unet
from tdd_video.sampling import make_sampler, sample


def validation_duties(cfg, is_main: bool, zero3: bool) -> tuple[bool, bool]:
    """(renders, metric): what this rank does. Renders on rank 0 and not under ZeRO-3 (see the
    trainer's warning); the metric on rank 0, and under ZeRO-3 on every rank (module docstring)."""
    return cfg.every > 0 and is_main and not zero3, cfg.metric_every > 0 and (is_main or zero3)


def metric_key(steps: int) -> str:
    return f"val/mse_to_teacher_k{steps}"


class Validator:
    """Renders the student every `cfg.every` steps (if `renders`) and measures the distillation
    distance every `cfg.metric_every` steps (module docstring)."""

    def __init__(self, cfg, family, batch: dict, latent_shape: tuple[int, ...], run_dir: Path, num_grid: int,
                 method=None, renders: bool = True):
        self.cfg, self.family, self.run_dir, self.num_grid = cfg, family, Path(run_dir), num_grid
        self.sampler = getattr(method, "sampler", "tdd")              # the method's own sampler
        self.renders = renders
        self._reference: dict[int, torch.Tensor] | None = None       # seed -> teacher latents
        gen = torch.Generator().manual_seed(0)
        if getattr(cfg, "images", "data") == "heldout":
            n = cfg.num_images
            size = tuple(d * family.vae_scale_factor for d in latent_shape[-2:])
            images, _ = heldout_images(n, size)
            self.cond = family.encode_conditioning({"first_frame": torch.stack(images)}, gen, train=False)
        else:
            n = min(cfg.num_images, latent_shape[0])
            small = {k: (v[:n] if hasattr(v, "__getitem__") and not isinstance(v, str) else v)
                     for k, v in batch.items()}
            self.cond = family.encode_conditioning(small, gen, train=False)
        self.null = family.null_conditioning(self.cond)
        self.shape = (n, *latent_shape[1:])

    def due(self, step: int) -> bool:
        return self.renders and self.cfg.every > 0 and step % self.cfg.every == 0

    def metric_due(self, step: int, max_steps: int) -> bool:
        n = self.cfg.metric_every
        return n > 0 and (step % n == 0 or step == max_steps)

    def _student(self, k: int, seed: int, unet) -> torch.Tensor:
        """The student's K-step x0 latents for `seed` with the method's sampler (renders and metric)."""
        gen = torch.Generator().manual_seed(seed)
        with using_unet(self.family, unet):
            return sample(self.family, self.cond, self.null, steps=k, eta=self.cfg.eta,
                          guidance=float(self.cfg.guidance), generator=gen, shape=self.shape, progress=False,
                          scheduler=make_sampler(self.family, self.sampler, eta=self.cfg.eta))

    @torch.no_grad()
    def reference(self, roles) -> dict[int, torch.Tensor]:
        """Teacher latents per seed (cached): `reference_steps` steps, deterministic, CFG `reference_guidance`."""
        if self._reference is None:
            g = [float(v) for v in self.cfg.reference_guidance]
            g = (g[0], g[-1])
            video = len(self.shape) == 5
            if g[0] != g[1] and not video:
                raise ConfigError("validation.reference_guidance", f"frame-wise {list(g)} needs video latents; "
                                                                   "give one value for images, e.g. [4.5]")
            edm = getattr(self.family.schedule, "kind", "vp") == "edm"
            out = {}
            with roles.teacher() as teacher, using_unet(self.family, teacher):
                for seed in self.cfg.seeds:
                    noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(seed))
                    noise = noise.to(getattr(self.family, "device", noise.device))
                    lat = sample(self.family, self.cond, self.null, steps=self.cfg.reference_steps, eta=0.0,
                                 guidance=g if g[0] != g[1] else g[0], latents=noise, progress=False,
                                 scheduler=make_sampler(self.family, "euler" if edm else "tdd", eta=0.0))
                    out[seed] = lat.float().cpu()
            self._reference = out
        return self._reference

    @torch.no_grad()
    def distances(self, roles) -> dict[str, float]:
        """{'val/mse_to_teacher_k{K}': mean over (image, seed) pairs of the latent MSE of the student's K-step
        sample to the reference, and 'val/mse_to_teacher_k{K}_se': its standard error}."""
        ref = self.reference(roles)
        out = {}
        with roles.target(False) as unet:      # the student weights, no autograd
            for k in self.cfg.steps:
                per_pair = torch.cat([((self._student(k, seed, unet).double().cpu() - ref[seed].double()) ** 2)
                                      .flatten(1).mean(1) for seed in self.cfg.seeds])
                out[metric_key(k)] = float(per_pair.mean())
                se = per_pair.std(unbiased=True) / per_pair.numel() ** 0.5 if per_pair.numel() > 1 else 0.0
                out[metric_key(k) + "_se"] = float(se)
        return out

    @torch.no_grad()
    def render(self, step: int, roles) -> list[Path]:
        out_dir = self.run_dir / "validation" / f"step_{step:06d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        with roles.target(False) as unet:      # the student weights, no autograd
            for k in self.cfg.steps:
                for seed in self.cfg.seeds:
                    lat = self._student(k, seed, unet)
                    pix = self.family.decode_latents(lat)
                    for i in range(pix.shape[0]):
                        frames = pix[i] if pix.ndim == 5 else pix[i:i + 1]
                        path = out_dir / f"k{k}_seed{seed}_img{i}.{self.cfg.format}"
                        write_video(frames.clamp(-1, 1), path, fps=self.cfg.fps)
                        written.append(path)
        return written
