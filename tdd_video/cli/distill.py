"""TDD distillation of Stable Video Diffusion (and any family the recipe names).

  python train/distill_svd.py                                   # laptop: tiny SVD, synthetic clips, CPU
  python train/distill_svd.py --config configs/toy/tdd_svd_tiny.yaml train.max_steps=20
  deepspeed --num_gpus 8 train/distill_svd.py --config configs/svd/tdd_svd_xt_1_1.yaml
  accelerate launch --config_file configs/accelerate/ddp_2proc_cpu.yaml train/distill_svd.py --config ...
  python train/distill_svd.py --config RECIPE.yaml --dry-run    # print the resolved config and exit

Overrides are dotted `section.key=value` pairs after the options (values parsed as YAML).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv=None, default_config: Path | None = None):
    p = argparse.ArgumentParser(
        description="Target-Driven Distillation (TDD) of SVD / SDXL into a few-step student. "
                    "Runs as plain python (single process), under `deepspeed` (ZeRO, see configs/deepspeed/) "
                    "or under `accelerate launch`.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    default = (f"{default_config.relative_to(default_config.parents[2])}, the toy CPU recipe"
               if default_config is not None else "the built-in defaults: tiny random SVD, synthetic clips")
    p.add_argument("--config", default=None, help=f"YAML recipe (default: {default})")
    p.add_argument("--dry-run", action="store_true", help="validate, print the resolved config and exit")
    p.add_argument("--resume", default=None, help="'auto' (latest checkpoint in run.output_dir) or a checkpoint folder")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by the deepspeed launcher")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-5 method.k_max=6")
    return p.parse_intermixed_args(argv)


def main(argv=None, default_config: Path | None = None) -> int:
    """Run the training CLI; `default_config` is the recipe used when --config is not given."""
    args = parse_args(argv, default_config)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    from tdd_video.engine.config import load_config
    from tdd_video.errors import ConfigError
    overrides = list(args.overrides) + ([f"run.resume={args.resume}"] if args.resume else [])
    try:
        cfg = load_config(args.config or default_config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(cfg.to_yaml().rstrip("\n"))
        return 0
    from tdd_video.engine.trainer import NonFiniteLoss, train
    try:
        result = train(cfg)
    except (ConfigError, NonFiniteLoss) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 3
    if result["rank"] == 0:
        losses = result["losses"]
        first, last = (losses[0], losses[-1]) if losses else (float("nan"),) * 2
        print(f"done: {result['steps']} steps on {result['backend']} x{result['world_size']}, "
              f"loss {first:.4g} -> {last:.4g}, {result['trainable_params']:,} trainable params")
        print(f"run dir: {result['run_dir']}  checkpoint: {result['checkpoint']}")
        for k, v in result["export"].items():
            print(f"export {k}: {v}")
    return 0

