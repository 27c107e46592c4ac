"""What the two renders share: image-to-video (apps.img2vid, SVD) and text-to-image (apps.txt2img, SDXL).

* ``RenderSettings``: the settings fields both renders have (model, LoRA, sampler knobs, x0 clipping,
  Distillation++, size, seed, device) and their checks; ``Img2VidSettings`` and ``Txt2ImgSettings``
  extend it.
* ``StageTimer``: wall time per named stage of a render.

Light on purpose: importing it pulls in neither torch nor diffusers, so the CLIs' ``--help`` stays
instant; the sampling classes are imported when a setting is built.
"""
from __future__ import annotations

import time
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
    eta: float = 0.3                      # γ-sampling η: re-noise fraction per step (docs/math.md §5)
    schedule: str = "equidistant"         # equidistant | tdd-nonuniform
    guidance: float = 1.0                 # CFG on the student; 1 = one UNet pass per step
    clip: ClipSettings = field(default_factory=_no_clip)
    teacher_refine: float | None = None   # Distillation++ λ (docs/math.md §7)
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
