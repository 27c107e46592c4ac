"""TDD distillation of Stable Video Diffusion (and any family the recipe names).

  python train/distill_svd.py                                   # laptop: tiny SVD, synthetic clips, CPU
  python train/distill_svd.py --config configs/toy/tdd_svd_tiny.yaml train.max_steps=20
  deepspeed --num_gpus 8 train/distill_svd.py --config configs/svd/tdd_svd_xt_1_1.yaml
  accelerate launch --config_file configs/accelerate/ddp_2proc_cpu.yaml train/distill_svd.py --config ...
  python train/distill_svd.py --config RECIPE.yaml --dry-run    # print the resolved config and exit

Overrides are dotted `section.key=value` pairs after the options (values parsed as YAML).

Exit status: 0 done (or already finished), 2 bad config / flag / data, 3 stopped by non-finite losses or
gradients (no checkpoint from that state), 75 preempted by a signal (SIGTERM, or train.preempt_signals):
the checkpoint of the current step was written, continue with --resume auto.
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
               if default_config is not None else "required")
    p.add_argument("--config", default=None, help=f"YAML recipe (default: {default})")
    p.add_argument("--dry-run", action="store_true", help="validate, print the resolved config and exit")
    p.add_argument("--resume", default=None, help="'auto' (latest checkpoint in run.output_dir) or a checkpoint folder")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a run.output_dir that already holds a run (deletes its checkpoints, metrics "
                        "and export); without it such a directory is refused unless --resume is given")
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
    if args.config is None and default_config is None:
        print("error: --config: required (a recipe, e.g. configs/toy/tdd_svd_tiny.yaml)", file=sys.stderr)
        return 2
    overrides = list(args.overrides) + ([f"run.resume={args.resume}"] if args.resume else []) \
        + (["run.overwrite=true"] if args.overwrite else [])
    try:
        cfg = load_config(args.config or default_config, overrides)
    except ConfigError as e:
        print(f"error: {_flag_message(e)}", file=sys.stderr)
        return 2
    from tdd_video.engine.config import check_runnable
    if args.dry_run:
        print(cfg.to_yaml().rstrip("\n"))
        try:
            check_runnable(cfg)
        except ConfigError as e:
            print(f"warning: this recipe cannot run here as it is: {e}", file=sys.stderr)
        return 0
    try:
        check_runnable(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tdd_video.data.dataset import DataFailureError
    from tdd_video.engine.checkpoint import CheckpointError
    from tdd_video.engine.preempt import PREEMPTED_EXIT_CODE, Preempted
    from tdd_video.engine.trainer import NonFiniteLoss, train
    try:
        result = train(cfg)
    except (ConfigError, DataFailureError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    if result["rank"] == 0:
        for note in result.get("notes", []):
            print(f"note: {note}")
        if result.get("already_finished"):
            print(f"already finished at step {result['step']} (checkpoint {result['checkpoint']}); nothing to do — "
                  "raise train.max_steps to train further")
            return 0
        print(f"done: {result['steps']} steps on {result['backend']} x{result['world_size']}, "
              f"loss {result['loss_first_10pct']:.4g} (mean of the first 10% of steps) -> "
              f"{result['loss_last_10pct']:.4g} (last 10%), {result['trainable_params']:,} trainable params"
              + (f", {result['nonfinite_steps']} non-finite steps skipped" if result["nonfinite_steps"] else ""))
        print(f"run dir: {result['run_dir']}  checkpoint: {result['checkpoint']}")
        for k, v in result["export"].items():
            print(f"export {k}: {v}")
    return 0


def _flag_message(e) -> str:
    """A ConfigError as an error line; keys that are command-line flags are named as flags."""
    if e.key.startswith("--"):
        return f"{e.key}: {str(e).split(': ', 1)[-1]}"
    return str(e)

