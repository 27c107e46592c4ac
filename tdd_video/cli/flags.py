"""Command-line flags shared by the render CLIs (tdd-img2vid, tdd-txt2img) and how a command ends.

* ``Parser`` (argparse with one-line errors), ``clip_arg`` (the --clip-x0 parser), ``SHARED_FLAGS`` /
  ``add_shared_flags`` (flags with the same meaning and help text in both CLIs), ``clip_from_args``;
* ``flag_error`` / ``flag_name``: a ConfigError (whose key is a settings name such as ``image`` or
  ``guidance_min``) as one line naming the command-line flag: ``--image: file not found: x.png``;
* ``quiet_progress``: --no-progress also hides the libraries' progress bars (diffusers, transformers, hub);
* ``run_render``: check the settings (light: before torch / diffusers are imported), then render; a
  user mistake is printed as ONE ``error: --flag: ...`` line on stderr → exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import math
import sys
from typing import NamedTuple

from tdd_video.errors import ConfigError


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``error: --steps: invalid int value: 'x' (see --help)``, exit status 2."""

    def error(self, message: str):
        if message.startswith("argument "):
            message = message[len("argument "):]
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


class ClipSpec(NamedTuple):
    """A parsed --clip-x0 value (light: the sampling module's ClipSettings is built by clip_from_args)."""

    mode: str
    value: float | None


def clip_arg(text: str) -> ClipSpec:
    """'none' | 'static:B' | 'dynamic:B' (B: latent bound) → ClipSpec."""
    mode, _, value = text.partition(":")
    if mode not in ("none", "static", "dynamic"):
        raise argparse.ArgumentTypeError(f"mode must be none, static or dynamic, got {mode!r}")
    if mode != "none" and not value:
        raise argparse.ArgumentTypeError(f"{mode} clipping needs a bound, e.g. {mode}:2.5 (latent units)")
    try:
        bound = float(value) if value else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"bound must be a number, got {value!r}") from None
    if bound is not None and not (math.isfinite(bound) and bound > 0):
        raise argparse.ArgumentTypeError(f"bound must be a positive finite number, got {value!r}")
    return ClipSpec(mode, bound)


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
    "--vae-decoder": dict(default=None, metavar="DIR|ID",
                          help="decode with a lighter autoencoder for the same latents, e.g. madebyollin/taesd "
                               "(TAESD: frame-wise, much faster, lower fidelity); refused if made for another "
                               "latent space (default: the model's own VAE)"),
    "--no-progress": dict(action="store_true", help="hide all progress bars (the sampler's and the libraries')"),
}


def add_shared_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the SHARED_FLAGS `names` to `parser`, in that order (each CLI places them in its own --help order)."""
    for name in names:
        parser.add_argument(name, **SHARED_FLAGS[name])


def clip_from_args(args: argparse.Namespace):
    """The ClipSettings of --clip-x0 / --clip-steps, or None when clipping is off (no torch import then)."""
    spec = args.clip_x0
    if spec is None or spec.mode == "none":
        return None
    from tdd_video.sampling.sample import ClipSettings
    return ClipSettings(mode=spec.mode, value=spec.value, steps=args.clip_steps)


# settings keys whose flag is not "--" + key with "_" → "-"
KEY_FLAGS = {"clip": "--clip-x0", "prompts": "--prompt", "prompt": "--prompt"}


def flag_name(key: str, parser: argparse.ArgumentParser | None = None) -> str:
    """The command-line spelling of a settings key: 'guidance_min' → '--guidance-min', 'clip' → '--clip-x0',
    'lora.preset' → '--lora'; with `parser`, a key naming an argument's dest maps to its flag
    ('video_format' → '--format') and a positional keeps its name. Keys already spelled as flags pass."""
    if key.startswith("-"):
        return key
    base = key.split(".")[0]
    if parser is not None:
        for action in parser._actions:
            if action.dest in (key, base):
                return action.option_strings[0] if action.option_strings else action.dest
        options = parser._option_string_actions
        flag = KEY_FLAGS.get(base, "--" + base.replace("_", "-"))
        return flag if flag in options else base
    return KEY_FLAGS.get(base, "--" + base.replace("_", "-"))


def flag_error(error: ConfigError, parser: argparse.ArgumentParser | None = None) -> str:
    """One line for a ConfigError, naming the flag: ``--image: file not found: x.png`` (ConfigError's own text
    is ``config key 'image': file not found: x.png``)."""
    text = str(error)
    prefix = f"config key '{error.key}': "
    if text.startswith(prefix):
        text = text[len(prefix):]
    return f"{flag_name(error.key, parser)}: {' '.join(text.split())}"


def data_flag_error(error: ConfigError, parser: argparse.ArgumentParser, aliases: dict | None = None) -> str:
    """flag_error for tools whose flags fill a data config: 'data.num_frames' → ``--num-frames: ...`` and
    'data.path' → ``--data: ...``; a key no flag sets (it came from a --config file) keeps its config name."""
    key = error.key[len("data."):] if error.key.startswith("data.") else error.key
    flag = {"path": "--data", **(aliases or {})}.get(key) or flag_name(key, parser)
    if not flag.startswith("-"):
        return str(error)
    return flag_error(ConfigError(flag, str(error).split(": ", 1)[-1]), parser)


def quiet_progress() -> None:
    """--no-progress: no progress bars from the libraries either (diffusers, transformers, hub downloads).
    Process-wide on purpose: only a command's main() calls it."""
    import huggingface_hub.utils as hub
    hub.disable_progress_bars()
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        importlib.import_module(name).disable_progress_bar()


def _load(render):
    """A render function, or 'module:function' imported now (the heavy modules load only after the checks)."""
    if callable(render):
        return render
    module, _, name = render.partition(":")
    return getattr(importlib.import_module(module), name)


def run_render(render, settings, log=print, parser: argparse.ArgumentParser | None = None, prepare=None) -> int:
    """Validate `settings` (no torch import: every bad flag value fails within a moment), call `prepare(settings)`
    (e.g. build the sampling objects), then `render(settings, log=log)` (`render`: a function or
    'module:function'). A ConfigError — or a CheckpointError of a --unet file — is printed as ONE line
    ``error: --flag: ...`` on stderr → exit status 2; else 0."""
    from tdd_video.unet_checkpoint import CheckpointError
    try:
        settings.validate()
        if prepare is not None:
            prepare(settings)
        if not getattr(settings, "progress", True):
            quiet_progress()
        _load(render)(settings, log=log)
    except ConfigError as e:
        print(f"error: {flag_error(e, parser)}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"error: {flag_name('unet', parser)}: {e}", file=sys.stderr)
        return 2
    return 0
