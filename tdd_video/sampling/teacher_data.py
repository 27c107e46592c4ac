"""Training data made by the teacher: for each clip, the teacher's own many-step sample replaces the clip's
latents (distillation on the teacher's distribution; docs/math.md §3.8).

Why: the student learns the teacher's probability-flow jumps at states x_t = α·x0 + σ·ε. At inference
it meets the states of the teacher's sampling trajectories, whose marginal at every level is the
teacher's sample distribution noised, not the data's. Where the teacher's samples differ from the data
(a small teacher, conditioning images unlike its training set), training on data latents spends the
student's capacity on states it never visits. Noising the teacher's samples instead gives exactly the
marginals the sampler visits (for the unguided flow; approximately with guidance).

`teacher_sample_encoder(family, ...)` is an `encode` callable for tdd_video.data.cache.build_cache: it
keeps the clip's first frame (the conditioning), fps and motion bucket, and stores the latents of the
teacher's `steps`-step Karras Euler sample with frame-wise CFG (1 → 3 by default, the pipeline's), from
noise seeded by the cache's per-clip generator.
"""
from __future__ import annotations

import torch

from tdd_video.sampling.sample import make_sampler, sample

Tensor = torch.Tensor


def teacher_sample_encoder(family, steps: int = 25, guidance: tuple[float, float] = (1.0, 3.0),
                           noise_aug: float = 0.02, fps_id: int = 6, motion_bucket_id: int = 127):
    """encode(pixels [1, F, 3, H, W], generator, meta) -> (teacher-sample latents [F, C, h, w], image_emb [1, D]);
    the clip's fps_id / motion_bucket_id in `meta` condition the teacher (the fixed values are the fallback)."""
    def encode(pix: Tensor, generator: torch.Generator, meta: dict | None = None) -> tuple[Tensor, Tensor]:
        first = pix[:, 0]
        meta = meta or {}
        cond = family.encode_conditioning({"first_frame": first}, generator, train=False, noise_aug=noise_aug,
                                          fps_id=int(meta.get("fps_id", fps_id)),
                                          motion_bucket_id=int(meta.get("motion_bucket_id", motion_bucket_id)))
        shape = family.latent_shape(1, pix.shape[1], pix.shape[-2], pix.shape[-1])
        with torch.no_grad():
            lat = sample(family, cond, steps=steps, guidance=tuple(guidance), generator=generator, shape=shape,
                         progress=False, scheduler=make_sampler(family, "euler"))
        return lat[0].float(), family.encode_image_embedding(first)[0]
    return encode
