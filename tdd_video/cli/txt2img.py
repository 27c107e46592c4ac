"""Few-step text-to-image with a TDD student (SDXL family).

  python infer/txt2img.py --steps 4                                    # toy zoo: toy-sdxl + its TDD student
  python infer/txt2img.py --prompt "a red circle above a blue square" --prompt "a green square below a yellow circle" \\
      --batch 4 --seed 1 --out grid.png
  python infer/txt2img.py --model stabilityai/stable-diffusion-xl-base-1.0 --lora tdd_sdxl.safetensors \\
      --prompt "a photo of a cat" --steps 4 --guidance 1.3 --eta 0.2 --device cuda --dtype fp16 --out cat.png
  python infer/txt2img.py --lora none --steps 25 --eta 0 --guidance 4.5   # the teacher alone (toy zoo)

Guidance: plain CFG on the student (Imagen form x0(∅) + g·(x0(c) − x0(∅))); g = 1 is one UNet pass per
step and reproduces the guidance distilled into the student; g > 1 strengthens it. --negative-prompt
replaces the null conditioning (zero embeddings) of the unconditional branch. Same arguments and --seed
give identical pixels. Without --model: the toy zoo's toy-sdxl (+ its shipped TDD student LoRA) when
present, else a tiny RANDOM-weight SDXL (a note says so).
"""
from __future__ import annotations

import argparse

from tdd_video.cli.flags import Parser, add_shared_flags, clip_arg, clip_from_args, run_render
from tdd_video.core.params import DEFAULT_ETA


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description="TDD few-step text-to-image (SDXL).", epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--prompt", action="append", default=None, help="prompt (repeat for several; default: a toy caption)")
    a("--negative-prompt", default=None, help="negative prompt (default: none = zero null conditioning)")
    a("--model", default=None, help="diffusers SDXL folder, hub id, zoo name (toy-sdxl) or 'tiny' (random weights)")
    a("--lora", default=None, help="TDD LoRA .safetensors; 'none' renders the base model (default: the zoo student)")
    a("--lora-scale", type=float, default=1.0, help="LoRA strength (default 1.0 = as trained; alpha is in the file)")
    a("--fuse", action="store_true", help="fuse the LoRA into the UNet (disables --teacher-refine)")
    add_shared_flags(p, "--steps")
    a("--eta", type=float, default=DEFAULT_ETA, help=f"γ-sampling η in [0, 1) (default {DEFAULT_ETA})")
    a("--schedule", choices=["equidistant", "tdd-nonuniform"], default="equidistant",
      help="timesteps: S_K, or short hops early / long hops late (both on the training schedule set)")
    add_shared_flags(p, "--guidance")
    a("--clip-x0", type=clip_arg, default=None, metavar="MODE[:B]",
      help="x0 clipping: none | static:B | dynamic:B (B in latent units)")
    add_shared_flags(p, "--clip-steps", "--teacher-refine", "--refine-steps")
    a("--refine-guidance", type=float, default=None, help="teacher CFG scale for refinement (default 5.0)")
    a("--batch", type=int, default=1, help="images per prompt (default 1)")
    a("--height", type=int, default=None, help="image height (default: the UNet's native size)")
    a("--width", type=int, default=None, help="image width (default: the UNet's native size)")
    add_shared_flags(p, "--seed", "--vae-decoder", "--device", "--dtype")
    a("--out", default="outputs/txt2img.png", help=".png (one image, or a grid: rows = prompts) or a folder of PNGs")
    add_shared_flags(p, "--no-progress")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tdd_video.apps.settings import Txt2ImgSettings  # light: no torch until the settings are checked
    kw = {} if args.prompt is None else {"prompts": args.prompt}
    settings = Txt2ImgSettings(
        **kw, negative_prompt=args.negative_prompt, model=args.model, lora=args.lora, lora_scale=args.lora_scale,
        fuse=args.fuse, steps=args.steps, eta=args.eta, schedule=args.schedule, guidance=args.guidance,
        clip=args.clip_x0, teacher_refine=args.teacher_refine, refine_steps=args.refine_steps,
        refine_guidance=args.refine_guidance, batch=args.batch, height=args.height, width=args.width,
        seed=args.seed, device=args.device, dtype=args.dtype, out=args.out, vae_decoder=args.vae_decoder,
        progress=not args.no_progress)
    return run_render("tdd_video.apps.txt2img:render_txt2img", settings, parser=parser,
                      prepare=lambda s: setattr(s, "clip", clip_from_args(args)))

