"""Latent + text-embedding cache for image-text data (SDXL): encode every image and caption once.

    tdd-cache-images --model DIR_OR_ID_OR_ZOO --data FOLDER_MANIFEST_OR_SHARDS --out DIR \\
        [--height 1024 --width 1024] [--dtype fp16|bf16|fp32] [--shard-size 256]

The builder takes an ``encode`` callable (pixels [B, 3, H, W], captions, generator) -> (latents,
prompt_embeds, pooled); ``image_encoder(family)`` makes one from an SDXL family (the CLI does).

Each sample stores, in ``shard_00000.safetensors`` (+ ``shard_00000.json``, written last = shard done):
``k.latents`` [4, H/f, W/f] (× scaling_factor, one posterior sample from a generator seeded by (seed, shard)),
``k.prompt_embeds`` [L, D1+D2], ``k.pooled`` [P] (the family's encode_prompt, exactly the pipeline's), and
``k.sizes`` [3, 2] int = original_size, crop_coords, target_size. Images are taken with the evaluation transform
(centre crop, no flip): one crop per image, so the micro-conditioning matches the cached crop. Unreadable images
are skipped and listed in the shard JSON. ``cache_meta.json`` pins model, dtype and size: resuming with other
settings is refused; finished shards are skipped, so an interrupted run resumes. The trainer reads the cache
with ``data.use_cache: true`` and ``data.cache_dir: DIR`` (batches carry ``latents``, ``prompt_embeds``,
``pooled_prompt_embeds`` and the size keys; no VAE or text encoder runs in training).
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from tdd_video.data.images import ImageDataConfig, ImageReadError, build_image_dataset
from tdd_video.errors import ConfigError

EncodeImages = Callable[[torch.Tensor, list, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def image_encoder(family) -> EncodeImages:
    """The ``encode`` of `build_image_cache` for an SDXL-type family: (latents × scaling_factor, the pipeline's
    prompt embeddings, pooled embeddings)."""
    def encode(pix: torch.Tensor, captions: list, generator: torch.Generator):
        pe, pooled = family.encode_prompt(captions)
        return family.encode_latents({"pixel_values": pix}, generator), pe, pooled
    return encode


@torch.no_grad()
def build_image_cache(encode: EncodeImages, cfg: ImageDataConfig, out_dir, dtype: str = "fp16",
                      shard_size: int = 256, seed: int = 0, model_name: str = "", progress: bool = True) -> Path:
    """Encode every image of cfg's source into out_dir (resumable); returns the path of index.json.
    ``encode(pixels [B, 3, H, W], captions, generator) -> (latents, prompt_embeds, pooled)``."""
    from safetensors.torch import save_file
    from tqdm import tqdm
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"got {dtype!r}, allowed values are {list(DTYPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, train=False, flip=False, use_cache=False, buckets=None)
    meta = {"model": model_name, "dtype": dtype, "height": cfg.height, "width": cfg.width, "seed": seed,
            "data": cfg.path, "version": 1}
    meta_path = out / "cache_meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != meta:
            raise ConfigError("cache", f"{out} holds a cache made with other settings {old}; use another --out")
    _write_json(meta_path, meta)
    ds = build_image_dataset(cfg, seed)
    shards = []
    for s, start in enumerate(tqdm(range(0, len(ds), shard_size), desc="cache", disable=not progress)):
        name = f"shard_{s:05d}"
        shards.append(name)
        if (out / f"{name}.json").is_file():
            continue
        items, skipped = [], []
        for i in range(start, min(start + shard_size, len(ds))):
            rec = ds.records[i]
            try:
                items.append(ds.load(i, None))
            except ImageReadError as e:
                skipped.append({"path": rec.path, "reason": str(e)})
        tensors, captions = {}, []
        if items:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + s)
            pix = torch.stack([it["pixel_values"] for it in items])
            lat, pe, pooled = encode(pix, [it["caption"] for it in items], gen)
            lat = lat.cpu()
            for k, it in enumerate(items):
                tensors[f"{k}.latents"] = lat[k].to(DTYPES[dtype]).contiguous()
                tensors[f"{k}.prompt_embeds"] = pe[k].cpu().to(DTYPES[dtype]).contiguous()
                tensors[f"{k}.pooled"] = pooled[k].cpu().to(DTYPES[dtype]).contiguous()
                tensors[f"{k}.sizes"] = torch.stack([it["original_size"], it["crop_coords"], it["target_size"]]).long()
                captions.append(it["caption"])
        tmp = out / f"{name}.safetensors.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, out / f"{name}.safetensors")
        _write_json(out / f"{name}.json", {"count": len(items), "captions": captions, "skipped": skipped})
    counts = [json.loads((out / f"{n}.json").read_text())["count"] for n in shards]
    _write_json(out / "index.json", {"shards": shards, "counts": counts, "total": sum(counts)})
    return out / "index.json"
