"""What the two render commands share: ``infer/img2vid.py`` (SVD) and ``infer/txt2img.py`` (SDXL).

* ``RenderSettings``: the settings fields both renders have (model, LoRA, sampler knobs, x0 clipping,
  Distillation++, size, seed, device) and their checks; ``Img2VidSettings`` and ``Txt2ImgSettings``
  (tdd_video.sampling.img2vid / .txt2img) extend it.
* the command-line side: ``clip_arg`` (the --clip-x0 parser), ``SHARED_FLAGS`` / ``add_shared_flags``
  (flags with the same meaning and help text in both CLIs), ``clip_from_args`` and ``run_render``
  (render, or print a ConfigError and exit with status 2).

Light on purpose: importing it pulls in neither torch nor diffusers, so ``--help`` stays instant;
the sampling classes are imported when a setting is built.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tdd_video.errors import ConfigError, check_range

if TYPE_CHECKING:
    from tdd_video.sampling.sample import ClipSettings


def _no_clip():
    """The default x0 clipping: none (a ClipSettings, imported only when a setting is built)."""
    from tdd_video.sampling.sample import ClipSettings
    return ClipSettings()


@dataclass
class RenderSettings:
    """Knobs every few-step render has. None = the model's default (size) or no LoRA / no refinement."""

    model: str | None = None
    lora: str | None = None
    lora_scale: float = 1.0
    fuse: bool = False
    steps: int = 4
    eta: float = 0.3                      # γ-sampling η: re-noise fraction per step (SPEC §5)
    schedule: str = "equidistant"         # equidistant | tdd-nonuniform
    guidance: float = 1.0                 # CFG on the student; 1 = one UNet pass per step
    clip: ClipSettings = field(default_factory=_no_clip)
    teacher_refine: float | None = None   # Distillation++ λ (SPEC §7)
    refine_steps: int = 1
    height: int | None = None
    width: int | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "fp32"
    progress: bool = True

    def check_shared(self) -> None:
        """ConfigError naming the flag and its allowed range for a bad shared value (before any model loads)."""
        check_range("steps", self.steps, 1, 250)
        check_range("eta", self.eta, 0.0, 1.0, hi_open=True)
        check_range("guidance", self.guidance, 0.0, None)
        check_range("lora_scale", self.lora_scale, 0.0, None)
        check_range("refine_steps", self.refine_steps, 0, None)
        if self.teacher_refine is not None:
            check_range("teacher_refine", self.teacher_refine, 0.0, 1.0)
            if self.fuse:
                raise ConfigError("teacher_refine", "cannot refine with a fused LoRA: the teacher is the base with "
                                                    "the adapter disabled; drop --fuse")
        if self.device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                raise ConfigError("device", f"got {self.device!r} but CUDA is not available here; use --device cpu")

    def refine_settings(self, guidance=None):
        """Distillation++ settings for the sampler, or None when no step is refined."""
        if self.teacher_refine is None or self.refine_steps <= 0:
            return None
        from tdd_video.sampling.refine import RefineSettings
        return RefineSettings(strength=self.teacher_refine, steps=self.refine_steps, guidance=guidance)


# ----------------------------------------------------------------------------- command line
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
    clip = args.clip_x0 or _no_clip()
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
