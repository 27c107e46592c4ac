"""Latent + text-embedding cache for image-text data (SDXL): encode every image and caption once.

    python -m tdd_video.data.image_cache --model DIR_OR_ID_OR_ZOO --data FOLDER_MANIFEST_OR_SHARDS --out DIR \\
        [--height 1024 --width 1024] [--dtype fp16|bf16|fp32] [--shard-size 256]

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

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from tdd_video.data.images import ImageDataConfig, ImageReadError, build_image_dataset
from tdd_video.data.sampler import SampleKey
from tdd_video.errors import ConfigError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


@torch.no_grad()
def build_image_cache(family, cfg: ImageDataConfig, out_dir, dtype: str = "fp16", shard_size: int = 256,
                      seed: int = 0, model_name: str = "", progress: bool = True) -> Path:
    """Encode every image of cfg's source into out_dir (resumable); returns the path of index.json."""
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
            lat = family.encode_latents({"pixel_values": pix}, gen).cpu()
            pe, pooled = family.encode_prompt([it["caption"] for it in items])
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


class ImageLatentCacheDataset(Dataset):
    """Reads a finished cache; items are SDXL batch entries (latents + embeddings + sizes + caption)."""

    def __init__(self, cache_dir):
        self.dir = Path(cache_dir)
        index = self.dir / "index.json"
        if not index.is_file():
            raise ConfigError("data.cache_dir", f"{self.dir} has no index.json (build it with "
                                                "`python -m tdd_video.data.image_cache`, or it is unfinished)")
        idx = json.loads(index.read_text())
        self.where = [(n, k) for n, c in zip(idx["shards"], idx["counts"]) for k in range(c)]
        if not self.where:
            raise ConfigError("data.cache_dir", f"{self.dir} holds no samples")
        self.bucket_of = [0] * len(self.where)
        self._open: dict = {}

    def __len__(self) -> int:
        return len(self.where)

    def _shard(self, name: str):
        from safetensors.torch import load_file
        if name not in self._open:
            if len(self._open) >= 2:
                self._open.pop(next(iter(self._open)))
            caps = json.loads((self.dir / f"{name}.json").read_text())["captions"]
            self._open[name] = (load_file(str(self.dir / f"{name}.safetensors")), caps)
        return self._open[name]

    def __getitem__(self, key) -> dict:
        index = key.index if isinstance(key, SampleKey) else int(key)
        name, k = self.where[index]
        t, caps = self._shard(name)
        sizes = t[f"{k}.sizes"]
        return {"latents": t[f"{k}.latents"].float(), "prompt_embeds": t[f"{k}.prompt_embeds"].float(),
                "pooled_prompt_embeds": t[f"{k}.pooled"].float(), "original_size": sizes[0],
                "crop_coords": sizes[1], "target_size": sizes[2], "caption": caps[k]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build the SDXL latent + text-embedding cache (resumable).")
    p.add_argument("--model", required=True, help="diffusers SDXL folder, hub id, zoo name or 'tiny'")
    p.add_argument("--data", required=True, help="image folder, CSV/JSONL manifest, or .tar shards")
    p.add_argument("--out", required=True)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    from tdd_video.families import load_family
    from tdd_video.zoo import is_zoo_name, resolve_model
    try:
        cfg = ImageDataConfig(path=a.data, height=a.height, width=a.width).validate()
        model = str(resolve_model(a.model)) if is_zoo_name(a.model) else a.model
        family = load_family("sdxl", model, device=a.device)
        path = build_image_cache(family, cfg, a.out, a.dtype, a.shard_size, a.seed, a.model)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"cache ready: {path} ({json.loads(path.read_text())['total']} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
