"""The video clip dataset and its DataLoader: SVD training batches from real videos.

One item (``VideoClipDataset[SampleKey(index, epoch)]``), the batch contract of
tdd_video/families/base.py for SVD:

* ``pixel_values`` [F, 3, H, W] float in [-1, 1] (H, W = the sample's bucket or the fixed size);
* ``fps_id`` int = round(real clip fps) − 1, real fps = source fps / stride (docs/math.md §1a);
* ``motion_bucket_id`` int: with ``data.motion_bucket: manifest`` the manifest's value, else
  ``default_motion_bucket_id`` = 127; with ``estimate`` the calibrated bucket of the clip's own motion
  (docs/math.md §13), and then also ``motion`` float, the raw motion in frame diagonals per second;
* ``caption`` str, ``path`` str, ``frame_indices`` [F] long, ``fps`` float (the real clip fps).

Decode-time downscaling (``data.decode_resize``, default on): the reader's scaler turns each frame
into the size that covers the sample's bucket (aspect kept, `tdd_video.data.transforms.decode_size`)
while converting it to RGB, and `resize_crop_uint8` (told the size before scaling) crops and flips:
the crop offsets drawn from the rng and the region cropped are those of the full-size frames. Off:
full-size RGB frames, resampled by Pillow.

Motion estimate mode: the motion is measured on the clip as the model sees it (after the crop), by
`tdd_video.data.motion.estimate_motion` inside the loader workers (≈ 3–8 % of the decode + resize
cost). The calibration (raw -> bucket) is resolved once, in `build_video_dataset`, before the
workers start: ``data.motion_percentiles``, else the file ``data.motion_calibration``, else the
dataset's own, read from ``default_calibration_path(data.path)`` when it was computed with the same
settings, otherwise computed (`motion_calibration_for`: the eval clip of every video — centre start,
centre crop — or of ``data.motion_calibration_clips`` evenly spaced ones) and written there.

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
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tdd_video.data.cached import LatentCacheDataset
from tdd_video.data.clips import plan_clip
from tdd_video.data.config import VideoDataConfig
from tdd_video.data.motion import (
    ESTIMATOR,
    MotionCalibration,
    default_calibration_path,
    estimate_motion,
    records_fingerprint,
)
from tdd_video.data.readers import ReaderPool, VideoReadError, open_reader
from tdd_video.data.sampler import SampleKey, ShardedBatchSampler, VideoLoader
from tdd_video.data.sources import VideoRecord, describe_missing, load_records, split_missing
from tdd_video.data.transforms import nearest_bucket, resize_crop_uint8, to_pixels
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
                 bucket_of: list[int] | None = None, calibration: MotionCalibration | None = None,
                 with_motion: bool = False):
        """``calibration``: required with ``cfg.motion_bucket == 'estimate'`` (`build_video_dataset` resolves
        it). ``with_motion``: also measure the raw motion (item key ``motion``) in manifest mode."""
        super().__init__(records, cfg, seed, bucket_of)
        self.estimate = cfg.motion_bucket == "estimate"
        if self.estimate and calibration is None:
            raise ValueError("data.motion_bucket: estimate needs a MotionCalibration (build_video_dataset resolves it)")
        self.calibration = calibration if self.estimate else None
        self.with_motion = self.estimate or with_motion
        self._bad: dict[str, str] = {}
        self._pool: ReaderPool | None = None

    @property
    def pool(self) -> ReaderPool:
        if self._pool is None:  # created lazily: one pool per worker process
            self._pool = ReaderPool(self.cfg.reader, self.cfg.reader_cache_size, self.cfg.reader_threads)
        return self._pool

    def clip(self, index: int, rng: np.random.Generator):
        """(uint8 frames [F, H, W, 3] after resize/crop/flip, ClipPlan) of record ``index`` (raises
        VideoReadError / ClipTooShort)."""
        rec, cfg = self.records[index], self.cfg
        key = str(rec.path)
        if key in self._bad:
            raise VideoReadError(self._bad[key])
        height, width = self.sizes[self.bucket_of[index]]
        cover = (height, width) if cfg.decode_resize else None
        reader = self.pool.get(rec.path, cover)
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
        frames = self.pool.read(rec.path, plan.indices, cover)
        src_hw = (reader.height, reader.width) if cover is not None else None  # size before decode-time scaling
        flip = bool(cfg.train and cfg.flip and rng.random() < 0.5)
        crop = "random" if cfg.train else "center"
        return resize_crop_uint8(frames, height, width, crop, rng, flip, src_hw), plan

    def load(self, index: int, rng: np.random.Generator) -> dict:
        """Load one clip of record ``index`` (raises VideoReadError / ClipTooShort)."""
        rec = self.records[index]
        frames, plan = self.clip(index, rng)
        item = {"pixel_values": to_pixels(frames), "fps_id": plan.fps_id, "motion_bucket_id": 0,
                "caption": rec.caption, "path": str(rec.path), "fps": plan.fps,
                "frame_indices": torch.tensor(plan.indices, dtype=torch.long)}
        if self.with_motion:
            item["motion"] = estimate_motion(frames, plan.fps)
        if self.estimate:
            item["motion_bucket_id"] = self.calibration.bucket(item["motion"])
        else:
            mbi = rec.motion_bucket_id
            item["motion_bucket_id"] = int(mbi if mbi is not None else self.cfg.default_motion_bucket_id)
        return item

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


class _MotionScan(Dataset):
    """Raw motion of the eval clip of each record (None when the video cannot be used)."""

    def __init__(self, dataset: VideoClipDataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, n: int) -> float | None:
        i = self.indices[n]
        try:
            frames, plan = self.dataset.clip(i, np.random.default_rng([self.dataset.seed, 0, i, 0]))
        except self.dataset.skip_errors:
            return None
        return estimate_motion(frames, plan.fps)


def _first(batch):
    return batch


def clip_motions(cfg: VideoDataConfig, records: list[VideoRecord], bucket_of: list[int] | None = None,
                 indices: list[int] | None = None, num_workers: int = 0, progress: bool = False) -> list[float | None]:
    """Raw motion (frame diagonals per second, docs/math.md §13) of the evaluation clip of each record in
    ``indices`` (default: all): centre start (``data.eval_start``), centre crop at the record's bucket, no
    flip. None for a video that cannot be read or is too short. ``num_workers`` > 0 decodes in parallel."""
    from tqdm import tqdm

    eval_cfg = replace(cfg, train=False, flip=False, use_cache=False, motion_bucket="manifest",
                       motion_calibration="", motion_percentiles=None)
    dataset = VideoClipDataset(records, eval_cfg, 0, bucket_of)
    scan = _MotionScan(dataset, list(range(len(records))) if indices is None else list(indices))
    if num_workers > 0 and len(scan) > 1:
        it = DataLoader(scan, batch_size=None, num_workers=min(num_workers, len(scan)), collate_fn=_first)
    else:
        it = (scan[n] for n in range(len(scan)))
    out = list(tqdm(it, total=len(scan), desc="estimating motion", unit="clip", disable=not progress))
    dataset.pool.close()
    return out


def calibration_settings(cfg: VideoDataConfig, all_records: list[VideoRecord]) -> dict:
    """What a dataset's own motion calibration depends on (a stored one is reused only if these match):
    the estimator, the clip sampling, the sizes and how frames are scaled, the subset rule and the list of videos."""
    base = Path(cfg.path).expanduser().absolute()
    base = base if base.is_dir() else base.parent
    paths = [os.path.relpath(r.path, base) for r in all_records]
    return {"estimator": ESTIMATOR, "num_frames": cfg.num_frames, "target_fps": cfg.target_fps, "stride": cfg.stride,
            "short_policy": cfg.short_policy, "min_stride": cfg.min_stride, "eval_start": cfg.eval_start,
            "sizes": [list(s) for s in cfg.sizes()], "decode_resize": cfg.decode_resize,
            "clips": cfg.motion_calibration_clips,
            "num_videos": len(paths), "videos": records_fingerprint(paths)}


def calibration_indices(n: int, clips: int) -> list[int]:
    """Records a dataset calibration measures: all (``clips`` = 0 or ≥ n), else ``clips`` evenly spaced."""
    if clips <= 0 or clips >= n:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / max(clips - 1, 1))) for i in range(clips)})


def compute_calibration(cfg: VideoDataConfig, all_records: list[VideoRecord], records: list[VideoRecord],
                        bucket_of: list[int] | None = None, progress: bool = False) -> MotionCalibration:
    """The dataset's own calibration: quantiles of the raw motion of its clips (docs/math.md §13)."""
    values = clip_motions(cfg, records, bucket_of, calibration_indices(len(records), cfg.motion_calibration_clips),
                          num_workers=cfg.num_workers, progress=progress)
    try:
        return MotionCalibration.from_values(values, settings=calibration_settings(cfg, all_records))
    except ValueError as e:
        raise DataFailureError(f"data.motion_bucket: estimate — {e}") from None


def motion_calibration_for(cfg: VideoDataConfig, all_records: list[VideoRecord], records: list[VideoRecord],
                           bucket_of: list[int] | None = None) -> MotionCalibration | None:
    """The calibration of ``data.motion_bucket: estimate`` (None in manifest mode): ``motion_percentiles``,
    else the file ``motion_calibration``, else the dataset's own — read from `default_calibration_path` if
    it was computed with the same `calibration_settings`, otherwise computed once and stored there."""
    if cfg.motion_bucket != "estimate":
        return None
    if cfg.motion_percentiles is not None:
        return MotionCalibration.from_percentiles(*cfg.motion_percentiles)
    if cfg.motion_calibration:
        if not Path(cfg.motion_calibration).is_file():
            raise ConfigError("data.motion_calibration", f"file not found: {cfg.motion_calibration!r}")
        try:
            return MotionCalibration.load(cfg.motion_calibration)
        except ValueError as e:
            raise ConfigError("data.motion_calibration", str(e)) from None
    path = default_calibration_path(cfg.path)
    settings = calibration_settings(cfg, all_records)
    if path.is_file():
        try:
            stored = MotionCalibration.load(path)
            if stored.settings == settings:
                logger.info("motion calibration: %s (%d clips)", path, stored.num_clips)
                return stored
            logger.warning("motion calibration %s was computed with other data settings; recomputing", path)
        except ValueError as e:
            logger.warning("%s; recomputing", e)
    logger.info("motion calibration: estimating the motion of %d videos (once per dataset; stored in %s)",
                len(calibration_indices(len(records), cfg.motion_calibration_clips)), path)
    cal = compute_calibration(cfg, all_records, records, bucket_of)
    try:
        cal.save(path)
    except OSError as e:
        logger.warning("could not store the motion calibration in %s (%s); it is kept for this run only", path, e)
    return cal


def build_video_dataset(cfg: VideoDataConfig | dict, seed: int = 0) -> VideoClipDataset:
    """Records -> checked (rows pointing nowhere reported) -> bucketed -> motion calibration (estimate
    mode) -> VideoClipDataset."""
    cfg = cfg if isinstance(cfg, VideoDataConfig) else VideoDataConfig.from_dict(cfg)
    cfg.validate()
    if not cfg.path:
        raise ConfigError("data.path", "required: a folder of videos or a manifest (CSV/JSONL) file")
    all_records = records = load_records(cfg.source, cfg.path, cfg.video_root, cfg.extensions)
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
    bucket_of = assign_buckets(records, cfg.sizes(), cfg.reader)
    calibration = motion_calibration_for(cfg, all_records, records, bucket_of)
    return VideoClipDataset(records, cfg, seed, bucket_of, calibration)


def check_cache_motion(cfg: VideoDataConfig, dataset: LatentCacheDataset) -> None:
    """With ``data.motion_bucket: estimate`` the cache must hold estimated buckets, made with the configured
    fixed calibration if one is set (ConfigError otherwise)."""
    if cfg.motion_bucket != "estimate":
        return
    if dataset.motion_mode != "estimate":
        raise ConfigError("data.motion_bucket", f"estimate, but the latent cache {cfg.cache_dir} holds "
                                                "manifest/default buckets; rebuild it with "
                                                "`tdd-cache-video ... --motion-bucket estimate`")
    fixed = None
    if cfg.motion_percentiles is not None:
        fixed = MotionCalibration.from_percentiles(*cfg.motion_percentiles)
    elif cfg.motion_calibration:
        fixed = MotionCalibration.load(cfg.motion_calibration)
    if fixed is not None and dataset.calibration is not None and fixed != dataset.calibration:
        raise ConfigError("data.motion_calibration", f"the latent cache {cfg.cache_dir} was built with another "
                                                     "motion calibration than the one configured")


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
        check_cache_motion(cfg, dataset)
    else:
        dataset = build_video_dataset(cfg, seed)
    sampler = ShardedBatchSampler(len(dataset), cfg.batch_size, dataset.bucket_of, rank, world_size, seed,
                                  shuffle=cfg.train, drop_last=cfg.drop_last)
    return VideoLoader(dataset, sampler, collate, cfg.num_workers, cfg.prefetch_factor, epoch)
