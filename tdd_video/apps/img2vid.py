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

from tdd_video.apps.api import TINY_NOTE, ZOO_NOTE, export_pipeline, img2vid_model, load_img2vid, parse_dtype
from tdd_video.apps.settings import VIDEO_OUT, Img2VidSettings, StageTimer
from tdd_video.data.image_io import fit_image, image_to_tensor, limit_size, load_image, round_size
from tdd_video.data.video_io import write_video
from tdd_video.errors import ConfigError
from tdd_video.families.decoders import load_decoder
from tdd_video.families.svd import SVDFamily
from tdd_video.sampling import SamplingStats, make_sampler, sample

__all__ = ["VIDEO_OUT", "Img2VidResult", "Img2VidSettings", "default_size", "render_img2vid", "written"]


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
    """SVD's trained 576×1024 (portrait: 1024×576) for full-size models, else the UNet's native square size.
    A UNet config without ``sample_size`` (diffusers' default for a UNetSpatioTemporalConditionModel built from
    scratch) is taken as full size."""
    sample_size = family.unet.config.sample_size
    native = int(sample_size) * family.vae_scale_factor if sample_size else 1024
    if native >= 512:
        return (1024, 576) if image.height > image.width else (576, 1024)
    return native, native


def written(out: Path, frames: int) -> bool:
    """True if the output exists and is non-empty: a file, or a folder holding `frames` non-empty PNG frames."""
    if out.is_dir():
        files = [out / f"frame_{i:05d}.png" for i in range(frames)]
        return all(f.is_file() and f.stat().st_size > 0 for f in files)
    return out.is_file() and out.stat().st_size > 0


def render_img2vid(s: Img2VidSettings, log=lambda msg: None) -> Img2VidResult:
    """Run one image-to-video render (see module docstring); `log` receives progress lines.

    The CLIP image embedding is computed from the input photo itself (as StableVideoDiffusionPipeline's
    ``_encode_image`` does, which resizes it to the encoder's 224 px with antialiasing), the VAE
    conditioning latent from the frame fitted (resized, centre-cropped) to the output size: with the
    pipeline's own resize in place of the fit, the render and the stock pipeline with the TDDScheduler give
    the same video."""
    s.validate()                                                 # fail fast: values, files, output path
    dtype = parse_dtype(s.dtype)
    notes: list[str] = []
    stage = StageTimer(log)
    timings = stage.timings

    image, img_notes = load_image(s.image)
    model, is_tiny = img2vid_model(s.model)
    lora_file = s.default_lora()
    lora_scale = s.resolved_lora_scale()
    student = Path(lora_file).parent.name if lora_file else "none"
    if lora_file and lora_scale != 1.0:
        student += f" at LoRA strength {lora_scale:g}"
    default_note = TINY_NOTE if is_tiny else ZOO_NOTE.format(student=student) if s.model in (None, "") else None
    if default_note:
        notes.append(default_note)
        log("note: " + default_note)
    pipe = load_img2vid(model, lora=lora_file, unet=s.unet, lora_scale=lora_scale, fuse=s.fuse, steps=s.steps,
                        dtype=dtype, device=s.device, eta=s.eta, schedule=s.schedule, sampler=s.sampler)
    family = SVDFamily.from_pipeline(pipe, device=s.device)
    if s.vae_decoder:                                            # a lighter decoder for the same latents
        family.decoder = load_decoder(s.vae_decoder, family, dtype, s.device)
    stage("load")
    height, width = default_size(family, image)
    height, width = s.height or height, s.width or width
    height, width, size_notes = round_size(height, width, family.vae_scale_factor)
    image, huge_notes = limit_size(image)
    photo = image                                                # what CLIP embeds (the pipeline's input image)
    image, fit_notes = fit_image(image, height, width)
    for n in img_notes + huge_notes + size_notes + fit_notes:
        notes.append(n)
        log("note: " + n)
    frames = s.frames or family.num_frames
    generator = torch.Generator(s.device).manual_seed(s.seed)
    stage("image")
    cond = family.encode_conditioning({"first_frame": image_to_tensor(image).to(s.device),
                                       "embedding_image": image_to_tensor(photo).to(s.device)},
                                      generator=generator, train=False, noise_aug=s.noise_aug, fps_id=s.fps - 1,
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
    try:
        if not out.parent.exists():
            notes.append(f"created output folder {str(out.parent)!r}")
            log("note: " + notes[-1])
        out.parent.mkdir(parents=True, exist_ok=True)
        write_video(video, out, fps=s.fps)
    except (OSError, ValueError) as e:
        raise ConfigError("out", f"could not write {out}: {e}") from None
    if not written(out, frames):
        raise ConfigError("out", f"the writer left no (or an empty) {out}")
    stage("write")
    exported = None
    if s.export_pipeline:
        try:
            exported = export_pipeline(pipe, s.export_pipeline)
        except OSError as e:
            raise ConfigError("export_pipeline", f"could not write {s.export_pipeline}: {e}") from None
        stage("export")
    log(f"wrote {out} ({frames} frames, {height}x{width}, {s.steps} steps, {stats.unet_passes} UNet passes, "
        f"{sum(timings.values()):.2f} s total)")
    if exported:
        log(f"exported pipeline to {exported}")
    return Img2VidResult(out=out, frames=video, latents=latents, timings=timings, stats=stats, notes=notes,
                         exported=exported)
