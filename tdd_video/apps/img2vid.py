"""Image-to-video rendering with a TDD student: what ``python infer/img2vid.py`` runs.

The sampler is TDD's (docs/math.md §5–7) or, with ``sampler="animatelcm"``, AnimateLCM's multistep sampler
(docs/math.md §8) — e.g. for the released AnimateLCM-SVD-xt-1.1 UNet given as ``unet=`` (loaded strictly
into the base's UNet; no LoRA is applied on top of it unless one is named).

Stages (each timed): load model (+ LoRA), prepare image, encode conditioning, denoise (the family
sampling loop, docs/math.md §5–7), decode, write. Same settings and seed → identical frames: every random
draw (noise augmentation of the conditioning frame, starting noise, γ-sampling and Distillation++
noise) comes from one torch.Generator seeded with `seed`, in that order — the same order the
diffusers pipeline uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tdd_video.apps.api import (
    TINY_NOTE,
    ZOO_NOTE,
    check_sampler,
    default_lora,
    export_pipeline,
    img2vid_model,
    load_img2vid,
    parse_dtype,
)
from tdd_video.apps.settings import RenderSettings, StageTimer
from tdd_video.data.image_io import fit_image, image_to_tensor, load_image, round_size
from tdd_video.data.video_io import write_video
from tdd_video.errors import ConfigError, check_range
from tdd_video.families.svd import SVDFamily
from tdd_video.sampling import SamplingStats, make_sampler, sample
from tdd_video.sampling.animatelcm import ANIMATELCM_NUM_GRID
from tdd_video.unet_checkpoint import CheckpointError, resolve_checkpoint_file

VIDEO_OUT = (".mp4", ".gif")


@dataclass
class Img2VidSettings(RenderSettings):
    """All knobs of one render (the shared ones: RenderSettings). None means 'the model's default' (frames, size)."""

    image: str | None = None
    unet: str | None = None           # full UNet state dict (e.g. AnimateLCM-SVD-xt-1.1.safetensors) for the base
    sampler: str = "tdd"              # tdd | animatelcm (docs/math.md §8 multistep; eta/schedule/clip do not apply)
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
        """Every bad value → ConfigError naming the flag and the allowed range (before any model loads)."""
        self.check_shared()
        check_sampler(self.sampler)
        if self.sampler == "animatelcm":
            check_range("steps", self.steps, 1, ANIMATELCM_NUM_GRID)
            if self.schedule != "equidistant":
                raise ConfigError("schedule", "the AnimateLCM sampler has its own grid (docs/math.md §8); "
                                              "--schedule applies to the TDD sampler")
            if self.clip.mode != "none":
                raise ConfigError("clip", "x0 clipping is part of the TDD sampler; "
                                          "drop --clip-x0 with --sampler animatelcm")
        if self.unet is not None:                   # a missing / unusable file fails before the model loads
            try:
                resolve_checkpoint_file(self.unet)
            except CheckpointError as e:
                raise ConfigError("unet", str(e)) from None
        if self.unet is not None and self.teacher_refine is not None:
            raise ConfigError("teacher_refine", "Distillation++ uses the base UNet with the LoRA disabled as the "
                                                "teacher; with --unet the base UNet is replaced, "
                                                "so there is no teacher")
        check_range("fps", self.fps, 1, None)
        check_range("motion_bucket", self.motion_bucket, 0, 1023)
        check_range("noise_aug", self.noise_aug, 0.0, None)
        if self.frames is not None:
            check_range("frames", self.frames, 1, None)
        if self.decode_chunk is not None:
            check_range("decode_chunk", self.decode_chunk, 1, None)
        if self.guidance_min is not None and self.guidance != 1.0:
            raise ConfigError("guidance", "use either --guidance G or --guidance-min/--guidance-max, not both")
        if (self.guidance_min is None) != (self.guidance_max is None):
            raise ConfigError("guidance_min", "give both --guidance-min and --guidance-max (frame-wise), or --guidance")
        for key in ("guidance_min", "guidance_max"):
            if getattr(self, key) is not None:
                check_range(key, getattr(self, key), 0.0, None)
        if self.teacher_refine is not None and self.lora is None and self.default_lora() is None:
            raise ConfigError("teacher_refine", "Distillation++ needs --lora: the teacher is the base model with "
                                                "the LoRA student disabled")
        if self.fuse and self.lora is None and self.default_lora() is None:
            raise ConfigError("fuse", "--fuse needs --lora")
        suffix = Path(self.out).suffix.lower()
        if suffix and suffix not in VIDEO_OUT:
            raise ConfigError("out", f"got {self.out!r}; write .mp4, .gif, or a folder (no suffix) of PNG frames")

    def default_lora(self) -> str | None:
        """The LoRA to apply: --lora, else the zoo student when no model was named — but never on top of --unet."""
        return self.lora if self.unet is not None else default_lora(self.model, self.lora)

    @property
    def guidance_value(self):
        if self.guidance_min is not None:
            return (float(self.guidance_min), float(self.guidance_max))
        return float(self.guidance)


@dataclass
class Img2VidResult:
    out: Path
    frames: torch.Tensor              # [F, 3, H, W] in [-1, 1]
    latents: torch.Tensor             # [1, F, C, h, w]
    timings: dict[str, float]
    stats: SamplingStats
    notes: list[str]
    exported: Path | None = None


def default_size(family, image) -> tuple[int, int]:
    """SVD's trained 576×1024 (portrait: 1024×576) for full-size models, else the UNet's native square size."""
    native = int(family.unet.config.sample_size) * family.vae_scale_factor
    if native >= 512:
        return (1024, 576) if image.height > image.width else (576, 1024)
    return native, native


def render_img2vid(s: Img2VidSettings, log=lambda msg: None) -> Img2VidResult:
    """Run one image-to-video render (see module docstring); `log` receives progress lines."""
    s.validate()
    dtype = parse_dtype(s.dtype)
    notes: list[str] = []
    stage = StageTimer(log)
    timings = stage.timings

    image, img_notes = load_image(s.image)                       # fail fast on a bad image, before the model
    model, is_tiny = img2vid_model(s.model)
    lora_file = s.default_lora()
    default_note = TINY_NOTE if is_tiny else ZOO_NOTE if s.model in (None, "") else None
    if default_note:
        notes.append(default_note)
        log("note: " + default_note)
    pipe = load_img2vid(model, lora=lora_file, unet=s.unet, lora_scale=s.lora_scale, fuse=s.fuse, steps=s.steps,
                        dtype=dtype, device=s.device, eta=s.eta, schedule=s.schedule, sampler=s.sampler)
    family = SVDFamily.from_pipeline(pipe, device=s.device)
    stage("load")
    height, width = default_size(family, image)
    height, width = s.height or height, s.width or width
    height, width, size_notes = round_size(height, width, family.vae_scale_factor)
    image, fit_notes = fit_image(image, height, width)
    for n in img_notes + size_notes + fit_notes:
        notes.append(n)
        log("note: " + n)
    frames = s.frames or family.num_frames
    generator = torch.Generator(s.device).manual_seed(s.seed)
    stage("image")
    cond = family.encode_conditioning({"first_frame": image_to_tensor(image).to(s.device)}, generator=generator,
                                      train=False, noise_aug=s.noise_aug, fps_id=s.fps - 1,
                                      motion_bucket_id=s.motion_bucket)
    stage("conditioning")
    refine = s.refine_settings()
    sched = make_sampler(family, s.sampler, eta=s.eta, schedule=s.schedule, clip=s.clip)
    stats = SamplingStats()
    latents = sample(family, cond, steps=s.steps, guidance=s.guidance_value, refine=refine, generator=generator,
                     shape=family.latent_shape(1, frames, height, width), progress=s.progress, stats=stats,
                     scheduler=sched)
    stage("denoise")
    video = family.decode_latents(latents, s.decode_chunk)[0].float().clamp(-1, 1).cpu()
    stage("decode")
    out = Path(s.out)
    if not out.parent.exists():
        notes.append(f"created output folder {str(out.parent)!r}")
        log("note: " + notes[-1])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(video, out, fps=s.fps)
    stage("write")
    exported = None
    if s.export_pipeline:
        exported = export_pipeline(pipe, s.export_pipeline)
        stage("export")
    log(f"wrote {out} ({frames} frames, {height}x{width}, {s.steps} steps, {stats.unet_passes} UNet passes, "
        f"{sum(timings.values()):.2f} s total)")
    if exported:
        log(f"exported pipeline to {exported}")
    return Img2VidResult(out=out, frames=video, latents=latents, timings=timings, stats=stats, notes=notes,
                         exported=exported)
