"""Text-to-image rendering with a TDD student (SDXL family): what ``python infer/txt2img.py`` runs.

Stages (each timed): load model (+ LoRA), encode prompts, denoise (the family sampling loop of
tdd_video.sampling.sample, docs/math.md §5–7: CFG g on the student, γ-sampling η, equidistant or TDD
non-uniform schedule, x0 clipping, Distillation++ refinement), decode, write PNG (one image, a grid,
or a folder of PNGs). Same settings and seed → identical pixels: the starting noise, γ-sampling and
Distillation++ noise all come from one torch.Generator seeded with `seed`.

Default model: the toy zoo's ``toy-sdxl`` teacher with its shipped TDD student LoRA
(``tdd_video/zoo/toy-sdxl/students/tdd/``) when they are present; else the tiny RANDOM-weight SDXL
(a code-path demo; a note says so). Negative prompt: none → the null conditioning ∅ (zero embeddings,
exactly what the student was trained with for its unconditional branch); a text → its encoding.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from tdd_video import lora as lora_lib
from tdd_video.apps.api import parse_dtype
from tdd_video.apps.settings import LORA_FILE, TXT2IMG_ZOO, StageTimer, Txt2ImgSettings
from tdd_video.errors import ConfigError
from tdd_video.families import load_family
from tdd_video.families.base import using_module
from tdd_video.sampling import SamplingStats, make_sampler, sample
from tdd_video.zoo import is_zoo_name, resolve_model

__all__ = ["Txt2ImgResult", "Txt2ImgSettings", "image_grid", "load_txt2img_family", "render_txt2img",
           "resolve_txt2img_model", "to_uint8", "write_images"]

DEFAULT_ZOO = TXT2IMG_ZOO
STUDENT_LORA = Path("students") / "tdd" / "pytorch_lora_weights.safetensors"
TINY_NOTE = ("no toy-sdxl in the zoo: using the tiny SDXL with RANDOM weights (architecture demo only; the "
             "output is noise-like). Pass --model <diffusers folder or hub id> for real results")


@dataclass
class Txt2ImgResult:
    out: Path
    images: torch.Tensor                  # [N, 3, H, W] in [-1, 1], N = len(prompts) · batch, prompt-major
    latents: torch.Tensor
    timings: dict[str, float]
    stats: SamplingStats
    notes: list[str]
    model: str
    lora: str | None


def resolve_txt2img_model(model: str | None, lora: str | None) -> tuple[str, str | None, list[str]]:
    """(model path / hub id / 'tiny', LoRA path or None, notes) with the zoo defaults applied."""
    notes: list[str] = []
    if model in (None, ""):
        if is_zoo_name(DEFAULT_ZOO):
            model = DEFAULT_ZOO
        else:
            notes.append(TINY_NOTE)
            return "tiny", (None if lora in (None, "none") else lora), notes
    if model == "tiny" or str(model).startswith("tiny:"):
        return model, (None if lora in (None, "none") else lora), notes
    path = resolve_model(model, allow_hub=True)
    if lora is None and is_zoo_name(model):
        student = Path(path) / STUDENT_LORA
        lora = str(student) if student.is_file() else None
        if lora is None:
            notes.append(f"zoo model {model!r} has no TDD student yet: rendering the TEACHER (pass --lora)")
    if lora == "none":
        lora = None
    if lora is not None and not (Path(lora).is_file() or (Path(lora) / LORA_FILE).is_file()):
        raise ConfigError("lora", f"LoRA file not found: {lora}")
    return str(path), lora, notes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] images [N, 3, H, W] -> uint8 [N, H, W, 3] (round half to even, like diffusers' numpy output)."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(x, "n c h w -> n h w c").cpu().numpy()


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 grid image, `cols` per row (missing cells black)."""
    n, h, w, c = images.shape
    rows = -(-n // cols)
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = im
    return grid


def write_images(images: np.ndarray, out: Path, cols: int) -> list[Path]:
    """out.png → one image (N = 1) or a grid; a folder → img_000.png, img_001.png, ..."""
    from PIL import Image
    if out.suffix:
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[0] if len(images) == 1 else image_grid(images, cols)).save(out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        paths.append(out / f"img_{i:03d}.png")
        Image.fromarray(im).save(paths[-1])
    return paths


def load_txt2img_family(model: str, lora: str | None, *, lora_scale: float = 1.0, fuse: bool = False,
                        dtype: str = "fp32", device: str = "cpu"):
    """SDXLFamily from a folder / hub id / 'tiny', with a TDD LoRA injected (or fused) into its UNet."""
    family = load_family("sdxl", model, dtype=parse_dtype(dtype), device=device)
    if lora is not None:
        lora_lib.load_lora(family.unet, lora, name="student", scale=lora_scale)
        if fuse:
            lora_lib.fuse_lora(family.unet, "student", scale=1.0)
    return family


def render_txt2img(s: Txt2ImgSettings, log=lambda msg: None, family=None) -> Txt2ImgResult:
    """Run one text-to-image render (see module docstring); `log` receives progress lines."""
    s.validate()
    stage = StageTimer(log)
    timings = stage.timings

    model, lora, notes = resolve_txt2img_model(s.model, s.lora)
    for n in notes:
        log("note: " + n)
    if s.teacher_refine is not None and lora is None:
        raise ConfigError("teacher_refine", "Distillation++ needs a LoRA student: the teacher is the base model with "
                                            "the LoRA disabled")
    if family is None:
        family = load_txt2img_family(model, lora, lora_scale=s.resolved_lora_scale(), fuse=s.fuse, dtype=s.dtype,
                                     device=s.device)
    stage("load")
    f = family.vae_scale_factor
    native = int(family.unet.config.sample_size or 128) * f       # no sample_size: SDXL's 128 latents
    height, width = s.height or native, s.width or native
    if height % f or width % f:
        raise ConfigError("height", f"height and width must be multiples of the VAE factor {f}, got {height}x{width}")
    prompts = [p for p in s.prompts for _ in range(s.batch)]
    n = len(prompts)
    sizes = torch.tensor([[height, width]] * n)
    batch = {"caption": prompts, "original_size": sizes, "target_size": sizes, "crop_coords": torch.zeros(n, 2)}
    cond = family.encode_conditioning(batch, train=False)
    null = family.null_conditioning(cond)
    if s.negative_prompt:
        neg = family.encode_conditioning({**batch, "caption": [s.negative_prompt] * n}, train=False)
        null = neg
    stage("conditioning")
    refine = s.refine_settings(guidance=s.refine_guidance)
    generator = torch.Generator(s.device).manual_seed(s.seed)
    sched = make_sampler(family, "tdd", eta=s.eta, schedule=s.schedule, clip=s.clip)
    stats = SamplingStats()
    latents = sample(family, cond, null, steps=s.steps, guidance=float(s.guidance), refine=refine,
                     generator=generator, shape=family.latent_shape(n, height, width), progress=s.progress,
                     stats=stats, scheduler=sched)
    stage("denoise")
    decoder = family.decoder
    if s.vae_decoder:                          # a lighter decoder for the same latents, for this render only
        from tdd_video.families.decoders import load_decoder
        decoder = load_decoder(s.vae_decoder, family, parse_dtype(s.dtype), s.device)
    with using_module(family, "decoder", decoder):
        images = family.decode_latents(latents).float().clamp(-1, 1).cpu()
    stage("decode")
    out = Path(s.out)
    try:
        paths = write_images(to_uint8(images), out, cols=s.batch if len(s.prompts) > 1 else min(n, 8))
    except (OSError, ValueError) as e:
        raise ConfigError("out", f"could not write {out}: {e}") from None
    if not all(p.is_file() and p.stat().st_size > 0 for p in paths):
        raise ConfigError("out", f"the writer left no (or an empty) {out}")
    stage("write")
    log(f"wrote {out} ({n} image(s), {height}x{width}, {s.steps} steps, {stats.unet_passes} UNet passes, "
        f"{sum(timings.values()):.2f} s total)")
    return Txt2ImgResult(out=out, images=images, latents=latents, timings=timings, stats=stats, notes=notes,
                         model=model, lora=lora)
