"""The video clip dataset and its DataLoader: SVD training batches from real videos.

One item (``VideoClipDataset[SampleKey(index, epoch)]``), the batch contract of
tdd_video/families/base.py for SVD:

* ``pixel_values`` [F, 3, H, W] float in [-1, 1] (H, W = the sample's bucket or the fixed size);
* ``fps_id`` int = round(real clip fps) − 1, real fps = source fps / stride (docs/math.md §1a);
* ``motion_bucket_id`` int (manifest value, else ``default_motion_bucket_id`` = 127);
* ``caption`` str, ``path`` str, ``frame_indices`` [F] long, ``fps`` float (the real clip fps).

Randomness (start frame, crop, flip, replacement of failed samples) comes from
``np.random.default_rng([seed, epoch, index, attempt])`` — independent of worker and rank.

Robustness: an unreadable file (missing, zero-byte, corrupt, truncated, audio-only, no frame
rate) or a too-short video (per ``short_policy``) is counted, logged once per path (per worker
process), and replaced by another sample of the same bucket drawn from the same rng. When more
than ``max_failure_fraction`` of the attempts of a worker failed (checked once it made
``failure_check_after`` attempts), loading stops with DataFailureError.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from tdd_video.data.cached import LatentCacheDataset
from tdd_video.data.clips import plan_clip
from tdd_video.data.config import VideoDataConfig
from tdd_video.data.readers import ReaderPool, VideoReadError, open_reader
from tdd_video.data.sampler import SampleKey, ShardedBatchSampler, VideoLoader
from tdd_video.data.sources import VideoRecord, describe_missing, load_records, split_missing
from tdd_video.data.transforms import nearest_bucket, resize_crop
from tdd_video.errors import ConfigError

logger = logging.getLogger("tdd_video.data")

MAX_ATTEMPTS = 32


class DataFailureError(RuntimeError):
    """Too many samples failed to load; the message gives counts and example paths."""


class ClipTooShort(Exception):
    pass


@dataclass
class FailureStats:
    attempts: int = 0
    failures: Counter = field(default_factory=Counter)   # reason kind -> count
    examples: dict = field(default_factory=dict)         # path -> reason (first occurrence)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def fraction(self) -> float:
        return self.failed / max(1, self.attempts)


class SkippingDataset(Dataset):
    """Records grouped in aspect buckets; a sample that fails to load with one of `skip_errors` is
    replaced by a seeded random record of the same bucket (up to MAX_ATTEMPTS), and the failure is
    counted by the subclass's `_record_failure`. Subclasses implement `load(index, rng)`.
    Index with SampleKey(index, epoch) (or a plain int = epoch 0)."""

    skip_errors: tuple[type[Exception], ...] = ()

    def __init__(self, records: list, cfg, seed: int = 0, bucket_of: list[int] | None = None):
        self.records, self.cfg, self.seed = records, cfg, int(seed)
        self.sizes = cfg.sizes()
        self.bucket_of = bucket_of if bucket_of is not None else [0] * len(records)
        self.members: dict[int, list[int]] = {}
        for i, b in enumerate(self.bucket_of):
            self.members.setdefault(b, []).append(i)
        self.stats = FailureStats()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key) -> dict:
        index, epoch = (key.index, key.epoch) if isinstance(key, SampleKey) else (int(key), 0)
        candidate = index
        for attempt in range(MAX_ATTEMPTS):
            rng = np.random.default_rng([self.seed, epoch, index, attempt])
            if attempt > 0:
                same_bucket = self.members[self.bucket_of[index]]
                candidate = same_bucket[int(rng.integers(0, len(same_bucket)))]
            self.stats.attempts += 1
            try:
                return self.load(candidate, rng)
            except self.skip_errors as e:
                self._record_failure(self.records[candidate], e)
        raise DataFailureError(f"{MAX_ATTEMPTS} attempts in a row failed for sample {index}; "
                               f"failures so far: {dict(self.stats.failures)}; e.g. "
                               f"{list(self.stats.examples.items())[:3]}")


class VideoClipDataset(SkippingDataset):
    """Map-style dataset of clips; index it with SampleKey(index, epoch) (or a plain int = epoch 0)."""

    skip_errors = (VideoReadError, ClipTooShort)

    def __init__(self, records: list[VideoRecord], cfg: VideoDataConfig, seed: int = 0,
                 bucket_of: list[int] | None = None):
        super().__init__(records, cfg, seed, bucket_of)
        self._bad: dict[str, str] = {}
        self._pool: ReaderPool | None = None

    @property
    def pool(self) -> ReaderPool:
        if self._pool is None:  # created lazily: one pool per worker process
            self._pool = ReaderPool(self.cfg.reader, self.cfg.reader_cache_size, self.cfg.reader_threads)
        return self._pool

    def load(self, index: int, rng: np.random.Generator) -> dict:
        """Load one clip of record ``index`` (raises VideoReadError / ClipTooShort)."""
        rec, cfg = self.records[index], self.cfg
        key = str(rec.path)
        if key in self._bad:
            raise VideoReadError(self._bad[key])
        reader = self.pool.get(rec.path)
        src_fps = rec.fps or reader.fps or cfg.default_fps
        if not src_fps:
            raise VideoReadError(f"{rec.path}: no frame rate in the container (set data.default_fps "
                                 "or a manifest 'fps' column)")
        plan = plan_clip(reader.num_frames, src_fps, cfg.num_frames, target_fps=cfg.target_fps,
                         stride=cfg.stride, start_sec=rec.start, end_sec=rec.end,
                         start_mode="random" if cfg.train else cfg.eval_start, rng=rng,
                         short_policy=cfg.short_policy, min_stride=cfg.min_stride)
        if plan is None:
            raise ClipTooShort(f"{rec.path}: too short for {cfg.num_frames} frames "
                               f"({reader.num_frames} frames at {src_fps:g} fps, policy {cfg.short_policy})")
        frames = self.pool.read(rec.path, plan.indices)
        height, width = self.sizes[self.bucket_of[index]]
        flip = bool(cfg.train and cfg.flip and rng.random() < 0.5)
        pixels = resize_crop(frames, height, width, "random" if cfg.train else "center", rng, flip)
        mbi = rec.motion_bucket_id if rec.motion_bucket_id is not None else cfg.default_motion_bucket_id
        return {"pixel_values": pixels, "fps_id": plan.fps_id, "motion_bucket_id": int(mbi),
                "caption": rec.caption, "path": key, "fps": plan.fps,
                "frame_indices": torch.tensor(plan.indices, dtype=torch.long)}

    def _record_failure(self, rec: VideoRecord, error: Exception) -> None:
        kind = "too_short" if isinstance(error, ClipTooShort) else "unreadable"
        self.stats.failures[kind] += 1
        key = str(rec.path)
        if key not in self.stats.examples:
            self.stats.examples[key] = str(error)
            logger.warning("skipping video (%s): %s", kind, error)
        if kind == "unreadable":
            self._bad[key] = str(error)
            if self._pool is not None:
                self._pool.evict(key)
        s, cfg = self.stats, self.cfg
        if s.attempts >= cfg.failure_check_after and s.fraction() > cfg.max_failure_fraction:
            raise DataFailureError(
                f"{s.failed} of {s.attempts} samples failed to load ({s.fraction():.0%} > "
                f"data.max_failure_fraction = {cfg.max_failure_fraction:.0%}): {dict(s.failures)}. "
                f"Examples: " + "; ".join(f"{p}: {r}" for p, r in list(s.examples.items())[:5])
                + ". Run `python -m tdd_video.data.check --data ...` for a full report.")


def collate(items: list[dict]) -> dict:
    """Stack a list of items: tensors -> stacked, ints -> LongTensor, floats -> FloatTensor,
    strings -> list[str]."""
    batch = {}
    for key in items[0]:
        values = [it[key] for it in items]
        first = values[0]
        if isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, (bool, np.bool_)):
            batch[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, (int, np.integer)):
            batch[key] = torch.tensor(values, dtype=torch.long)
        elif isinstance(first, (float, np.floating)):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = values
    return batch


def assign_buckets(records: list[VideoRecord], sizes: list[tuple[int, int]], backend: str = "auto") -> list[int]:
    """Bucket index per record: nearest aspect. Uses manifest width/height, else probes the file
    (unreadable files get bucket 0 and fail later, counted, at load time)."""
    if len(sizes) == 1:
        return [0] * len(records)
    out = []
    for rec in records:
        h, w = rec.height, rec.width
        if not (h and w):
            try:
                reader = open_reader(rec.path, backend)
                h, w = reader.height, reader.width
                reader.close()
            except VideoReadError:
                h, w = sizes[0]
        out.append(nearest_bucket(h, w, sizes))
    return out


def build_video_dataset(cfg: VideoDataConfig | dict, seed: int = 0) -> VideoClipDataset:
    """Records -> checked (rows pointing nowhere reported) -> bucketed -> VideoClipDataset."""
    cfg = cfg if isinstance(cfg, VideoDataConfig) else VideoDataConfig.from_dict(cfg)
    cfg.validate()
    if not cfg.path:
        raise ConfigError("data.path", "required: a folder of videos or a manifest (CSV/JSONL) file")
    records = load_records(cfg.source, cfg.path, cfg.video_root, cfg.extensions)
    if not records:
        raise DataFailureError(f"data source {cfg.path} has no videos")
    if cfg.check_files:
        present, missing = split_missing(records)
        if missing:
            logger.warning(describe_missing(missing))
            if len(missing) / len(records) > cfg.max_failure_fraction:
                raise DataFailureError(describe_missing(missing) + f" — more than data.max_failure_fraction "
                                       f"= {cfg.max_failure_fraction:.0%} of {len(records)} rows")
        records = present
        if not records:
            raise DataFailureError(f"none of the files listed by {cfg.path} exist")
    return VideoClipDataset(records, cfg, seed, assign_buckets(records, cfg.sizes(), cfg.reader))


def build_video_loader(cfg: VideoDataConfig | dict, rank: int = 0, world_size: int = 1, seed: int = 0,
                       epoch: int = 0) -> VideoLoader:
    """The training/eval loader for this rank: raw videos, or the latent cache if ``use_cache``.

    Seeded; rank r of ``world_size`` and each of its workers see disjoint batches; the returned
    VideoLoader has ``state_dict()`` / ``load_state_dict()`` for exact resume.
    """
    cfg = cfg if isinstance(cfg, VideoDataConfig) else VideoDataConfig.from_dict(cfg)
    cfg.validate()
    if cfg.use_cache:
        dataset = LatentCacheDataset(cfg.cache_dir)
    else:
        dataset = build_video_dataset(cfg, seed)
    sampler = ShardedBatchSampler(len(dataset), cfg.batch_size, dataset.bucket_of, rank, world_size, seed,
                                  shuffle=cfg.train, drop_last=cfg.drop_last)
    return VideoLoader(dataset, sampler, collate, cfg.num_workers, cfg.prefetch_factor, epoch)
