"""Few-step image-to-video with a TDD student (SVD family).

  python infer/img2vid.py --steps 4                                   # bundled image + default model
  python infer/img2vid.py --image in.png --model stabilityai/stable-video-diffusion-img2vid-xt-1-1 \\
      --lora tdd_svd.safetensors --steps 4 --out out.mp4 --device cuda --dtype bf16
  python infer/img2vid.py --image in.png --model DIR --lora L.safetensors --teacher-refine 0.05 --refine-steps 1
  python infer/img2vid.py --model DIR --lora L.safetensors --fuse --export-pipeline svd-tdd-4step
  python infer/img2vid.py --image in.png --model stabilityai/stable-video-diffusion-img2vid-xt-1-1 \
      --unet AnimateLCM-SVD-xt-1.1.safetensors --sampler animatelcm --steps 4 --guidance-min 1 --guidance-max 1.2

Without --model the bundled toy zoo is used: the trained toy teacher `toy-svd` (32x32, 8 frames) with the
shipped TDD student LoRA made for the step count (tdd-2step for 1 to 3 steps, at 1.3 / 1.2 / 0.8 times its strength
for 1 / 2 / 3 steps, tdd-4step for 4 to 7, tdd-8step from 8 on). `--model toy-svd` alone is the teacher without the
student; `--model tiny` is a tiny RANDOM-weight model (a code-path demo). Same arguments and --seed give identical
frames.
"""
from __future__ import annotations

import argparse
import sys

from tdd_video.cli.flags import Parser, add_shared_flags, clip_arg, clip_from_args, run_render
from tdd_video.core.params import DEFAULT_ETA


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description="TDD few-step image-to-video (SVD).", epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--image", default=None, help="conditioning image file (default: the bundled sample image)")
    a("--model", default=None, help="diffusers SVD folder, hub id, zoo name (toy-svd) or tiny "
                                    "(default: toy-svd + its TDD student LoRA for --steps)")
    a("--lora", default=None, help="TDD LoRA .safetensors for this base (refused if made for another base)")
    a("--unet", default=None, metavar="FILE",
      help="full UNet state dict for the base (.safetensors/.bin, or a diffusers UNet folder such as a training "
           "run's export/unet), loaded strictly — e.g. the released AnimateLCM-SVD-xt-1.1.safetensors")
    a("--sampler", choices=["tdd", "animatelcm", "euler"], default="tdd",
      help="tdd (default), animatelcm (AnimateLCM's multistep sampler for AnimateLCM students) or euler (the "
           "teacher's Karras Euler, as the stock pipeline: e.g. --sampler euler --steps 25 --guidance-min 1 "
           "--guidance-max 3); --eta, --schedule, --clip-x0 and --teacher-refine apply to the TDD sampler")
    a("--lora-scale", type=float, default=None,
      help="LoRA strength (default 1; without --model, the strength measured best for --steps: 1.3 / 1.2 / 0.8 "
           "for the 1-3 step student at 1 / 2 / 3 steps, docs/quality.md §2)")
    a("--fuse", action="store_true", help="fuse the LoRA into the UNet (faster; disables --teacher-refine)")
    add_shared_flags(p, "--steps")
    a("--eta", type=float, default=None,
      help=f"γ-sampling η in [0, 1): re-noise fraction per step (default {DEFAULT_ETA}; TDD sampler only)")
    a("--schedule", choices=["equidistant", "tdd-nonuniform"], default="equidistant",
      help="timestep schedule: S_K, or short hops early / long hops late (both on the training set)")
    add_shared_flags(p, "--guidance")
    a("--guidance-min", type=float, default=None, help="frame-wise CFG: scale at the first frame")
    a("--guidance-max", type=float, default=None, help="frame-wise CFG: scale at the last frame")
    a("--clip-x0", type=clip_arg, default=None, metavar="MODE[:B]",
      help="x0 clipping: none | static:B | dynamic:B (B = latent bound; dynamic clips the top 0.5%% of |x0| "
           "but never below B)")
    add_shared_flags(p, "--clip-steps")
    a("--frames", type=int, default=None, help="number of frames (default: the UNet's num_frames)")
    a("--fps", type=int, default=7, help="frame rate of the output and the fps conditioning (default 7)")
    a("--motion-bucket", type=int, default=127, help="motion bucket id (default 127)")
    a("--noise-aug", type=float, default=0.02, help="noise augmentation of the conditioning image (default 0.02)")
    a("--height", type=int, default=None, help="output height (default: 576 for real SVD, native for tiny)")
    a("--width", type=int, default=None, help="output width (default: 1024 for real SVD, native for tiny)")
    add_shared_flags(p, "--seed")
    a("--decode-chunk", type=int, default=None, help="frames decoded at once (default: all)")
    add_shared_flags(p, "--vae-decoder")
    add_shared_flags(p, "--device", "--dtype")
    a("--out", default="outputs/img2vid.mp4", help=".mp4, .gif, or a folder for PNG frames (created if missing)")
    add_shared_flags(p, "--teacher-refine", "--refine-steps")
    a("--export-pipeline", default=None, metavar="DIR",
      help="also save a plain diffusers pipeline folder (base + fused LoRA + TDD scheduler)")
    add_shared_flags(p, "--no-progress")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tdd_video.apps.settings import Img2VidSettings  # light: no torch until the settings are checked
    if args.sampler != "tdd" and args.eta is not None:
        print(f"error: --eta: γ-sampling η belongs to the TDD sampler, not to --sampler {args.sampler}",
              file=sys.stderr)
        return 2
    settings = Img2VidSettings(
        image=args.image, model=args.model, lora=args.lora, unet=args.unet, sampler=args.sampler,
        lora_scale=args.lora_scale, fuse=args.fuse, steps=args.steps, eta=DEFAULT_ETA if args.eta is None else args.eta,
        schedule=args.schedule, guidance=args.guidance, guidance_min=args.guidance_min,
        guidance_max=args.guidance_max, clip=args.clip_x0, frames=args.frames, fps=args.fps,
        motion_bucket=args.motion_bucket, noise_aug=args.noise_aug, height=args.height, width=args.width,
        seed=args.seed, decode_chunk=args.decode_chunk, device=args.device, dtype=args.dtype, out=args.out,
        teacher_refine=args.teacher_refine, refine_steps=args.refine_steps, export_pipeline=args.export_pipeline,
        vae_decoder=args.vae_decoder, progress=not args.no_progress)
    return run_render("tdd_video.apps.img2vid:render_img2vid", settings, parser=parser,
                      prepare=lambda s: setattr(s, "clip", clip_from_args(args)))

