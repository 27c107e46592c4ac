"""Export a trained toy teacher as a diffusers StableVideoDiffusionPipeline folder + its reference render.

``reference.json`` in the folder records the fixed-seed render (image, seed, steps, guidance,
fps, motion bucket, noise augmentation, size) and the SHA-256 of its uint8 frames;
``samples/reference_frames.png`` holds those frames side by side at 1× (lossless, what the test
compares against) and ``samples/reference_strip.png`` the same at 4× for people. ``render_reference``
is the one function both the build and the test call, through the public diffusers pipeline.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

import tdd_video

PACKAGE_DIR = Path(tdd_video.__file__).resolve().parent     # the installed package (assets, zoo)


def frames_sha256(frames: np.ndarray) -> str:
    """SHA-256 of uint8 frames [F, H, W, 3] (C order)."""
    return hashlib.sha256(np.ascontiguousarray(frames, dtype=np.uint8).tobytes()).hexdigest()


def frame_strip(frames: np.ndarray, scale: int = 1) -> np.ndarray:
    """uint8 [F, H, W, 3] -> one image [H·scale, F·W·scale, 3] (nearest-neighbour upscaling)."""
    strip = np.concatenate(list(frames), axis=1)
    return strip.repeat(scale, 0).repeat(scale, 1) if scale > 1 else strip


def save_png(image: np.ndarray, path: Path) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def resolve_image(spec: str) -> Path:
    """'package:<path inside tdd_video/>' or a plain path."""
    return PACKAGE_DIR / spec.split(":", 1)[1] if spec.startswith("package:") else Path(spec)


def render_frames(pipe, image, settings: dict) -> np.ndarray:
    """Run a StableVideoDiffusionPipeline with `settings` (reference.json keys); uint8 [F, H, W, 3]."""
    gen = torch.Generator().manual_seed(int(settings["seed"]))
    out = pipe(image, height=settings["height"], width=settings["width"], num_frames=settings["num_frames"],
               num_inference_steps=settings["num_inference_steps"],
               min_guidance_scale=settings["min_guidance_scale"], max_guidance_scale=settings["max_guidance_scale"],
               fps=settings["fps"], motion_bucket_id=settings["motion_bucket_id"],
               noise_aug_strength=settings["noise_aug_strength"], decode_chunk_size=settings["num_frames"],
               generator=gen, output_type="np").frames[0]
    return np.clip(np.round(np.asarray(out) * 255.0), 0, 255).astype(np.uint8)


def render_reference(folder: str | Path) -> tuple[np.ndarray, dict]:
    """Load `folder` with StableVideoDiffusionPipeline.from_pretrained (offline) and render its reference."""
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image
    folder = Path(folder)
    settings = json.loads((folder / "reference.json").read_text())
    pipe = StableVideoDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(resolve_image(settings["image"])).convert("RGB")
    return render_frames(pipe, image, settings), settings


def save_pipeline(folder: Path, vae, image_encoder, unet, feature_extractor, scheduler_config: dict) -> Path:
    """Write the complete diffusers folder
    (model_index.json + unet/ vae/ image_encoder/ feature_extractor/ scheduler/)."""
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet,
                                        scheduler=EulerDiscreteScheduler.from_config(scheduler_config),
                                        feature_extractor=feature_extractor)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def write_reference(folder: Path, render_cfg, data_cfg, image_spec: str) -> dict:
    """Render the reference from the saved folder, store frames/strip/reference.json; returns settings."""
    settings = {"image": image_spec, "seed": render_cfg.seed, "height": data_cfg.height, "width": data_cfg.width,
                "num_frames": data_cfg.num_frames, "num_inference_steps": render_cfg.num_inference_steps,
                "min_guidance_scale": render_cfg.min_guidance_scale,
                "max_guidance_scale": render_cfg.max_guidance_scale, "fps": render_cfg.fps,
                "motion_bucket_id": render_cfg.motion_bucket_id, "noise_aug_strength": render_cfg.noise_aug_strength,
                "scheduler": "EulerDiscreteScheduler (karras sigmas, the folder's scheduler/)"}
    (folder / "reference.json").write_text(json.dumps(settings, indent=1))
    frames, _ = render_reference(folder)
    settings["sha256_uint8_frames"] = frames_sha256(frames)
    settings["mean_pixel"] = round(float(frames.mean()), 3)
    settings["torch_threads"] = torch.get_num_threads()
    (folder / "reference.json").write_text(json.dumps(settings, indent=1))
    save_png(frame_strip(frames), folder / "samples" / "reference_frames.png")
    save_png(frame_strip(frames, 4), folder / "samples" / "reference_strip.png")
    return settings


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
