#!/usr/bin/env python
"""End-to-end image-to-video with real-size SVD-xt components: TDD 4 steps vs the teacher's 25 steps.

  OMP_NUM_THREADS=2 python bench/bench_e2e.py                      # 256x256, 14 frames, bf16
  python bench/bench_e2e.py --height 320 --width 576 --frames 14   # SVD's training size (slow on a CPU)

The pipeline folder is built once (runs/bench_e2e/svd-xt-random, bf16 safetensors) from the real
configurations with RANDOM weights: UNetSpatioTemporalConditionModel (SVD-xt, 1.5 B parameters),
AutoencoderKLTemporalDecoder (SVD's temporal VAE), CLIPVisionModelWithProjection (ViT-H/14, 632 M) and
SVD's Euler scheduler — speed, not quality. Both runs go through the real render (tdd_video.apps.img2vid,
what `tdd-img2vid` runs) in one process, with the same image, size and seed:
* tdd:     `--steps 4` (TDD sampler, guidance 1: 4 UNet passes)
* teacher: `--sampler euler --steps 25 --guidance-min 1 --guidance-max 3` (the stock pipeline's recipe: 50 passes)
Printed, one JSON line each: the stage breakdown of every run (image, conditioning = CLIP + VAE encode, denoise,
decode, write; model loading excluded) and the speed-ups: end to end (everything after loading) and UNet only
(denoise). With `--repeats N` every TDD variant is rendered N times, interleaved, the teacher once after the
first round, and the speed-ups use the medians (this machine's timings swing by 20-30 %). `--decode-chunks`
variants show what chunking the VAE decode does; `--tiny-decoder` adds runs that decode with a real-size
TAESD-architecture AutoencoderTiny (random weights, built once in runs/bench_e2e/taesd-random; what
`--vae-decoder madebyollin/taesd` loads for a user): `tdd_taesd` (the 4-step render a user choosing the lighter
decoder gets) and `teacher_taesd` (the like-for-like teacher). Random weights measure speed only; the fidelity
of the real TAESD is not measured here (the same construction at toy size: tools/zoo/tiny_decoder.py, docs/math.md
§14).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

VAE_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=768,
                  scaling_factor=0.18215)
CLIP_CONFIG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                   patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu")


def emit(**kw):
    print(json.dumps({**kw, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)


def build_folder(folder: Path, dtype: torch.dtype) -> Path:
    """A StableVideoDiffusionPipeline folder with real-size random-weight components (built once)."""
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from tdd_video.families.tiny import SVD_SCHEDULER_CONFIG, tiny_clip_image_processor
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        unet = UNetSpatioTemporalConditionModel()                 # the SVD-xt configuration (diffusers defaults)
        vae = AutoencoderKLTemporalDecoder(**VAE_CONFIG)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_CONFIG))
    finally:
        torch.set_default_dtype(prev)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=clip, unet=unet,
                                        scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG),
                                        feature_extractor=tiny_clip_image_processor())
    tmp = folder.with_name(folder.name + ".tmp")
    pipe.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(folder)
    return folder


def build_tiny_decoder(folder: Path, dtype: torch.dtype) -> Path:
    """A TAESD-architecture AutoencoderTiny folder (diffusers defaults = madebyollin/taesd's config), random
    weights, built once."""
    if (folder / "config.json").is_file():
        return folder
    from diffusers import AutoencoderTiny
    torch.manual_seed(0)
    tmp = folder.with_name(folder.name + ".tmp")
    AutoencoderTiny().to(dtype).save_pretrained(tmp, safe_serialization=True)
    tmp.rename(folder)
    return folder


def render(args, model: str, **kw):
    from tdd_video.apps.img2vid import Img2VidSettings, render_img2vid
    s = Img2VidSettings(model=model, height=args.height, width=args.width, frames=args.frames, dtype=args.dtype,
                        seed=0, progress=False, out=str(Path(args.out) / f"{kw.pop('name')}.mp4"), **kw)
    return render_img2vid(s)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--folder", default="runs/bench_e2e/svd-xt-random", help="where the random pipeline is kept")
    p.add_argument("--out", default="runs/bench_e2e", help="videos written here")
    p.add_argument("--teacher-steps", type=int, default=25)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--decode-chunks", type=int, nargs="*", default=[],
                   help="extra TDD runs with --decode-chunk N (frames decoded at once)")
    p.add_argument("--tiny-decoder", action="store_true",
                   help="extra runs (tdd and teacher) decoding with a real-size TAESD-architecture AutoencoderTiny")
    p.add_argument("--repeats", type=int, default=1,
                   help="render each TDD variant this many times (interleaved; speed-ups use the median)")
    p.add_argument("--skip-teacher", action="store_true", help="only the TDD runs (the teacher takes long)")
    args = p.parse_args(argv)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    t0 = time.perf_counter()
    folder = build_folder(Path(args.folder), dtype)
    emit(bench="e2e", what="setup", folder=str(folder), build_or_find_s=round(time.perf_counter() - t0, 1),
         threads=torch.get_num_threads(), height=args.height, width=args.width, frames=args.frames, dtype=args.dtype)
    runs: dict[str, list[tuple[float, float]]] = {}

    def run(name, **kw):
        r = render(args, str(folder), name=name, **kw)
        t = {k: round(v, 3) for k, v in r.timings.items()}
        after_load = sum(v for k, v in r.timings.items() if k != "load")
        runs.setdefault(name, []).append((after_load, r.timings["denoise"]))
        emit(bench="e2e", what="run", run=name, unet_passes=r.stats.unet_passes, stages_s=t,
             total_after_load_s=round(after_load, 3), denoise_share=round(r.timings["denoise"] / after_load, 3),
             decode_share=round(r.timings["decode"] / after_load, 3))
        return r

    def median(name, i):
        return statistics.median(v[i] for v in runs[name])
    tiny = str(build_tiny_decoder(Path(args.folder).with_name("taesd-random"), dtype)) if args.tiny_decoder else None
    variants = {"tdd": dict(steps=args.steps, guidance=1.0)}
    for chunk in args.decode_chunks:
        variants[f"tdd_chunk{chunk}"] = dict(steps=args.steps, guidance=1.0, decode_chunk=chunk)
    if tiny:
        variants["tdd_taesd"] = dict(steps=args.steps, guidance=1.0, vae_decoder=tiny)
    teacher = dict(sampler="euler", steps=args.teacher_steps, guidance_min=1.0, guidance_max=3.0)
    for rep in range(args.repeats):                 # the short TDD runs, interleaved; the teacher after the first round
        for name, kw in variants.items():
            run(name, **kw)
        if rep == 0 and not args.skip_teacher:
            run("teacher", **teacher)
            if tiny:
                run("teacher_taesd", vae_decoder=tiny, **teacher)
    if not args.skip_teacher:
        for name in variants:
            emit(bench="e2e", what="speedup", tdd_run=name, teacher_run="teacher", tdd_repeats=len(runs[name]),
                 end_to_end=round(median("teacher", 0) / median(name, 0), 2),
                 unet_only=round(median("teacher", 1) / median(name, 1), 2), target_end_to_end=9.0, target_unet=11.0)
            if name == "tdd_taesd":                     # like for like: both renders decode with the tiny decoder
                emit(bench="e2e", what="speedup", tdd_run=name, teacher_run="teacher_taesd",
                     tdd_repeats=len(runs[name]), end_to_end=round(median("teacher_taesd", 0) / median(name, 0), 2),
                     unet_only=round(median("teacher_taesd", 1) / median(name, 1), 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
