"""Tiny SVD- and SDXL-architecture components for tests, the demo and the toy zoo.

Same classes as the real models (diffusers UNetSpatioTemporalConditionModel,
AutoencoderKLTemporalDecoder, transformers CLIPVisionModelWithProjection; UNet2DConditionModel
with ``addition_embed_type="text_time"``, two CLIP text encoders, an offline CLIPTokenizer,
AutoencoderKL), built from configs with a seed, so every code path is the one real weights take.
``save_tiny_svd`` / ``save_tiny_sdxl`` write complete diffusers pipeline folders that
``StableVideoDiffusionPipeline.from_pretrained`` / ``StableDiffusionXLPipeline.from_pretrained``
load offline. Default resolution: 64×64 px, VAE factor 4 (16×16 latents), 8 frames.
"""
from __future__ import annotations

from pathlib import Path

import torch

# Scheduler configs identical in form to the real model repos' scheduler_config.json.
SVD_SCHEDULER_CONFIG = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "set_alpha_to_one": False, "sigma_max": 700.0, "sigma_min": 0.002, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous",
    "trained_betas": None, "use_karras_sigmas": True,
}
SDXL_SCHEDULER_CONFIG = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}

TINY_FRAMES = 8
TINY_PIXELS = 64



def _build(seed: int, fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


# ----------------------------------------------------------------------------------------- SVD
def tiny_svd_unet(seed: int = 0, num_frames: int = TINY_FRAMES):
    """UNetSpatioTemporalConditionModel, 2 levels (32, 64 ch), 1.31 M params, 16×16 latents."""
    from diffusers import UNetSpatioTemporalConditionModel
    return _build(seed, lambda: UNetSpatioTemporalConditionModel(
        sample_size=TINY_PIXELS // 4, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64), addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=3 * 32, layers_per_block=1, cross_attention_dim=32,
        num_attention_heads=(2, 4), num_frames=num_frames))


def tiny_svd_vae(seed: int = 0, scaling_factor: float = 0.18215):
    """AutoencoderKLTemporalDecoder with 3 levels (factor 4): 64 px -> 16×16×4 latents."""
    from diffusers import AutoencoderKLTemporalDecoder
    return _build(seed + 1, lambda: AutoencoderKLTemporalDecoder(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        block_out_channels=(32, 32, 64), layers_per_block=1, latent_channels=4,
        sample_size=TINY_PIXELS, scaling_factor=scaling_factor))


def tiny_clip_vision(seed: int = 0):
    """CLIPVisionModelWithProjection at 224 px (patch 32 -> 7×7 tokens), 32-d embedding."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
                           num_attention_heads=2, image_size=224, patch_size=32)
    return _build(seed + 2, lambda: CLIPVisionModelWithProjection(cfg).eval())


def tiny_clip_image_processor():
    """The CLIP image processor of SVD (224 px, OpenAI CLIP mean/std)."""
    try:  # without torchvision transformers 5 uses the PIL backend anyway; import it to avoid a warning
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor
    return CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}, do_center_crop=True,
                              do_normalize=True, do_resize=True, do_rescale=True)


def tiny_svd_components(seed: int = 0, num_frames: int = TINY_FRAMES) -> dict:
    """All StableVideoDiffusionPipeline components (random weights) keyed by pipeline name."""
    from diffusers import EulerDiscreteScheduler
    return {"unet": tiny_svd_unet(seed, num_frames), "vae": tiny_svd_vae(seed),
            "image_encoder": tiny_clip_vision(seed), "feature_extractor": tiny_clip_image_processor(),
            "scheduler": EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)}


def save_tiny_svd(folder, seed: int = 0, num_frames: int = TINY_FRAMES, components: dict | None = None) -> Path:
    """Write a complete diffusers StableVideoDiffusionPipeline folder; returns its path."""
    from diffusers import StableVideoDiffusionPipeline
    comps = components or tiny_svd_components(seed, num_frames)
    folder = Path(folder)
    StableVideoDiffusionPipeline(**comps).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------- SDXL
def _byte_unicode() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode alphabet (256 printable characters)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


_COMMON_WORDS = ("a", "the", "of", "and", "in", "on", "with", "red", "blue", "green", "cat", "dog",
                 "photo", "ball", "circle", "square", "moving", "left", "right", "video")


def tiny_tokenizer_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small byte-level BPE vocab (+ merges for a few common words) in CLIP's format."""
    vocab: dict[str, int] = {}
    for ch in _byte_unicode():
        vocab[ch] = len(vocab)
    for ch in _byte_unicode():
        vocab[ch + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in _COMMON_WORDS:
        cur = word[0]
        for i, ch in enumerate(word[1:], start=1):
            nxt = ch + ("</w>" if i == len(word) - 1 else "")
            merged = cur + nxt
            if merged not in vocab:
                merges.append((cur, nxt))
                vocab[merged] = len(vocab)
            cur = merged
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def tiny_tokenizer(model_max_length: int = 77):
    """Offline CLIPTokenizer (no hub): small vocab, model_max_length set explicitly."""
    from transformers import CLIPTokenizer
    vocab, merges = tiny_tokenizer_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def tiny_text_encoders(seed: int = 0, vocab_size: int | None = None):
    """(CLIPTextModel 32-d, CLIPTextModelWithProjection 32-d, pooled 32-d) like SDXL's pair."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    vocab, _ = tiny_tokenizer_vocab()
    n = vocab_size or len(vocab)
    common = dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                  max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
                  bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                  pad_token_id=vocab["<|endoftext|>"])
    enc1 = _build(seed + 3, lambda: CLIPTextModel(CLIPTextConfig(**common)).eval())
    enc2 = _build(seed + 4, lambda: CLIPTextModelWithProjection(CLIPTextConfig(**common)).eval())
    return enc1, enc2


def tiny_sdxl_unet(seed: int = 0):
    """UNet2DConditionModel with SDXL's text_time added conditioning, 2 levels (32, 64 ch)."""
    from diffusers import UNet2DConditionModel
    return _build(seed, lambda: UNet2DConditionModel(
        sample_size=TINY_PIXELS // 4, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64, norm_num_groups=16))


def tiny_sdxl_vae(seed: int = 0, scaling_factor: float = 0.13025):
    """AutoencoderKL with 3 levels (factor 4): 64 px -> 16×16×4 latents."""
    from diffusers import AutoencoderKL
    return _build(seed + 1, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=1,
        latent_channels=4, norm_num_groups=16, sample_size=TINY_PIXELS, scaling_factor=scaling_factor,
        force_upcast=True))


def tiny_sdxl_components(seed: int = 0) -> dict:
    """All StableDiffusionXLPipeline components (random weights) keyed by pipeline name."""
    from diffusers import EulerDiscreteScheduler
    enc1, enc2 = tiny_text_encoders(seed)
    tok = tiny_tokenizer()
    return {"unet": tiny_sdxl_unet(seed), "vae": tiny_sdxl_vae(seed), "text_encoder": enc1, "text_encoder_2": enc2,
            "tokenizer": tok, "tokenizer_2": tiny_tokenizer(),
            "scheduler": EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)}


def save_tiny_sdxl(folder, seed: int = 0, components: dict | None = None) -> Path:
    """Write a complete diffusers StableDiffusionXLPipeline folder; returns its path."""
    from diffusers import StableDiffusionXLPipeline
    comps = components or tiny_sdxl_components(seed)
    folder = Path(folder)
    StableDiffusionXLPipeline(**comps, force_zeros_for_empty_prompt=True).save_pretrained(folder)
    return folder
