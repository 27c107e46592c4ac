"""Readers of finished latent caches (what the training loaders read with ``data.use_cache: true``).

* ``LatentCacheDataset``: video clips cached by ``tdd_video.data.cache.build_cache`` (``tdd-cache-video``);
* ``ImageLatentCacheDataset``: image-text pairs cached by ``tdd_video.data.image_cache.build_image_cache``
  (``tdd-cache-images``).
The layouts are described in those modules.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

from torch.utils.data import Dataset

from tdd_video.data.motion import MotionCalibration
from tdd_video.data.sampler import SampleKey
from tdd_video.errors import ConfigError


class LatentCacheDataset(Dataset):
    """Reads a finished cache. Items: ``latents`` [F,4,h,w] fp32, ``first_frame`` [3,H,W] in [-1,1],
    ``image_emb`` [1,D] fp32, ``fps_id``, ``motion_bucket_id``, ``caption``, ``path``, ``fps``; and ``motion``
    (raw, frame diagonals per second) when the cache was built with ``data.motion_bucket: estimate``.

    ``motion_mode`` is that setting of the build (``manifest`` for caches built before it existed) and
    ``calibration`` the MotionCalibration it used (None in manifest mode)."""

    def __init__(self, cache_dir: str | Path, max_open: int = 8):
        self.dir = Path(cache_dir)
        index_path = self.dir / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"{self.dir}: no index.json — not a finished latent cache "
                                    "(build or resume it with `tdd-cache-video`)")
        self.index = json.loads(index_path.read_text())
        motion = self.index.get("motion") or {}
        self.motion_mode = motion.get("mode", "manifest")
        self.calibration = None
        if motion.get("calibration"):
            try:
                self.calibration = MotionCalibration.from_dict(motion["calibration"])
            except ValueError:          # made by another estimator version: the stored buckets stay usable
                pass
        self.samples = []
        for shard in self.index["shards"]:
            for s in json.loads((self.dir / f"{shard}.json").read_text())["samples"]:
                self.samples.append(dict(s, shard=shard))
        if not self.samples:
            raise ValueError(f"{self.dir}: the cache holds no samples")
        sizes = sorted({(s["height"], s["width"]) for s in self.samples})
        self.sizes = sizes
        self.bucket_of = [sizes.index((s["height"], s["width"])) for s in self.samples]
        self.max_open = max_open
        self._open: OrderedDict[str, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self.samples)

    def _handle(self, shard: str):
        from safetensors import safe_open

        if shard not in self._open:
            self._open[shard] = safe_open(str(self.dir / f"{shard}.safetensors"), framework="pt")
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        self._open.move_to_end(shard)
        return self._open[shard]

    def __getitem__(self, key) -> dict:
        index = key.index if isinstance(key, SampleKey) else int(key)
        s = self.samples[index]
        h, k = self._handle(s["shard"]), s["key"]
        item = {"latents": h.get_tensor(f"{k}.latents").float(),
                "first_frame": h.get_tensor(f"{k}.first_frame").float() / 127.5 - 1.0,
                "image_emb": h.get_tensor(f"{k}.image_emb").float(),
                "fps_id": int(s["fps_id"]), "motion_bucket_id": int(s["motion_bucket_id"]),
                "caption": s["caption"], "path": s["path"], "fps": float(s["fps"])}
        if self.motion_mode == "estimate":
            item["motion"] = float(s["motion"])
        return item


class ImageLatentCacheDataset(Dataset):
    """Reads a finished cache; items are SDXL batch entries (latents + embeddings + sizes + caption)."""

    def __init__(self, cache_dir):
        self.dir = Path(cache_dir)
        index = self.dir / "index.json"
        if not index.is_file():
            raise ConfigError("data.cache_dir", f"{self.dir} has no index.json (build it with "
                                                "`tdd-cache-images`, or it is unfinished)")
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
