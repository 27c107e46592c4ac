"""The family contract: everything a method or sampler may know about a model family (docs/math.md §1).

A family adapter owns the networks (unet, vae, conditioning encoders) and the schedule, and
exposes the k-diffusion style denoiser ``denoise(x, u, cond) -> x0_hat``. Methods, samplers and
losses never see eps/v/timestep encodings.

Batch contract (what data loaders hand to ``encode_conditioning``), per family:

* SVD (video, latents [B, F, 4, H/8, W/8]):
  - ``pixel_values`` [B, F, 3, H, W] float in [-1, 1]   (raw-video path), or
    ``latents`` [B, F, 4, h, w] (already × scaling_factor) + ``first_frame`` [B, 3, H, W] in [-1, 1]
    + ``image_emb`` [B, 1, D]                            (latent-cache path);
  - optional ``embedding_image`` [B, 3, H', W'] in [-1, 1], any size: the image CLIP embeds instead of the
    first frame (inference: the original photo, as StableVideoDiffusionPipeline does);
  - ``fps_id`` [B] int (the clip's real fps − 1, docs/math.md §1a), ``motion_bucket_id`` [B] int.
* SDXL (image, latents [B, 4, H/8, W/8]):
  - ``pixel_values`` [B, 3, H, W] in [-1, 1] or ``latents``; ``caption`` list[str] (or cached
    ``prompt_embeds`` [B, 77, 2048] + ``pooled_prompt_embeds`` [B, 1280]);
  - ``original_size`` [B, 2], ``crop_coords`` [B, 2], ``target_size`` [B, 2] (int, (h, w)).
"""
from __future__ import annotations

import contextlib
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from tdd_video.core.guidance import cfg, where_null
from tdd_video.errors import ConfigError

Tensor = torch.Tensor


@dataclass
class Conditioning:
    """Base class of per-sample conditioning: every field is a tensor with batch dim 0."""

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def cat(self, *others: "Conditioning") -> "Conditioning":
        """Concatenate along the batch (for one batched CFG forward: [uncond; cond])."""
        return replace(self, **{k: torch.cat([v] + [o.tensors()[k] for o in others])
                                for k, v in self.tensors().items()})

    def select(self, mask: Tensor, null: "Conditioning") -> "Conditioning":
        """Per sample: null[i] where mask[i] else self[i] (decoupled guidance, docs/math.md §4)."""
        nt = null.tensors()
        return replace(self, **{k: where_null(mask, v, nt[k]) for k, v in self.tensors().items()})

    def index(self, idx) -> "Conditioning":
        return replace(self, **{k: v[idx] for k, v in self.tensors().items()})

    def to(self, *args, **kwargs) -> "Conditioning":
        return replace(self, **{k: v.to(*args, **kwargs) for k, v in self.tensors().items()})

    def detach(self) -> "Conditioning":
        return replace(self, **{k: v.detach() for k, v in self.tensors().items()})

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors().values())).shape[0]


class Family(ABC):
    """A model family adapter. Concrete: SVDFamily (EDM), SDXLFamily (VP), via DiffusersFamily."""

    name: str
    schedule: object          # tdd_video.core.EDMSchedule | VPSchedule
    unet: nn.Module           # the (possibly LoRA-injected) denoiser network
    vae: nn.Module

    @abstractmethod
    def encode_conditioning(self, batch: dict, generator: torch.Generator | None = None,
                            train: bool = True) -> Conditioning:
        """Conditioning c for a data batch (docs/math.md §1a/§1b), per sample; no grad."""

    @abstractmethod
    def null_conditioning(self, cond: Conditioning) -> Conditioning:
        """The null conditioning ∅ the diffusers pipeline uses for its unconditional branch."""

    @abstractmethod
    def encode_latents(self, batch: dict, generator: torch.Generator | None = None) -> Tensor:
        """Clean latents x0 (× scaling_factor) of a batch: [B, F, C, h, w] (video) or [B, C, h, w]."""

    @abstractmethod
    def decode_latents(self, latents: Tensor, decode_chunk: int | None = None) -> Tensor:
        """Pixels in [-1, 1] from latents (inverse of encode_latents)."""

    @abstractmethod
    def denoise(self, x: Tensor, u: Tensor, cond: Conditioning, unet: nn.Module | None = None) -> Tensor:
        """x0_hat = D(x_u, u, c) in float32 math around a possibly bf16 network (docs/math.md §1).

        x: noisy latents [B, ...]; u: [B] on the shared time axis (float64); returns float32 x0
        of x's shape. u = 0 returns x exactly. `unet` overrides self.unet (e.g. a frozen teacher copy)."""

    def denoise_cfg(self, x: Tensor, u, cond: Conditioning, scale, null: Conditioning | None = None,
                    unet: nn.Module | None = None) -> Tensor:
        """Guided x0 = x0(∅) + w·(x0(c) − x0(∅)) with ONE batched forward of 2B ([∅; c]) — docs/math.md §4.

        scale: number, or weights broadcastable to x (e.g. per frame: core.framewise_scale);
        scale == 1 is a single unguided forward. null defaults to ``null_conditioning(cond)``."""
        if isinstance(scale, (int, float)) and scale == 1:
            return self.denoise(x, u, cond, unet)
        null = self.null_conditioning(cond) if null is None else null
        b = x.shape[0]
        u = torch.as_tensor(u, dtype=torch.float64, device=x.device).reshape(-1).expand(b)
        both = self.denoise(torch.cat([x, x]), torch.cat([u, u]), null.cat(cond), unet)
        return cfg(both[:b], both[b:], scale)


def check_model_folder(path, components: tuple[str, ...], family: str) -> None:
    """For a local folder: raise a clear error if a pipeline component subfolder is missing.

    Hub ids (paths that do not exist locally) are left to diffusers."""
    p = Path(path)
    if not p.exists():
        return
    if not p.is_dir():
        raise ConfigError("model", f"{str(p)!r} is a file; expected a diffusers pipeline folder for family {family!r}")
    missing = [c for c in components if not (p / c).is_dir()]
    if missing:
        raise ConfigError("model", f"model folder {str(p)!r} is missing component subfolder(s) "
                                   f"{', '.join(m + '/' for m in missing)} (a {family!r} pipeline folder needs "
                                   f"{', '.join(c + '/' for c in components)} and model_index.json)")



@contextlib.contextmanager
def quiet_loading(hide_downloads: bool = False):
    """Library chatter off while a pipeline loads (or saves), restored afterwards: diffusers and transformers log
    only errors (no "Couldn't connect to the Hub", no "`CLIPImageProcessor` requires torchvision" notice) and
    draw no "Loading pipeline components..." / "Loading weights" / "Writing model shards" bars. Hub download
    bars stay as they were unless `hide_downloads` (e.g. the CLIs' --no-progress)."""
    import huggingface_hub.utils as hub
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    before = (dlog.get_verbosity(), dlog.is_progress_bar_enabled(), tlog.get_verbosity(),
              tlog.is_progress_bar_enabled(), hub.are_progress_bars_disabled())
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()              # (also switches the hub's bars off; put them back below)
    if not before[4] and not hide_downloads:
        hub.enable_progress_bars()
    try:
        yield
    finally:
        dlog.set_verbosity(before[0])
        dlog.enable_progress_bar() if before[1] else dlog.disable_progress_bar()
        tlog.set_verbosity(before[2])
        tlog.enable_progress_bar() if before[3] else tlog.disable_progress_bar()
        hub.disable_progress_bars() if before[4] else hub.enable_progress_bars()


def load_error(kind: str, name, error: Exception) -> ConfigError:
    """ConfigError('model') for a pipeline that failed to load: for a hub id (not a local path) it says the
    id is neither in the local hub cache nor downloadable (offline, no such repo, or no access)."""
    text = " ".join(str(error).split()).replace(" Please check out the root cause in the stacktrace above.", "")
    if not Path(str(name)).exists():
        return ConfigError("model", f"could not load {kind} pipeline {str(name)!r} from the Hugging Face hub: it is "
                                    f"not in the local cache and could not be downloaded (offline, no such repo, or "
                                    f"no access) — pass a local diffusers folder or a zoo name "
                                    f"({type(error).__name__}: {text})")
    return ConfigError("model", f"could not load {kind} pipeline {str(name)!r}: {text}")


@contextlib.contextmanager
def using_module(family, name: str, module):
    """``family.<name>`` set to `module` for a while, then restored (e.g. "unet", "decoder")."""
    old = getattr(family, name)
    setattr(family, name, module)
    try:
        yield module
    finally:
        setattr(family, name, old)


def using_unet(family, unet):
    """family.unet (what denoise(unet=None) and the samplers call) set to `unet` for a while, then restored."""
    return using_module(family, "unet", unet)


def place_modules(components: dict, keys: tuple[str, ...], dtype: torch.dtype, device) -> dict:
    """Move the nn.Modules ``components[k]`` for k in `keys` to `device` (and `dtype` unless float32), in place."""
    for k in keys:
        components[k].to(device)
        if dtype != torch.float32:
            components[k].to(dtype)
    return components


class DiffusersFamily(Family):
    """A family backed by one diffusers pipeline class: shared loading and VAE/UNet properties.

    Subclasses set ``name``, ``components`` (the pipeline's component subfolders) and
    ``pipeline_class`` (the diffusers class name), and implement ``from_pipeline``."""

    components: tuple[str, ...]
    pipeline_class: str
    decoder: nn.Module | None = None      # an optional lighter VAE decoder (families/decoders.py); None: the VAE

    @classmethod
    def from_pretrained(cls, path_or_hub_id, dtype: torch.dtype = torch.float32, device="cpu",
                        variant: str | None = None, **kwargs) -> "DiffusersFamily":
        """Load a diffusers pipeline folder or hub id of this family (the real loading path).

        A local folder is checked for every component subfolder first; a load failure is a
        ConfigError on key 'model' naming the folder / hub id."""
        if path_or_hub_id is None:
            raise ConfigError("model", f"no model given for family {cls.name!r} (a diffusers folder or hub id)")
        check_model_folder(path_or_hub_id, cls.components, cls.name)
        local = Path(str(path_or_hub_id)).exists()
        with quiet_loading():
            pipeline_cls = getattr(importlib.import_module("diffusers"), cls.pipeline_class)
            try:
                pipe = pipeline_cls.from_pretrained(str(path_or_hub_id), dtype=dtype, variant=variant, **kwargs)
            except (OSError, ValueError) as e:
                raise load_error(cls.name.upper(), path_or_hub_id, e) from e
            except Exception as e:  # noqa: BLE001 - a hub id's network / auth failure is one clear error
                if local:
                    raise
                raise load_error(cls.name.upper(), path_or_hub_id, e) from e
        return cls.from_pipeline(pipe, device=device)

    @classmethod
    @abstractmethod
    def from_pipeline(cls, pipe, device="cpu") -> "DiffusersFamily":
        """This family around the modules of a loaded diffusers pipeline (moved to `device`)."""

    @staticmethod
    def default_scheduler(scheduler, scheduler_config: dict):
        """`scheduler`, or the Euler scheduler the stock pipeline ships with when None."""
        from diffusers import EulerDiscreteScheduler
        return scheduler or EulerDiscreteScheduler.from_config(scheduler_config)

    def decode_module(self) -> tuple[nn.Module, float]:
        """The module that turns latents into pixels (``decoder`` if set, else the VAE) and the scaling factor
        the latents are divided by before it (that module's own, diffusers' convention)."""
        dec = self.vae if self.decoder is None else self.decoder
        return dec, float(dec.config.scaling_factor)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device
