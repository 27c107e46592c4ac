"""The settings of the two renders: image-to-video (apps.img2vid, SVD) and text-to-image (apps.txt2img, SDXL).

* ``RenderSettings``: the settings fields both renders have (model, LoRA, sampler knobs, x0 clipping,
  Distillation++, size, seed, device) and their checks; ``Img2VidSettings`` and ``Txt2ImgSettings``
  extend it (re-exported by apps.img2vid / apps.txt2img);
* the input / output checks they use: ``check_model_name``, ``check_weights``, ``check_lora_file``,
  ``check_output`` (can the output be written? — before any model loads);
* ``StageTimer``: wall time per named stage of a render.

Light on purpose: importing it, building a setting with an explicit ``clip`` and ``validate()`` pull in
neither torch nor diffusers, so the CLIs' ``--help`` and every refused flag value stay instant (the one
exception: ``--sampler animatelcm`` looks up its grid size in tdd_video.core). The default ``clip`` is a
ClipSettings (tdd_video.sampling, imported when such a setting is built); ``clip=None`` means no clipping.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tdd_video import zoo
from tdd_video.core.params import DEFAULT_ETA
from tdd_video.errors import ConfigError, check_range

if TYPE_CHECKING:
    from tdd_video.sampling.sample import ClipSettings

VIDEO_OUT = (".mp4", ".gif")
SAMPLERS = ("tdd", "animatelcm", "euler")   # the img2vid render / pipeline samplers (euler: the teacher's)
LORA_FILE = "pytorch_lora_weights.safetensors"
TXT2IMG_ZOO = "toy-sdxl"              # the text-to-image default model when the zoo has it


def _no_clip():
    """The default x0 clipping: none (a ClipSettings, imported only when a setting is built)."""
    from tdd_video.sampling.sample import ClipSettings
    return ClipSettings()


def clip_mode(clip) -> str:
    """The x0-clipping mode of a setting's `clip` (None: 'none')."""
    return "none" if clip is None else clip.mode


def check_decoder_spec(spec: str) -> None:
    """ConfigError on 'vae_decoder' unless `spec` is a diffusers model folder (config.json) or looks like a hub
    id ("owner/name"); its class and latent space are checked when it loads (families/decoders.py)."""
    p = Path(spec)
    if p.exists():
        if not (p / "config.json").is_file():
            raise ConfigError("vae_decoder", f"{spec!r} is not a diffusers model folder (no config.json); pass e.g. "
                                             f"a download of madebyollin/taesd")
    elif not zoo.is_hub_id(spec):
        raise ConfigError("vae_decoder", f"no such folder {spec!r} (and it is not a hub id such as madebyollin/taesd)")


def check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ConfigError("sampler", f"got {sampler!r}, allowed values are {', '.join(SAMPLERS)}")


def default_lora(model, lora, steps: int | None = None):
    """The LoRA to apply: the caller's, or — when no model was named — the zoo's shipped TDD student made for
    `steps` sampling steps (zoo.STEP_STUDENTS; the default student if that one is not installed)."""
    if lora is not None or model not in (None, ""):
        return lora
    path = zoo.default_student_lora(student=zoo.student_for_steps(steps)) or zoo.default_student_lora()
    return None if path is None or not zoo.is_zoo_name(zoo.DEFAULT_SVD) else str(path)


def check_finite(key: str, value) -> None:
    """ConfigError unless `value` (when given) is a finite number (rejects nan / inf)."""
    if value is not None and not math.isfinite(value):
        raise ConfigError(key, f"got {value!r}, must be a finite number")


def check_model_name(model, tiny_seeds: bool = True) -> None:
    """ConfigError('model') unless `model` is None / 'tiny' (/ 'tiny:SEED' if `tiny_seeds`), a zoo name, an
    existing folder or a plausible hub id (owner/name): "folder ... does not exist" or "not found" with the
    zoo's models (no hub look-up)."""
    if model in (None, "") or model == "tiny" or (tiny_seeds and str(model).startswith("tiny:")):
        return
    path = zoo.resolve_model(model, allow_hub=True)
    if isinstance(path, Path) and not path.is_dir():
        raise ConfigError("model", f"{str(path)!r} is a file; expected a diffusers pipeline folder, a zoo name "
                                   f"({zoo.zoo_listing()}) or a hub id")


def check_weights(key: str, path, what: str) -> None:
    """ConfigError(key) unless `path` is a readable weights file (or diffusers UNet folder): exists, and its
    .safetensors header / torch.save header parses — read without torch, no tensor data."""
    from tdd_video.unet_checkpoint import CheckpointError, check_weights_file, resolve_checkpoint_file
    try:
        check_weights_file(resolve_checkpoint_file(path), what)
    except CheckpointError as e:
        raise ConfigError(key, str(e)) from None


def check_lora_file(key: str, path) -> None:
    """ConfigError(key) unless `path` is a readable LoRA .safetensors file (or a folder holding
    pytorch_lora_weights.safetensors)."""
    p = Path(path)
    if p.is_dir():
        if not (p / LORA_FILE).is_file():
            raise ConfigError(key, f"folder {p} has no {LORA_FILE}")
        p = p / LORA_FILE
    if not p.is_file():
        raise ConfigError(key, f"file not found: {p}")
    from tdd_video.unet_checkpoint import CheckpointError, check_weights_file
    try:
        if p.suffix.lower() != ".safetensors":
            raise CheckpointError(f"{p} is not a .safetensors file (LoRA files are .safetensors)")
        check_weights_file(p, "LoRA file")
    except CheckpointError as e:
        raise ConfigError(key, str(e)) from None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(key: str, path, folder: bool) -> None:
    """ConfigError(key) unless `path` can be written (nothing is created): a file (folder=False), or a folder
    that is or can be created to hold files. Probes with a temporary file in the nearest existing folder, so a
    read-only or virtual file system (/proc), a parent that is a file, or a missing permission is refused
    before any model loads."""
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise ConfigError(key, f"{p} is a file; this output is a folder (of PNG files)")
    if not folder and p.is_dir():
        raise ConfigError(key, f"{p} is a folder; pass a file name (or a path that does not exist yet)")
    if not folder and p.is_file():
        try:
            with open(p, "ab"):
                return
        except OSError as e:
            raise ConfigError(key, f"cannot write {p}: {e.strerror or e}") from None
    base = _nearest_existing(p if folder else p.parent)
    if not base.is_dir():
        raise ConfigError(key, f"cannot create {p}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tdd-video-write-test-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = "" if base in (p, p.parent) else f" (to create {p})"
        raise ConfigError(key, f"cannot create files in folder {base}{where} ({e.strerror or e})") from None


def vae_factor(model) -> int | None:
    """The VAE downsampling factor of a zoo / local diffusers folder, read from vae/config.json without loading
    anything; None when unknown (tiny models, hub ids, no such file)."""
    import json
    if model in (None, "") or str(model).startswith("tiny"):
        return None
    try:
        folder = zoo.resolve_model(model, allow_hub=True)
        if not isinstance(folder, Path):
            return None
        config = json.loads((folder / "vae" / "config.json").read_text())
        return 2 ** (len(config["block_out_channels"]) - 1)
    except (ConfigError, OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class RenderSettings:
    """Knobs every few-step render has. None = the model's default (size) or no LoRA / no refinement."""

    model: str | None = None
    lora: str | None = None
    lora_scale: float | None = None       # None: 1, or the zoo default render's strength for --steps
    fuse: bool = False
    steps: int = 4
    eta: float = DEFAULT_ETA                      # γ-sampling η: re-noise fraction per step (docs/math.md §5)
    schedule: str = "equidistant"         # equidistant | tdd-nonuniform
    guidance: float = 1.0                 # CFG on the student; 1 = one UNet pass per step
    clip: ClipSettings | None = field(default_factory=_no_clip)   # None: no x0 clipping
    teacher_refine: float | None = None   # Distillation++ λ (docs/math.md §7)
    refine_steps: int = 1
    height: int | None = None
    width: int | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "fp32"
    progress: bool = True
    vae_decoder: str | None = None        # a lighter decoder for the same latents (families/decoders.py)

    def resolved_lora_scale(self) -> float:
        """The LoRA strength to apply: --lora-scale, else 1."""
        return 1.0 if self.lora_scale is None else float(self.lora_scale)

    def check_shared(self) -> None:
        """ConfigError naming the flag and its allowed range for a bad shared value (before any model loads)."""
        for key in ("eta", "guidance", "lora_scale", "teacher_refine"):
            check_finite(key, getattr(self, key))
        check_range("steps", self.steps, 1, 250)
        check_range("seed", self.seed, 0, 2 ** 64 - 1)
        check_range("eta", self.eta, 0.0, 1.0, hi_open=True)
        check_range("guidance", self.guidance, 0.0, None)
        if self.lora_scale is not None:
            check_range("lora_scale", self.lora_scale, 0.0, None)
        check_range("refine_steps", self.refine_steps, 0, None)
        if self.teacher_refine is not None:
            check_range("teacher_refine", self.teacher_refine, 0.0, 1.0)
            if self.fuse:
                raise ConfigError("teacher_refine", "cannot refine with a fused LoRA: the teacher is the base with "
                                                    "the adapter disabled; drop --fuse")
        if self.vae_decoder is not None:
            check_decoder_spec(self.vae_decoder)
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


class StageTimer:
    """Wall time per named stage of a render: call ``timer(name)`` when a stage ends; the time since the
    previous call is stored in ``timer.timings[name]`` and reported through ``log``."""

    def __init__(self, log=lambda msg: None):
        self._now, self._log = time.perf_counter, log
        self.timings: dict[str, float] = {}
        self._clock = self._now()

    def __call__(self, name: str) -> None:
        now = self._now()
        self.timings[name] = now - self._clock
        self._clock = now
        self._log(f"[{name}] {self.timings[name]:.2f} s")


@dataclass
class Img2VidSettings(RenderSettings):
    """All knobs of one image-to-video render (the shared ones: RenderSettings). None means 'the model's
    default' (frames, size)."""

    image: str | None = None
    unet: str | None = None           # full UNet state dict (e.g. AnimateLCM-SVD-xt-1.1.safetensors) for the base
    sampler: str = "tdd"              # tdd | animatelcm (§8 multistep) | euler (the teacher's Karras Euler, e.g.
                                      # `--sampler euler --steps 25 --guidance-min 1 --guidance-max 3`)
    guidance_min: float | None = None
    guidance_max: float | None = None
    frames: int | None = None
    fps: int = 7
    motion_bucket: int = 127
    noise_aug: float = 0.02
    decode_chunk: int | None = None
    out: str = "outputs/img2vid.mp4"
    export_pipeline: str | None = None

    def validate(self) -> None:
        """Every bad value → ConfigError naming the setting and the allowed range, before any model loads and
        without importing torch: numbers, the image (readable), the model name, the LoRA / UNet files (their
        headers), the output path (writable)."""
        self.check_shared()
        check_sampler(self.sampler)
        if self.sampler != "tdd":
            if self.schedule != "equidistant":
                raise ConfigError("schedule", f"the {self.sampler} sampler has its own grid; "
                                              "--schedule applies to the TDD sampler")
            if clip_mode(self.clip) != "none":
                raise ConfigError("clip", f"x0 clipping is part of the TDD sampler; "
                                          f"drop --clip-x0 with --sampler {self.sampler}")
        if self.unet is not None and self.teacher_refine is not None:
            raise ConfigError("teacher_refine", "Distillation++ uses the base UNet with the LoRA disabled as the "
                                                "teacher; with --unet the base UNet is replaced, "
                                                "so there is no teacher")
        check_range("fps", self.fps, 1, None)
        check_range("motion_bucket", self.motion_bucket, 0, 1023)
        check_finite("noise_aug", self.noise_aug)
        check_range("noise_aug", self.noise_aug, 0.0, None)
        for key in ("frames", "decode_chunk"):
            if getattr(self, key) is not None:
                check_range(key, getattr(self, key), 1, None)
        for key in ("height", "width"):
            if getattr(self, key) is not None:
                check_range(key, getattr(self, key), 1, 16384)
        if self.guidance_min is not None and self.guidance != 1.0:
            raise ConfigError("guidance", "use either --guidance G or --guidance-min/--guidance-max, not both")
        if (self.guidance_min is None) != (self.guidance_max is None):
            raise ConfigError("guidance_min", "give both --guidance-min and --guidance-max (frame-wise), or --guidance")
        for key in ("guidance_min", "guidance_max"):
            if getattr(self, key) is not None:
                check_finite(key, getattr(self, key))
                check_range(key, getattr(self, key), 0.0, None)
        if self.teacher_refine is not None and self.lora is None and self.default_lora() is None:
            raise ConfigError("teacher_refine", "Distillation++ needs --lora: the teacher is the base model with "
                                                "the LoRA student disabled")
        if self.fuse and self.lora is None and self.default_lora() is None:
            raise ConfigError("fuse", "--fuse needs --lora")
        suffix = Path(self.out).suffix.lower()
        if suffix and suffix not in VIDEO_OUT:
            raise ConfigError("out", f"got {self.out!r}; write .mp4, .gif, or a folder (no suffix) of PNG frames")
        from tdd_video.data.image_io import load_image
        load_image(self.image)                      # missing / unreadable image
        check_model_name(self.model, tiny_seeds=False)
        if self.lora is not None:
            check_lora_file("lora", self.lora)
        if self.unet is not None:                   # a missing / unreadable file fails before the model loads
            check_weights("unet", self.unet, "UNet checkpoint")
        check_output("out", self.out, folder=not suffix)
        if self.export_pipeline:
            check_output("export_pipeline", self.export_pipeline, folder=True)
        if self.sampler == "animatelcm":
            from tdd_video.core import ANIMATELCM_NUM_GRID
            check_range("steps", self.steps, 1, ANIMATELCM_NUM_GRID)

    def default_lora(self) -> str | None:
        """The LoRA to apply: --lora, else the zoo student when no model was named — but never on top of --unet."""
        return self.lora if self.unet is not None else default_lora(self.model, self.lora, self.steps)

    def resolved_lora_scale(self) -> float:
        """--lora-scale, else the strength the zoo measured best for --steps when the default render applies the
        zoo student made for that step count (zoo.STEP_STUDENTS), else 1."""
        lora = self.default_lora() if self.lora_scale is None and self.lora is None and self.unet is None else None
        if lora is not None and Path(lora).parent.name == zoo.student_for_steps(self.steps):
            return zoo.strength_for_steps(self.steps)
        return super().resolved_lora_scale()

    @property
    def guidance_value(self):
        if self.guidance_min is not None:
            return (float(self.guidance_min), float(self.guidance_max))
        return float(self.guidance)


@dataclass
class Txt2ImgSettings(RenderSettings):
    """All knobs of one text-to-image render (the shared ones: RenderSettings). None = the model's default
    (size) or 'none' (negative prompt); lora None = the zoo student when the model is the default, "none" = no
    LoRA."""

    prompts: list = field(default_factory=lambda: ["a red circle above a blue square"])
    negative_prompt: str | None = None
    refine_guidance: float | None = None
    batch: int = 1                        # images per prompt
    out: str = "outputs/txt2img.png"

    def validate(self) -> None:
        """Every bad value → ConfigError naming the setting and the allowed range (before any model loads, without
        importing torch): numbers, prompts, the model name, the LoRA file (its header), the output path."""
        self.check_shared()
        if not self.prompts or any(not isinstance(p, str) or not p.strip() for p in self.prompts):
            raise ConfigError("prompt", f"need at least one non-empty prompt, got {self.prompts!r}")
        check_range("batch", self.batch, 1, 1024)
        check_finite("refine_guidance", self.refine_guidance)
        if self.refine_guidance is not None:
            check_range("refine_guidance", self.refine_guidance, 0.0, None)
        for key in ("height", "width"):
            if getattr(self, key) is not None:
                check_range(key, getattr(self, key), 8, 8192)
        if self.fuse and self.lora == "none":
            raise ConfigError("fuse", "--fuse needs a LoRA")
        suffix = Path(self.out).suffix
        if suffix and suffix.lower() != ".png":
            raise ConfigError("out", f"got {self.out!r}; write a .png (one image or a grid) or a folder of PNGs")
        check_model_name(self.model)
        factor = vae_factor(self.model if self.model not in (None, "") else TXT2IMG_ZOO)
        if factor and any(v is not None and v % factor for v in (self.height, self.width)):
            raise ConfigError("height" if self.height and self.height % factor else "width",
                              f"height and width must be multiples of the VAE factor {factor}, "
                              f"got {self.height}x{self.width}")
        if self.lora not in (None, "none"):
            check_lora_file("lora", self.lora)
        check_output("out", self.out, folder=not suffix)
