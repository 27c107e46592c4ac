"""Rebuild a toy-zoo teacher (tiny SVD-architecture pipeline trained on synthetic clips) on CPU.

  python -m tools.zoo.build_svd --config configs/toy/pretrain_svd.yaml            # the zoo's toy-svd (resumable)
  python -m tools.zoo.build_svd --config configs/toy/pretrain_svd.yaml --dry-run  # print the resolved config
  python -m tools.zoo.build_svd --config configs/toy/pretrain_svd.yaml vae.steps=100 unet.steps=100 \\
      work_dir=/tmp/toy output=/tmp/toy/toy-svd                                 # a quick smoke build

Stages: synthetic mp4 clips -> AutoencoderKLTemporalDecoder -> frozen CLIP image encoder ->
UNetSpatioTemporalConditionModel (SVD EDM objective via SVDFamily) -> diffusers folder + reference
render + MODEL_CARD.md. Re-running the same command resumes from the last checkpoint of the
unfinished stage. Overrides are dotted `section.key=value` pairs (values parsed as YAML).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs" / "toy" / "pretrain_svd.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML recipe (default: configs/toy/pretrain_svd.yaml)")
    p.add_argument("--dry-run", action="store_true", help="validate, print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs still go to work_dir)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. unet.steps=500 threads=1")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tdd_video.errors import ConfigError
    from tools.zoo.config import load_pretrain_config
    try:
        cfg = load_pretrain_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        import yaml
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip("\n"))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(ROOT)                                   # relative paths in the recipe are repo-relative
    from tools.zoo.pretrain import run
    try:
        cfg_path = os.path.relpath(args.config, ROOT) if Path(args.config).is_absolute() else args.config
    except ValueError:
        cfg_path = args.config
    command = " ".join(["python -m tools.zoo.build_svd", "--config", shlex.quote(cfg_path)]
                       + [shlex.quote(o) for o in args.overrides])
    summary = run(cfg, progress=not args.no_progress, command=command)
    print(f"done: {summary['output']} ({summary['size_mb']} MB); VAE held-out PSNR "
          f"{summary['vae']['heldout_psnr_db']} dB; UNet final loss {summary['unet']['final_loss_smooth']:.4f}; "
          f"reference sha256 {summary['reference']['sha256_uint8_frames'][:16]}…")
    return 0


if __name__ == "__main__":
    sys.exit(main())
