"""Foundation demo: a tiny RANDOM-weight SVD rendered two ways, on CPU in seconds.

    python -m tdd_video.demo [--out outputs/demo] [--steps 4] [--seed 0] [--image in.png]

(a) our path: SVDFamily.denoise + a K-step DDIM-jump sampler written with tdd_video.core
    (schedule_indices on the N = 250 grid, jump), i.e. the TDD sampler with η = 0;
(b) the stock diffusers StableVideoDiffusionPipeline on the same saved model folder.
Both write GIFs. The weights are random, so the videos are noise-like: this checks plumbing and
speed, not quality (the trained toy zoo comes later).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from tdd_video.core import framewise_scale, jump, schedule_indices


def synthetic_image(size: int = 64, seed: int = 0) -> np.ndarray:
    """A colourful disc on a gradient, uint8 [H, W, 3] (no external files needed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([xx, yy, 1 - xx], -1) * 0.6
    cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    img[disc] = rng.uniform(0.3, 1.0, 3)
    return (img * 255).astype(np.uint8)


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[F, 3, H, W] in [-1, 1] -> uint8 [F, H, W, 3]."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_video(path: Path, frames: np.ndarray, fps: int = 7, mp4: bool = False) -> Path:
    """Write uint8 frames [F, H, W, 3] as a looping GIF (and an .mp4 next to it if asked)."""
    import imageio.v2 as imageio
    imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
    if mp4:   # macro_block_size=1: otherwise imageio's ffmpeg writer pads sizes to multiples of 16
        imageio.mimsave(path.with_suffix(".mp4"), list(frames), fps=fps, macro_block_size=1)
    return path


@torch.no_grad()
def sample_ddim_jump(family, cond, steps: int, generator: torch.Generator, num_frames: int, size: int,
                     guidance: tuple[float, float] = (1.0, 1.0), num_grid: int = 250) -> torch.Tensor:
    """K-step DDIM-jump sampling on the shared u axis (SPEC §2, §5 with η = 0). Returns latents [1, F, C, h, w]."""
    u_steps = schedule_indices(num_grid, steps).to(torch.float64) / num_grid
    u_seq = torch.cat([u_steps, torch.zeros(1, dtype=torch.float64)])
    shape = family.latent_shape(1, num_frames, size, size)
    x = torch.randn(shape, generator=generator) * family.schedule.sigma(u_seq[:1]).float()
    w = framewise_scale(guidance[0], guidance[1], num_frames)
    for i in range(steps):
        x0 = family.denoise_cfg(x, u_seq[i:i + 1], cond, w)
        x = jump(family.schedule, x, x0, u_seq[i:i + 1], u_seq[i + 1:i + 2])
    return x


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m tdd_video.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    ap.add_argument("--steps", type=int, default=4, help="sampling steps for both paths (default 4)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random model and of the noise (default 0)")
    ap.add_argument("--image", type=Path, default=None, help="conditioning image (default: a synthetic 64x64 image)")
    ap.add_argument("--guidance-max", type=float, default=1.0,
                    help="frame-wise guidance max (min is 1.0); 1.0 = no CFG (default)")
    ap.add_argument("--mp4", action="store_true", help="also write .mp4 files (needs imageio-ffmpeg)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be >= 1")

    from diffusers.utils import logging as dlog
    from PIL import Image
    from transformers.utils import logging as tlog

    from tdd_video.families.svd import SVDFamily
    from tdd_video.families.tiny import TINY_FRAMES, TINY_PIXELS, save_tiny_svd
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    model_dir = save_tiny_svd(out / f"tiny_svd_random_seed{args.seed}", seed=args.seed)
    family = SVDFamily.from_pretrained(model_dir)
    timings["build_save_load_s"] = time.perf_counter() - t0

    size, frames_n = TINY_PIXELS, TINY_FRAMES
    img = Image.open(args.image).convert("RGB").resize((size, size)) if args.image else \
        Image.fromarray(synthetic_image(size, args.seed))
    img.save(out / "input.png")
    first = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1

    t0 = time.perf_counter()
    cond = family.encode_conditioning({"first_frame": first}, generator=torch.Generator().manual_seed(args.seed),
                                      train=False, noise_aug=0.02, fps_id=6, motion_bucket_id=127)
    lat = sample_ddim_jump(family, cond, args.steps, torch.Generator().manual_seed(args.seed), frames_n, size,
                           guidance=(1.0, args.guidance_max))
    ours = family.decode_latents(lat)[0]
    timings["ours_s"] = time.perf_counter() - t0
    ours_path = write_video(out / f"ours_ddim_jump_{args.steps}step.gif", to_uint8_frames(ours),
                            mp4=args.mp4)

    t0 = time.perf_counter()
    pipe = family.pipeline()
    pipe.set_progress_bar_config(disable=True)
    video = pipe(img, height=size, width=size, num_frames=frames_n, num_inference_steps=args.steps,
                 min_guidance_scale=1.0, max_guidance_scale=args.guidance_max, fps=7, motion_bucket_id=127,
                 noise_aug_strength=0.02, generator=torch.Generator().manual_seed(args.seed), output_type="np").frames[0]
    timings["stock_pipeline_s"] = time.perf_counter() - t0
    stock_path = write_video(out / f"stock_pipeline_euler_{args.steps}step.gif",
                             (video * 255).round().astype(np.uint8), mp4=args.mp4)

    print("NOTE: this demo uses a tiny SVD with RANDOM weights (UNet "
          f"{sum(p.numel() for p in family.unet.parameters()) / 1e6:.2f} M params). The videos are noise-like on "
          "purpose: it checks the plumbing and speed, not quality. The trained toy zoo comes later.")
    print(f"model folder (diffusers format): {model_dir}")
    print(f"(a) SVDFamily.denoise + {args.steps}-step DDIM jump: {ours_path}  [{timings['ours_s']:.2f} s]")
    print(f"(b) stock StableVideoDiffusionPipeline, {args.steps} Euler steps: {stock_path}  "
          f"[{timings['stock_pipeline_s']:.2f} s]")
    print(f"build + save + load of the random model: {timings['build_save_load_s']:.2f} s")
    return {"model_dir": model_dir, "ours": ours_path, "stock": stock_path, "timings": timings}


if __name__ == "__main__":
    main()
