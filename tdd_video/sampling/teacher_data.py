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
                           noise_aug: float = 0.02):
    """encode(pixels [n, F, 3, H, W], generators [n], metas [n]) -> (teacher-sample latents [n, F, C, h, w],
    image_emb [n, 1, D]). Each clip: its conditioning (first frame, its fps_id / motion_bucket_id from `metas`,
    noise augmentation from its generator), then its starting noise from the same generator; the n clips are
    sampled together (one batched teacher forward per step), so the result does not depend on the batching."""
    def encode(pix: Tensor, generators: list, metas: list) -> tuple[Tensor, Tensor]:
        conds, noise = [], []
        shape = family.latent_shape(1, pix.shape[1], pix.shape[-2], pix.shape[-1])
        for n, (g, meta) in enumerate(zip(generators, metas)):
            conds.append(family.encode_conditioning({"first_frame": pix[n:n + 1, 0]}, g, train=False,
                                                    noise_aug=noise_aug, fps_id=int(meta["fps_id"]),
                                                    motion_bucket_id=int(meta["motion_bucket_id"])))
            noise.append(torch.randn(shape, generator=g, dtype=torch.float32))
        cond = conds[0].cat(*conds[1:]) if len(conds) > 1 else conds[0]
        with torch.no_grad():
            lat = sample(family, cond, steps=steps, guidance=tuple(guidance), latents=torch.cat(noise),
                         progress=False, scheduler=make_sampler(family, "euler"))
        return lat.float(), cond.image_emb
    return encode
