"""Command-line flags shared by the render CLIs (tdd-img2vid, tdd-txt2img) and how a render ends.

* ``clip_arg`` (the --clip-x0 parser), ``SHARED_FLAGS`` / ``add_shared_flags`` (flags with the same
  meaning and help text in both CLIs), ``clip_from_args``;
* ``run_render``: render, or print a ConfigError as one ``error:`` line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from tdd_video.errors import ConfigError


def clip_arg(text: str):
    """'none' | 'static:B' | 'dynamic:B' (B: latent bound) → ClipSettings without steps."""
    from tdd_video.sampling.sample import ClipSettings
    mode, _, value = text.partition(":")
    if mode not in ("none", "static", "dynamic"):
        raise argparse.ArgumentTypeError(f"mode must be none, static or dynamic, got {mode!r}")
    if mode != "none" and not value:
        raise argparse.ArgumentTypeError(f"{mode} clipping needs a bound, e.g. {mode}:2.5 (latent units)")
    try:
        return ClipSettings(mode=mode, value=float(value) if value else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bound must be a number, got {value!r}") from None


# Flags that mean the same in both CLIs, with one help text (argparse keyword arguments).
SHARED_FLAGS: dict[str, dict] = {
    "--steps": dict(type=int, default=4, help="sampling steps K (default 4)"),
    "--guidance": dict(type=float, default=1.0,
                       help="CFG scale on the student; 1 = one UNet pass per step (default)"),
    "--clip-steps": dict(type=int, default=1, help="clip x0 during the first N steps (default 1; needs --clip-x0)"),
    "--teacher-refine": dict(type=float, default=None, metavar="LAMBDA",
                             help="Distillation++: lerp x0 toward the teacher (base with LoRA disabled) by LAMBDA, "
                                  "e.g. 0.05"),
    "--refine-steps": dict(type=int, default=1, help="refine the first k steps (default 1)"),
    "--seed": dict(type=int, default=0, help="random seed (default 0)"),
    "--device": dict(default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)"),
    "--dtype": dict(choices=["fp32", "bf16", "fp16"], default="fp32", help="model dtype (default fp32)"),
    "--no-progress": dict(action="store_true", help="hide the progress bar"),
}


def add_shared_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the SHARED_FLAGS `names` to `parser`, in that order (each CLI places them in its own --help order)."""
    for name in names:
        parser.add_argument(name, **SHARED_FLAGS[name])


def clip_from_args(args: argparse.Namespace):
    """The ClipSettings of --clip-x0 / --clip-steps (steps = 0 when clipping is off)."""
    from tdd_video.sampling.sample import ClipSettings
    clip = args.clip_x0 or ClipSettings()
    clip.steps = args.clip_steps if clip.mode != "none" else 0
    return clip


def run_render(render, settings, log=print) -> int:
    """`render(settings, log=log)`; a ConfigError is printed as ``error: ...`` to stderr → exit status 2, else 0."""
    try:
        render(settings, log=log)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
