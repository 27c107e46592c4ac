"""Compare few-step image-to-video samplers side by side: TDD vs AnimateLCM vs the many-step teacher.

  python infer/compare.py                                    # toy zoo (or tiny) model, default contenders
  python infer/compare.py teacher@25 tdd@4 tdd@4+refine animatelcm@4 animatelcm@8 \\
      --model stabilityai/stable-video-diffusion-img2vid-xt-1-1 --tdd-lora tdd_svd.safetensors \\
      --animatelcm-unet AnimateLCM-SVD-xt-1.1.safetensors --images photos/ --seeds 0 1 2 --out runs/compare
  python infer/compare.py ... --i3d i3d_torchscript.pt       # adds FVD (local TorchScript I3D file)

Contenders are METHOD@STEPS[+refine] with METHOD teacher | base | tdd | animatelcm | default (default@N:
what `infer/img2vid.py --steps N` renders without --model, the student shipped with the model for N steps at its
strength, e.g. `python infer/compare.py teacher@25 default@1 default@4`). All contenders start
from the same noise and conditioning per (image, seed). Outputs in --out: grid.mp4 (rows = image ×
seed, columns = contenders), strip.png, metrics.md and metrics.json (UNet passes, wall time,
latent MSE / PSNR / SSIM to the teacher, temporal smoothness and sharpness vs the teacher,
first-frame fidelity, FVD with --i3d).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tdd_video.cli.flags import Parser
from tdd_video.core.params import DEFAULT_ETA


def _pair(text: str) -> tuple[float, float]:
    parts = [float(v) for v in text.replace(",", " ").split()]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected G or GMIN,GMAX, got {text!r}")
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__.split("\n")[0], epilog=__doc__,
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
    p.add_argument("--i3d", default=None,
                   help="local TorchScript I3D file for FVD (e.g. i3d_torchscript.pt). Loading a TorchScript file "
                        "runs the code inside it: use only a file from a trusted source")
    p.add_argument("--teacher-guidance", type=_pair, default=(1.0, 3.0), help="frame-wise GMIN,GMAX (default 1,3)")
    p.add_argument("--tdd-guidance", type=float, default=1.0, help="CFG on the TDD student (1 = one pass/step)")
    p.add_argument("--tdd-eta", type=float, default=DEFAULT_ETA, help=f"TDD γ-sampling η (default {DEFAULT_ETA})")
    p.add_argument("--refine-strength", type=float, default=0.05, help="Distillation++ λ for +refine")
    p.add_argument("--animatelcm-guidance", type=_pair, default=(1.0, 1.0),
                   help="frame-wise GMIN,GMAX on AnimateLCM (released model: 1,1.2)")
    p.add_argument("--fps-id", type=int, default=6)
    p.add_argument("--motion-bucket-id", type=int, default=127)
    p.add_argument("--noise-aug", type=float, default=0.02)
    p.add_argument("--decode-chunk", type=int, default=None, help="VAE-decode N frames at a time (saves memory)")
    p.add_argument("--format", dest="video_format", choices=("mp4", "gif"), default="mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bars (ours and the libraries')")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def check_args(args) -> None:
    """The checks that need no torch (so a bad value fails at once): numbers, the model name, that the given
    files exist and read (LoRA / UNet headers, images), that --out can be written. ConfigError keyed by flag."""
    from tdd_video.apps.settings import check_finite, check_lora_file, check_model_name, check_output, check_weights
    from tdd_video.data.image_io import load_image
    from tdd_video.errors import ConfigError, check_range
    for key in ("frames", "height", "width", "decode_chunk", "num_default_images"):
        if getattr(args, key) is not None:
            check_range(key, getattr(args, key), 1, None)
    for key in ("tdd_guidance", "tdd_eta", "refine_strength", "noise_aug", *(f"{m}_guidance" for m in
                                                                           ("teacher", "animatelcm"))):
        for v in (getattr(args, key) if isinstance(getattr(args, key), tuple) else (getattr(args, key),)):
            check_finite(key, v)
            check_range(key, v, 0.0, None)
    check_range("tdd_eta", args.tdd_eta, 0.0, 1.0, hi_open=True)
    check_range("refine_strength", args.refine_strength, 0.0, 1.0)
    check_range("motion_bucket_id", args.motion_bucket_id, 0, 1023)
    check_range("fps_id", args.fps_id, 0, None)
    for seed in args.seeds:
        check_range("seeds", seed, 0, 2 ** 32 - 1)
    check_model_name(args.model)
    for key in ("tdd_lora", "animatelcm_lora"):
        path = getattr(args, key)
        if path is not None and not Path(path).is_dir():      # a folder: its first .safetensors is used
            check_lora_file(key, path)
    for key in ("tdd_unet", "animatelcm_unet"):
        if getattr(args, key) is not None:
            check_weights(key, getattr(args, key), "UNet checkpoint")
    for item in args.images:
        if not Path(item).is_dir():
            try:
                load_image(item)
            except ConfigError as e:
                raise ConfigError("images", str(e).split(": ", 1)[1]) from None
    if args.i3d is not None and not Path(args.i3d).is_file():
        raise ConfigError("i3d", f"file not found: {args.i3d}")
    check_output("out", args.out, folder=True)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tdd_video.cli.flags import flag_error, quiet_progress
    from tdd_video.errors import ConfigError
    from tdd_video.unet_checkpoint import CheckpointError
    try:
        check_args(args)
    except ConfigError as e:
        print(f"error: {flag_error(e, parser)}", file=sys.stderr)
        return 2
    if args.quiet:
        quiet_progress()
    from tdd_video.eval.compare import CompareConfig, run_compare
    from tdd_video.eval.report import markdown_table
    kw = {k: v for k, v in vars(args).items() if k != "quiet"}
    kw["contenders"] = kw["contenders"] or None
    cfg = CompareConfig(**kw, progress=not args.quiet)
    try:
        result = run_compare(cfg)
    except ConfigError as e:
        print(f"error: {flag_error(e, parser)}", file=sys.stderr)
        return 2
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(markdown_table(result.rows, result.reference))
    for note in result.notes:
        print(f"note: {note}")
    for k, v in result.files.items():
        print(f"{k}: {v}")
    return 0

