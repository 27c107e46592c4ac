"""Compare few-step image-to-video samplers side by side: TDD vs AnimateLCM vs the many-step teacher.

  python infer/compare.py                                    # toy zoo (or tiny) model, default contenders
  python infer/compare.py teacher@25 tdd@4 tdd@4+refine animatelcm@4 animatelcm@8 \\
      --model stabilityai/stable-video-diffusion-img2vid-xt-1-1 --tdd-lora tdd_svd.safetensors \\
      --animatelcm-unet AnimateLCM-SVD-xt-1.1.safetensors --images photos/ --seeds 0 1 2 --out runs/compare
  python infer/compare.py ... --i3d i3d_torchscript.pt       # adds FVD (local TorchScript I3D file)

Contenders are METHOD@STEPS[+refine] with METHOD teacher | tdd | animatelcm. All contenders start
from the same noise and conditioning per (image, seed). Outputs in --out: grid.mp4 (rows = image ×
seed, columns = contenders), strip.png, metrics.md and metrics.json (UNet passes, wall time,
latent MSE / PSNR / SSIM to the teacher, temporal smoothness and sharpness vs the teacher,
first-frame fidelity, FVD with --i3d).
"""
from __future__ import annotations

import argparse
import sys


def _pair(text: str) -> tuple[float, float]:
    parts = [float(v) for v in text.replace(",", " ").split()]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected G or GMIN,GMAX, got {text!r}")
    return parts[0], parts[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("contenders", nargs="*", default=None,
                   help="METHOD@STEPS[+refine] (default: teacher@25 teacher@4 tdd@4 animatelcm@4, students only "
                        "when their weights are given or shipped with the zoo teacher)")
    p.add_argument("--model", default=None, help="base SVD: diffusers folder or hub id (default: toy zoo teacher, "
                                                 "else the tiny random model)")
    p.add_argument("--tdd-lora", default=None, help="TDD student LoRA (.safetensors or export folder)")
    p.add_argument("--tdd-unet", default=None, help="TDD student as a full UNet state dict (instead of --tdd-lora)")
    p.add_argument("--animatelcm-unet", "--unet", dest="animatelcm_unet", default=None,
                   help="full AnimateLCM UNet state dict, e.g. AnimateLCM-SVD-xt-1.1.safetensors (strict load)")
    p.add_argument("--animatelcm-lora", default=None, help="AnimateLCM LoRA distilled with this project")
    p.add_argument("--images", nargs="*", default=[], help="image files or folders (default: bundled sample image "
                                                          "+ held-out synthetic first frames)")
    p.add_argument("--num-images", dest="num_default_images", type=int, default=3,
                   help="how many default images when --images is not given (sample image + synthetic frames)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: the UNet's num_frames)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--out", default="runs/compare", help="output folder")
    p.add_argument("--i3d", default=None, help="local TorchScript I3D file for FVD (e.g. i3d_torchscript.pt)")
    p.add_argument("--teacher-guidance", type=_pair, default=(1.0, 3.0), help="frame-wise GMIN,GMAX (default 1,3)")
    p.add_argument("--tdd-guidance", type=float, default=1.0, help="CFG on the TDD student (1 = one pass/step)")
    p.add_argument("--tdd-eta", type=float, default=0.3, help="TDD γ-sampling η")
    p.add_argument("--refine-strength", type=float, default=0.05, help="Distillation++ λ for +refine")
    p.add_argument("--animatelcm-guidance", type=_pair, default=(1.0, 1.0),
                   help="frame-wise GMIN,GMAX on AnimateLCM (released model: 1,1.2)")
    p.add_argument("--fps-id", type=int, default=6)
    p.add_argument("--motion-bucket-id", type=int, default=127)
    p.add_argument("--noise-aug", type=float, default=0.02)
    p.add_argument("--decode-chunk", type=int, default=None, help="VAE-decode N frames at a time (saves memory)")
    p.add_argument("--format", dest="video_format", choices=("mp4", "gif"), default="mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tdd_video.errors import ConfigError
    from tdd_video.eval.compare import CompareConfig, run_compare
    from tdd_video.eval.report import markdown_table
    from tdd_video.unet_checkpoint import CheckpointError
    kw = {k: v for k, v in vars(args).items() if k != "quiet"}
    kw["contenders"] = kw["contenders"] or None
    cfg = CompareConfig(**kw, progress=not args.quiet)
    try:
        result = run_compare(cfg)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(result.rows, result.reference))
    for note in result.notes:
        print(f"note: {note}")
    for k, v in result.files.items():
        print(f"{k}: {v}")
    return 0

