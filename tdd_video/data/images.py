"""Image-text data for the SDXL family: folders, CSV/JSONL manifests and webdataset .tar shards.

Sources (``data.source``; ``auto`` picks by path):
* **folder**: every image below the folder, caption in a sibling ``name.txt`` (tdd_video.data.sources);
* **manifest**: CSV/TSV/JSONL with column ``path`` (relative to the manifest) and ``caption``;
* **webdataset**: .tar shards (a folder of them, a glob, ``shard-{0000..0099}.tar``), see data/webdataset.py.

One item, in the SDXL batch contract of tdd_video/families/base.py:
* ``pixel_values`` [3, H, W] in [-1, 1] — aspect-preserving antialiased resize so the image covers
  (H, W), then a random crop (training) or the centre crop (``train: false``), optional flip;
* ``original_size`` [2] int (h, w) of the decoded source image, BEFORE any resizing;
* ``crop_coords`` [2] int (top, left) of the crop IN THE RESIZED FRAME (the convention of SDXL's
  paper and of diffusers' SDXL training script: the image is first scaled so it covers the target,
  then cropped; these are the crop's pixel offsets in that scaled image; with a flip, left is mirrored:
  resized_w − W − left);
* ``target_size`` [2] int (H, W); ``caption`` str; ``path`` str.

Robustness (same policy as the video loader, tdd_video.data.dataset): an unreadable image (missing,
zero-byte, corrupt, truncated, not an image) or one smaller than ``min_side`` is counted per reason,
logged once per path, and replaced by another sample of the same bucket drawn from the sample's rng;
DataFailureError once more than ``max_failure_fraction`` of the attempts failed. Randomness comes from
``np.random.default_rng([seed, epoch, index, attempt])``: independent of worker and rank, exact resume.
"""
from __future__ import annotations

import copy
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tdd_video.data import sources
from tdd_video.data.cached import ImageLatentCacheDataset
from tdd_video.data.config import DataConfig, check_choice
from tdd_video.data.dataset import DataFailureError, SkippingDataset, collate
from tdd_video.data.sampler import ShardedBatchSampler, VideoLoader
from tdd_video.data.transforms import crop_offsets, nearest_bucket, resize_crop
from tdd_video.data.webdataset import ShardReader, index_shards
from tdd_video.errors import ConfigError, check_range

logger = logging.getLogger("tdd_video.data")
IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".bmp"]
SOURCES = ("auto", "folder", "manifest", "webdataset")


@dataclass
class ImageDataConfig(DataConfig):
    """The ``data:`` section of an image (SDXL) recipe. Sizes are (height, width) in pixels."""

    source: str = "auto"                 # auto | folder | manifest | webdataset
    path: str = ""                       # folder, manifest file, shard folder/glob, or "synthetic" (toy data)
    height: int = 1024
    width: int = 1024
    buckets: list | None = None          # [[h, w], ...] aspect buckets (nearest aspect, log space)
    flip: bool = False
    train: bool = True                   # random crop (+flip) vs centre crop
    min_side: int = 0                    # skip images whose shorter side is smaller (0 = keep all)
    batch_size: int = 1
    num_workers: int = 2
    prefetch_factor: int = 2
    shard_cache_size: int = 4            # open .tar files per worker
    max_failure_fraction: float = 0.1
    failure_check_after: int = 50
    drop_last: bool = True
    check_files: bool = True
    use_cache: bool = False              # read the latent + text-embedding cache
                                         # (tdd_video.data.image_cache, tdd-cache-images)
    cache_dir: str = ""
    synthetic_num: int = 512             # path: synthetic → this many toy captioned images (seeded by run.seed)
    extensions: list = field(default_factory=lambda: list(IMAGE_EXTENSIONS))

    def validate(self) -> "ImageDataConfig":
        """Raise ConfigError for the first bad value (key named, allowed range given)."""
        check_choice("data.source", self.source, SOURCES)
        self.check_sizes()
        self.check_cache("build one with `tdd-cache-images`")
        check_range("data.min_side", self.min_side, 0, 100000)
        self.check_loader()
        check_range("data.shard_cache_size", self.shard_cache_size, 1, 1024)
        check_range("data.synthetic_num", self.synthetic_num, 1, 10**7)
        return self

    def check_paths(self) -> None:
        """The files a run will read exist (see VideoDataConfig.check_paths); '' / 'synthetic' = toy images.
        Webdataset brace patterns ('shards/{0000..0099}.tar') and globs are checked by their folder."""
        from pathlib import Path
        if self.use_cache:
            self.check_cache_dir()
            return
        if self.path in ("", "synthetic"):
            return
        where = Path(self.path.split("{")[0]).parent if ("{" in self.path or "*" in self.path) else Path(self.path)
        if not where.exists():
            raise ConfigError("data.path", f"not found: {self.path!r}")


@dataclass
class ImageRecord:
    """One image: a file `path`, or a tar `member` (then path = 'shard.tar::member')."""

    path: str
    caption: str = ""
    member: object = None                # webdataset.TarMember or None
    height: int | None = None
    width: int | None = None


class ImageReadError(Exception):
    """An image cannot be decoded (or is too small); `kind` says which."""

    def __init__(self, msg: str, kind: str = "unreadable"):
        super().__init__(msg)
        self.kind = kind


def load_image_records(cfg: ImageDataConfig) -> list[ImageRecord]:
    """Records of cfg's source; missing files reported (and refused above max_failure_fraction)."""
    if not cfg.path:
        raise ConfigError("data.path", "required: a folder of images, a manifest (CSV/JSONL) or .tar shards")
    p = Path(cfg.path).expanduser()
    kind = cfg.source
    if kind == "auto":
        kind = "folder" if p.is_dir() and not any(p.rglob("*.tar")) else \
            "webdataset" if (p.is_dir() or p.suffix == ".tar" or any(c in cfg.path for c in "*?{")) else "manifest"
    if kind == "webdataset":
        items, info = index_shards(cfg.path)
        if info["keys_without_image"]:
            logger.warning("%d shard keys have no image and were skipped", info["keys_without_image"])
        return [ImageRecord(f"{m.shard}::{m.name}", cap, m) for m, cap in items]
    if not p.exists():
        raise ConfigError("data.path", f"not found: {p}")
    raws = sources.load_folder(p, cfg.extensions) if kind == "folder" else sources.load_manifest(p)
    if cfg.check_files:
        present, missing = sources.split_missing(raws)
        if missing:
            msg = sources.describe_missing(missing)
            logger.warning(msg)
            if len(missing) / len(raws) > cfg.max_failure_fraction:
                raise DataFailureError(f"{msg} — more than data.max_failure_fraction = "
                                       f"{cfg.max_failure_fraction:.0%} of {len(raws)} rows")
        raws = present
    return [ImageRecord(str(r.path), r.caption, None, r.height, r.width) for r in raws]


def decode_image(data: bytes | str, name: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB (grey, palette, RGBA→RGB over white is NOT done: alpha is dropped)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from None


def resize_crop_image(img: np.ndarray, height: int, width: int, train: bool, rng: np.random.Generator,
                      flip: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """(pixels [3, height, width] in [-1, 1], (top, left) crop offsets in the resized frame).

    The pixels are exactly tdd_video.data.transforms.resize_crop's; the offsets are the ones it draws
    (same formula, same rng stream, read from a copy of the rng before the call)."""
    h, w = img.shape[:2]
    scale = max(height / h, width / w)
    new_h = max(height, int(math.ceil(h * scale - 1e-6)))
    new_w = max(width, int(math.ceil(w * scale - 1e-6)))
    mode = "random" if train else "center"
    top, left = crop_offsets(new_h, new_w, height, width, mode, copy.deepcopy(rng))
    pixels = resize_crop(img[None], height, width, mode, rng, flip)[0]
    if flip:
        left = new_w - width - left
    return pixels, (top, left)


class ImageTextDataset(SkippingDataset):
    """Map-style dataset of image-text pairs; index with SampleKey(index, epoch) (or an int = epoch 0)."""

    skip_errors = (ImageReadError,)

    def __init__(self, records: list[ImageRecord], cfg: ImageDataConfig, seed: int = 0,
                 bucket_of: list[int] | None = None):
        super().__init__(records, cfg, seed, bucket_of)
        self._bad: dict[str, tuple[str, str]] = {}
        self.shards = ShardReader(cfg.shard_cache_size)

    def read(self, rec: ImageRecord) -> np.ndarray:
        if rec.path in self._bad:                 # known bad: fail fast with the same reason and kind
            raise ImageReadError(*self._bad[rec.path])
        if rec.member is not None:
            try:
                data = self.shards.read(rec.member)
            except OSError as e:
                raise ImageReadError(f"{rec.path}: {e}") from None
            return decode_image(data, rec.path)
        if not Path(rec.path).is_file():
            raise ImageReadError(f"{rec.path}: file not found")
        return decode_image(rec.path, rec.path)

    def load(self, index: int, rng: np.random.Generator) -> dict:
        rec = self.records[index]
        img = self.read(rec)
        h, w = img.shape[:2]
        if min(h, w) < self.cfg.min_side:
            raise ImageReadError(f"{rec.path}: {h}x{w} is smaller than data.min_side = {self.cfg.min_side}",
                                 kind="too_small")
        height, width = self.sizes[self.bucket_of[index]]
        flip = bool(self.cfg.train and self.cfg.flip and rng.random() < 0.5)
        pixels, (top, left) = resize_crop_image(img, height, width, self.cfg.train, rng, flip)
        return {"pixel_values": pixels, "original_size": torch.tensor([h, w]),
                "crop_coords": torch.tensor([top, left]), "target_size": torch.tensor([height, width]),
                "caption": rec.caption, "path": rec.path}

    def _record_failure(self, rec: ImageRecord, error: ImageReadError) -> None:
        s, cfg = self.stats, self.cfg
        s.failures[error.kind] += 1
        if rec.path not in s.examples:
            s.examples[rec.path] = str(error)
            logger.warning("skipping image (%s): %s", error.kind, error)
        self._bad.setdefault(rec.path, (str(error), error.kind))
        if s.attempts >= cfg.failure_check_after and s.fraction() > cfg.max_failure_fraction:
            raise DataFailureError(
                f"{s.failed} of {s.attempts} images failed to load ({s.fraction():.0%} > data.max_failure_fraction "
                f"= {cfg.max_failure_fraction:.0%}): {dict(s.failures)}. Examples: "
                + "; ".join(f"{p}: {r}" for p, r in list(s.examples.items())[:5]))


def assign_image_buckets(records: list[ImageRecord], sizes: list[tuple[int, int]]) -> list[int]:
    """Nearest-aspect bucket per record (manifest width/height, else the image header; unreadable → 0)."""
    if len(sizes) == 1:
        return [0] * len(records)
    from PIL import Image

    reader, out = ShardReader(), []
    for r in records:
        h, w = r.height, r.width
        if not (h and w):
            try:
                src = io.BytesIO(reader.read(r.member)) if r.member is not None else r.path
                with Image.open(src) as im:
                    w, h = im.size
            except Exception:   # noqa: BLE001 - any failure is counted later, at load time
                h, w = sizes[0]
        out.append(nearest_bucket(h, w, sizes))
    return out


def build_image_dataset(cfg: ImageDataConfig | dict, seed: int = 0) -> ImageTextDataset:
    cfg = cfg if isinstance(cfg, ImageDataConfig) else ImageDataConfig.from_dict(cfg)
    cfg.validate()
    records = load_image_records(cfg)
    if not records:
        raise DataFailureError(f"data source {cfg.path} has no images")
    return ImageTextDataset(records, cfg, seed, assign_image_buckets(records, cfg.sizes()))


def build_image_loader(cfg: ImageDataConfig | dict, rank: int = 0, world_size: int = 1, seed: int = 0,
                       epoch: int = 0) -> VideoLoader:
    """Seeded, rank-sharded, bucket-aware, resumable loader (state_dict/load_state_dict) of SDXL batches:
    raw images, or the latent + text-embedding cache when ``use_cache``."""
    c = (cfg if isinstance(cfg, ImageDataConfig) else ImageDataConfig.from_dict(cfg)).validate()
    if c.use_cache:
        dataset = ImageLatentCacheDataset(c.cache_dir)
    else:
        dataset = build_image_dataset(c, seed)
    sampler = ShardedBatchSampler(len(dataset), c.batch_size, dataset.bucket_of, rank, world_size, seed,
                                  shuffle=c.train, drop_last=c.drop_last)
    return VideoLoader(dataset, sampler, collate, c.num_workers, c.prefetch_factor, epoch)
