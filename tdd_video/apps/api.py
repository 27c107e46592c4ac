"""Python API for few-step image-to-video with a TDD student (re-exported lazily by ``tdd_video``).

    import tdd_video
    pipe = tdd_video.load_img2vid("path/to/svd-folder", lora="tdd_svd_lora.safetensors")
    frames = pipe(image, num_inference_steps=4, min_guidance_scale=1.0, max_guidance_scale=1.0).frames[0]
    tdd_video.export_pipeline(pipe, "svd-tdd-4step")      # plain diffusers folder, LoRA fused

The returned object is a stock diffusers StableVideoDiffusionPipeline whose scheduler is the
TDDScheduler. Pass ``num_inference_steps`` (the pipeline's own default is 25) and guidance 1.0
(one UNet pass per step; the pipeline's default 1→3 doubles the cost). SVD's pipeline does not hand
its generator to the scheduler; for γ-sampling noise from your generator call
``pipe.scheduler.set_generator(g)`` (otherwise the scheduler's own seeded generator is used).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from tdd_video import lora, zoo
from tdd_video.apps.settings import SAMPLERS, check_sampler, default_lora
from tdd_video.core.params import DEFAULT_ETA
from tdd_video.errors import ConfigError
from tdd_video.families import check_model_folder, quiet_loading
from tdd_video.families.base import load_error
from tdd_video.families.svd import SVD_COMPONENTS
from tdd_video.families.tiny import save_tiny_svd
from tdd_video.lora import unwrap_peft
from tdd_video.sampling import AnimateLCMScheduler, TDDScheduler
from tdd_video.unet_checkpoint import CheckpointError, load_unet_checkpoint

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
TINY_NOTE = ("default model: the bundled TINY SVD with RANDOM weights (architecture demo only; the output is "
             "noise-like). Pass --model <diffusers folder or hub id> for real results")


def cache_dir() -> Path:
    """Where generated default models live: $TDD_VIDEO_CACHE or ~/.cache/tdd_video."""
    return Path(os.environ.get("TDD_VIDEO_CACHE", Path.home() / ".cache" / "tdd_video"))


def default_model_dir() -> Path:
    """The default img2vid model folder, built on first use (tiny random-weight SVD, diffusers format)."""
    folder = cache_dir() / "tiny-svd"
    if not (folder / "model_index.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="tiny-svd.", dir=folder.parent))
        with quiet_loading():
            save_tiny_svd(tmp, seed=0)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    return folder


ZOO_NOTE = ("default model: the bundled toy zoo (toy-svd, a tiny SVD-architecture teacher trained here on "
            "synthetic 32x32 clips) with its TDD student LoRA for this step count ({student}). Pass --model "
            "<diffusers folder or hub id> for real results")


def img2vid_model(model) -> tuple[str, bool]:
    """(model path or hub id, is_default_tiny).

    None/'' → the zoo's trained toy teacher (``toy-svd``) when it is installed, else the tiny
    random-weight model; 'tiny' → the tiny random-weight model; a zoo name → its folder; an existing
    folder or a plausible hub id (owner/name) passes through; anything else is a ConfigError('model')
    ("folder ... does not exist" / "not found", listing the zoo's models)."""
    if model is None or model == "":
        if zoo.is_zoo_name(zoo.DEFAULT_SVD):
            return str(zoo.zoo_path(zoo.DEFAULT_SVD)), False
        return str(default_model_dir()), True
    if model == "tiny":
        return str(default_model_dir()), True
    if zoo.is_zoo_name(str(model)):
        return str(zoo.zoo_path(str(model))), False
    return str(zoo.resolve_model(model, allow_hub=True)), False


def parse_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"got {dtype!r}, allowed values are {', '.join(DTYPES)}")
    return DTYPES[dtype]


def apply_lora(unet, path, scale: float = 1.0, fuse: bool = False):
    """Load a TDD LoRA file into `unet` (refused if made for another base) at `scale`; optionally fuse."""
    p = Path(path)
    if not p.exists():
        raise ConfigError("lora", f"file not found: {p}")
    lora.load_lora(unet, p, name="student", scale=scale)
    if fuse:
        lora.fuse_lora(unet, "student", scale=scale)
    return unet


def load_img2vid(model=None, lora=None, lora_scale: float = 1.0, fuse: bool = False, steps: int = 4,
                 dtype="fp32", device="cpu", eta: float = DEFAULT_ETA, schedule: str = "equidistant", unet=None,
                 sampler: str = "tdd", **scheduler_kwargs):
    """A StableVideoDiffusionPipeline with the TDD student (base + LoRA) and the TDDScheduler.

    model: diffusers folder, hub id or zoo name (None: the zoo teacher). unet: a full UNet state dict
    (e.g. AnimateLCM-SVD-xt-1.1.safetensors) loaded strictly into the base's UNet before any LoRA.
    sampler "animatelcm" installs the AnimateLCMScheduler (docs/math.md §8) instead of the TDDScheduler.
    `steps` is set on the scheduler (call the pipeline with ``num_inference_steps=steps``)."""
    check_sampler(sampler)
    path, _ = img2vid_model(model)
    check_model_folder(path, SVD_COMPONENTS, "svd")
    with quiet_loading():                  # no library loading bars / notices (families.base.quiet_loading)
        from diffusers import StableVideoDiffusionPipeline
        try:
            pipe = StableVideoDiffusionPipeline.from_pretrained(path, dtype=parse_dtype(dtype))
        except (OSError, ValueError) as e:
            raise load_error("SVD", path, e) from e
        except Exception as e:  # noqa: BLE001 - a hub id's network / auth failure is one clear error
            if Path(path).exists():
                raise
            raise load_error("SVD", path, e) from e
    if unet is not None:
        try:
            load_unet_checkpoint(pipe.unet, unet, strict=True)
        except CheckpointError as e:
            raise ConfigError("unet", str(e)) from None
    if lora is not None:
        apply_lora(pipe.unet, lora, lora_scale, fuse)
    if sampler == "animatelcm":
        pipe.scheduler = AnimateLCMScheduler.from_config(pipe.scheduler.config, **scheduler_kwargs)
    elif sampler == "euler":
        pass                                # the pipeline's own Euler scheduler: the teacher's sampler
    else:
        pipe.scheduler = TDDScheduler.from_config(pipe.scheduler.config, eta=eta, schedule=schedule,
                                                  **scheduler_kwargs)
    pipe.scheduler.set_timesteps(steps)
    return pipe.to(device)


def _fused_plain_unet(unet) -> None:
    """Merge every active LoRA adapter into its base layer and remove the PEFT wrappers, in place."""
    from peft.tuners.lora import LoraLayer

    for module in unet.modules():
        if isinstance(module, LoraLayer) and not module.merged:
            module.merge(adapter_names=list(module.active_adapters))
    unwrap_peft(unet)


def export_pipeline(pipe, folder) -> Path:
    """Save a ready-to-use diffusers folder: base + fused LoRA (in place on `pipe.unet`) + the few-step
    scheduler (TDDScheduler, or the AnimateLCMScheduler when the pipe has it).

    model_index.json names diffusers' EulerDiscreteScheduler so plain diffusers loads the folder
    without tdd_video; ``scheduler/scheduler_config.json`` holds the few-step sampler's settings:
        pipe = StableVideoDiffusionPipeline.from_pretrained(folder)
        pipe.scheduler = TDDScheduler.from_pretrained(folder, subfolder="scheduler")"""
    folder = Path(folder)
    if not isinstance(pipe.scheduler, (TDDScheduler, AnimateLCMScheduler)):
        pipe.scheduler = TDDScheduler.from_config(pipe.scheduler.config)
    sched_name = type(pipe.scheduler).__name__
    _fused_plain_unet(pipe.unet)
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_loading():                  # no "Writing model shards" bar
        pipe.save_pretrained(folder, safe_serialization=True)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    steps = pipe.scheduler.num_inference_steps
    (folder / "README.md").write_text(
        "# Few-step image-to-video pipeline (exported by tdd_video)\n\n"
        f"Base model with the student fused into the UNet; `scheduler/` holds the {sched_name} settings.\n\n"
        f"```python\nfrom diffusers import StableVideoDiffusionPipeline\n"
        f"from tdd_video.sampling import {sched_name}\n\n"
        f"pipe = StableVideoDiffusionPipeline.from_pretrained(\"{folder.name}\")\n"
        f"pipe.scheduler = {sched_name}.from_pretrained(\"{folder.name}\", subfolder=\"scheduler\")\n"
        f"frames = pipe(image, num_inference_steps={steps}, min_guidance_scale=1.0, max_guidance_scale=1.0).frames[0]\n"
        "```\n")
    return folder


__all__ = ["DTYPES", "SAMPLERS", "TINY_NOTE", "ZOO_NOTE", "apply_lora", "cache_dir", "check_sampler", "default_lora",
           "default_model_dir", "export_pipeline", "img2vid_model", "load_img2vid", "parse_dtype"]
