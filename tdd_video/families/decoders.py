"""Optional lighter VAE decoders (docs/math.md §14): decode a family's latents with another diffusers autoencoder.

A 4-step render pays the same VAE decode as a 25-step one; with SVD-xt's temporal decoder that fixed cost is
about a third of the 4-step render on a CPU (README "Targets"). A user may trade fidelity for speed with a
decoder that reads the same latent space, e.g. TAESD (``madebyollin/taesd``, diffusers ``AutoencoderTiny``),
which decodes the SD latent space SVD shares, frame by frame, at a small fraction of the cost.

The convention is diffusers': a decoder turns ``latents / decoder.config.scaling_factor`` into pixels in
[-1, 1] (AutoencoderTiny has scaling_factor 1: it reads the scaled diffusion latents directly). A decoder is
refused (ConfigError on ``vae_decoder``) unless its latent channels and its spatial upsampling factor
match the family's own VAE: a decoder for another latent space would silently produce garbage.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tdd_video.errors import ConfigError

KEY = "vae_decoder"
DECODER_CLASSES = ("AutoencoderTiny", "AutoencoderKL", "AutoencoderKLTemporalDecoder")


def decoder_factor(decoder: nn.Module) -> int:
    """Pixels per latent pixel of `decoder`, measured by decoding one 2×2 latent (cheap for any decoder)."""
    p = next(decoder.parameters())
    z = torch.zeros(1, int(decoder.config.latent_channels), 2, 2, dtype=p.dtype, device=p.device)
    kw = {"num_frames": 1} if type(decoder).__name__ == "AutoencoderKLTemporalDecoder" else {}
    with torch.no_grad():
        return int(decoder.decode(z, **kw).sample.shape[-1]) // 2


def check_decoder(decoder: nn.Module, latent_channels: int, factor: int, name: str) -> None:
    """ConfigError unless `decoder` is a known autoencoder reading `latent_channels` channels at `factor`."""
    cls = type(decoder).__name__
    if cls not in DECODER_CLASSES:
        raise ConfigError(KEY, f"{name!r} is a {cls}; a decoder must be one of {', '.join(DECODER_CLASSES)}")
    channels = int(decoder.config.latent_channels)
    if channels != latent_channels:
        raise ConfigError(KEY, f"{name!r} decodes {channels}-channel latents but this model's latents have "
                               f"{latent_channels} channels: it was made for another latent space")
    got = decoder_factor(decoder)
    if got != factor:
        raise ConfigError(KEY, f"{name!r} upsamples latents {got}x but this model's VAE does {factor}x: "
                               f"it was made for another latent space")


def _class_name(spec: str) -> str | None:
    """The diffusers class named in a local model folder's config.json (None for a hub id)."""
    p = Path(spec)
    if not p.exists():
        return None
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ConfigError(KEY, f"{spec!r} is not a diffusers model folder (no config.json); pass e.g. an "
                               f"AutoencoderTiny folder such as a download of madebyollin/taesd")
    try:
        return str(json.loads(cfg.read_text()).get("_class_name", ""))
    except (OSError, ValueError) as e:
        raise ConfigError(KEY, f"could not read {cfg}: {e}") from None


def load_decoder(spec: str, family, dtype: torch.dtype = torch.float32, device="cpu") -> nn.Module:
    """The autoencoder at `spec` (local folder or hub id), checked against `family`'s latent space, frozen,
    on `device` in `dtype`. Set it as ``family.decoder`` to decode with it."""
    import diffusers

    from tdd_video.families.base import quiet_loading
    cls_name = _class_name(spec)
    if cls_name is not None and cls_name not in DECODER_CLASSES:
        raise ConfigError(KEY, f"{spec!r} holds a {cls_name or 'model without _class_name'}; a decoder must be one "
                               f"of {', '.join(DECODER_CLASSES)}")
    loader = getattr(diffusers, cls_name) if cls_name else diffusers.AutoModel
    with quiet_loading():
        try:
            decoder = loader.from_pretrained(spec, torch_dtype=dtype)
        except Exception as e:  # noqa: BLE001 - missing file, offline hub, wrong repo: one clear error
            text = " ".join(str(e).split())
            where = "" if Path(spec).exists() else (" from the Hugging Face hub: it is not in the local cache and "
                                                    "could not be downloaded (offline, no such repo, or no access)")
            raise ConfigError(KEY, f"could not load the decoder {spec!r}{where} ({type(e).__name__}: {text})") from None
    decoder.requires_grad_(False).eval().to(device)
    check_decoder(decoder, int(family.vae.config.latent_channels), family.vae_scale_factor, spec)
    return decoder
