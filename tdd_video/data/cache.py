"""Latent cache: encode each clip once with the family's VAE and image encoder.

    tdd-cache-video --model DIR_OR_ID --data MANIFEST_OR_FOLDER --out DIR \\
        [--dtype fp16|bf16|fp32] [--shard-size N] [--num-frames 14 --target-fps 7 --height 320 --width 576]
        [--motion-bucket manifest|estimate [--motion-calibration FILE | --motion-percentiles P5 P50 P95]]

The builder takes an ``encode`` callable (pixels [1, F, 3, H, W], generator) -> (latents [F, C, h, w],
image_emb [1, D]); ``video_encoder(family)`` makes one from an SVD family (the CLI does).

Layout of ``DIR``: ``cache_meta.json`` (model, dtype, data settings — a resumed run must match),
``shard_00000.safetensors`` + ``shard_00000.json`` ... and, when complete, ``index.json``. Each
sample k of a shard stores

* ``k.latents``     [F, 4, H/8, W/8] (× scaling_factor; one posterior sample drawn with a
  generator seeded by (seed, sample index), so the cache is reproducible), storage dtype;
* ``k.image_emb``   [1, D] CLIP embedding of the clean first frame, storage dtype;
* ``k.first_frame`` [3, H, W] uint8 — the clean first frame in PIXELS, lossless (the raw-video
  path quantises frames to the 8-bit grid, transforms.resize_crop).

Why pixels for the conditioning frame: SVD's conditioning latent is the VAE encoding of the first
frame *after* pixel-space noise augmentation x + σ_aug·ε with σ_aug ~ LogNormal(−3, 0.5) drawn
per sample and per step (docs/math.md §1a). A cached latent of the clean frame would freeze σ_aug = 0
(or one draw), which changes the conditioning distribution the student learns. Storing the frame
keeps the augmentation fresh; the cost is one 1-frame VAE encode per sample per step (about 1/F
of the raw path's VAE work: 1/14 or 1/25), plus ~H·W·3 bytes per sample (0.55 MB at 320×576).
The CLIP embedding is of the *clean* frame, so it is cached.

Clips: the first clip of a video is taken with the evaluation sampling of the data config (fixed
start — centre by default — centre crop, no flip); with ``clips_per_video`` N > 1 (``--clips-per-video``)
N − 1 more are drawn with the training sampling (random start, random crop, flip when
``data.flip``), each seeded by (seed, video, clip), so the cached path keeps some of the raw path's
augmentation. Every clip is one sample of the cache. Shards are written atomically (temp file +
rename; the shard's JSON is written last and marks it done), so an interrupted run resumes by
skipping finished shards. Videos that cannot be read are listed in the shard JSON and skipped.
The trainer reads the cache (``tdd_video.data.cached``) with ``data.use_cache: true`` and ``data.cache_dir: DIR``.

Motion (docs/math.md §13): every sample's JSON stores ``motion`` — the clip's raw motion (frame diagonals per
second, `tdd_video.data.motion.estimate_motion`, measured on the cached clip) — whatever the mode, and its
``motion_bucket_id``: the manifest value / default with ``data.motion_bucket: manifest``, the calibrated
estimate with ``estimate``. In estimate mode ``cache_meta.json`` / ``index.json`` also hold
``motion: {mode: estimate, calibration: {...}}`` (the map used; a resumed build must use the same one).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tdd_video.data.config import VideoDataConfig
from tdd_video.data.dataset import ClipTooShort, VideoClipDataset, build_video_dataset
from tdd_video.data.readers import VideoReadError

EncodeClips = Callable[[torch.Tensor, list, list], tuple[torch.Tensor, torch.Tensor]]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CACHE_VERSION = 1


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def video_encoder(family) -> EncodeClips:
    """The ``encode`` of `build_cache` for an SVD-type family: (latents × scaling_factor, CLIP embedding of
    the clean first frame); each clip's posterior sample is drawn from its own generator."""
    def encode(pix: torch.Tensor, generators: list, metas: list):
        latents = torch.cat([family.encode_latents({"pixel_values": pix[n:n + 1]}, generator=g)
                             for n, g in enumerate(generators)])
        return latents, family.encode_image_embedding(pix[:, 0])
    return encode


def build_cache(encode: EncodeClips, cfg: VideoDataConfig, out_dir: str | Path, dtype: str = "fp16",
                shard_size: int = 64, seed: int = 0, model_name: str = "", progress: bool = True,
                clips_per_video: int = 1, latent_source: str = "vae", encode_batch: int = 1) -> Path:
    """Encode every video of ``cfg``'s source into ``out_dir``; returns the path of index.json.

    ``encode(pixels [n, F, 3, H, W], generators [n], metas [n]) -> (latents [n, F, C, h, w], image_emb [n, 1, D])``
    encodes `encode_batch` clips at a time; each clip has its own generator (so the result does not depend on
    the batching) and meta = its {fps_id, motion_bucket_id} (`video_encoder(family)` for an SVD family; a
    teacher-sample encoder, tdd_video.sampling.teacher_data, conditions on them). `latent_source` names what
    the latents are (recorded in cache_meta.json, so a resumed build cannot mix kinds)."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    if clips_per_video < 1:
        raise ValueError(f"--clips-per-video must be >= 1, got {clips_per_video}")
    train_cfg = replace(cfg, train=True, use_cache=False)
    cfg = replace(cfg, train=False, flip=False, use_cache=False)
    dataset = build_video_dataset(cfg, seed)
    dataset.with_motion = True                  # the raw motion is stored in every mode
    augmented = VideoClipDataset(dataset.records, train_cfg, seed, dataset.bucket_of, dataset.calibration,
                                 with_motion=True) if clips_per_video > 1 else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = cfg.to_dict()
    if cfg.motion_bucket == "manifest":         # absent in manifest mode, so caches built before the option resume
        for key in ("motion_bucket", "motion_calibration", "motion_percentiles", "motion_calibration_clips"):
            data.pop(key)
    meta = {"version": CACHE_VERSION, "model": str(model_name), "dtype": dtype, "shard_size": shard_size,
            "seed": seed, "num_records": len(dataset), "data": data}
    if clips_per_video > 1:                     # absent for 1, so caches built before the option still resume
        meta["clips_per_video"] = clips_per_video
    if latent_source != "vae":                  # absent for VAE latents, so caches built before still resume
        meta["latent_source"] = latent_source
    if dataset.calibration is not None:
        meta["motion"] = {"mode": "estimate", "calibration": dataset.calibration.to_dict()}
    meta_path = out / "cache_meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old != meta:
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise ValueError(f"{out} holds a cache built with other settings (differs in {diff}); "
                             "use a new --out folder or delete it")
    else:
        _write_json_atomic(meta_path, meta)
    store = DTYPES[dtype]
    num_shards = math.ceil(len(dataset) / shard_size)
    bar = tqdm(total=len(dataset), desc="caching latents", unit="clip", disable=not progress)
    for s in range(num_shards):
        name = f"shard_{s:05d}"
        lo, hi = s * shard_size, min(len(dataset), (s + 1) * shard_size)
        if (out / f"{name}.json").exists():
            bar.update(hi - lo)
            continue
        tensors, samples, failed, pending = {}, [], [], []

        def flush():
            """Encode the pending clips as one batch and add them to the shard."""
            if not pending:
                return
            pix = torch.cat([p["pix"] for p in pending])
            latents, image_emb = encode(pix, [p["gen"] for p in pending], [p["meta"] for p in pending])
            for n, p in enumerate(pending):
                k = len(samples)
                tensors[f"{k}.latents"] = latents[n].detach().to("cpu", store).contiguous()
                tensors[f"{k}.image_emb"] = image_emb[n].detach().to("cpu", store).contiguous()
                tensors[f"{k}.first_frame"] = ((p["pix"][0, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
                samples.append({"key": k, **p["sample"]})
            pending.clear()

        for i in range(lo, hi):
            rec = dataset.records[i]
            for c in range(clips_per_video):
                try:
                    if c == 0:
                        item = dataset.load(i, np.random.default_rng([seed, 0, i, 0]))
                    else:
                        item = augmented.load(i, np.random.default_rng([seed, 1, i, c]))
                except (VideoReadError, ClipTooShort) as e:
                    failed.append({"path": str(rec.path), "reason": str(e)})
                    break                               # a video that cannot be read is skipped once
                pix = item["pixel_values"][None]
                if pending and pending[0]["pix"].shape != pix.shape:
                    flush()                             # buckets of other sizes are encoded separately
                pending.append({
                    "pix": pix, "gen": torch.Generator().manual_seed(int(seed) * 1_000_003 + i + c * 7_919_000_003),
                    "meta": {"fps_id": item["fps_id"], "motion_bucket_id": item["motion_bucket_id"]},
                    "sample": {"record": i, "clip": c, "path": item["path"], "caption": item["caption"],
                               "fps_id": item["fps_id"], "fps": item["fps"],
                               "motion_bucket_id": item["motion_bucket_id"], "motion": item["motion"],
                               "frame_indices": item["frame_indices"].tolist(),
                               "height": int(pix.shape[-2]), "width": int(pix.shape[-1])}})
                if len(pending) >= encode_batch:
                    flush()
            bar.update(1)
        flush()
        if tensors:
            tmp = out / f"{name}.safetensors.tmp"
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            os.replace(tmp, out / f"{name}.safetensors")
        _write_json_atomic(out / f"{name}.json", {"samples": samples, "failed": failed})
    bar.close()
    shards = [f"shard_{s:05d}" for s in range(num_shards)]
    parts = [json.loads((out / f"{n}.json").read_text()) for n in shards]
    index = dict(meta, shards=shards, num_samples=sum(len(p["samples"]) for p in parts),
                 num_failed=sum(len(p["failed"]) for p in parts))
    _write_json_atomic(out / "index.json", index)
    return out / "index.json"
