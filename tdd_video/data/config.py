"""`VideoDataConfig`: the ``data:`` section of a video training recipe (a plain dataclass).

Build it from a dict (e.g. the YAML ``data:`` mapping) with ``VideoDataConfig.from_dict(d)``,
which rejects unknown keys by name; ``validate()`` raises ConfigError naming the key and its
allowed range or values. ``DataConfig`` (and ``check_choice`` / ``check_size``) hold what it
shares with the image section, ``tdd_video.data.images.ImageDataConfig``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tdd_video.errors import ConfigError, check_range
from tdd_video.typed import build_section

SOURCE_KINDS = ("auto", "folder", "manifest", "webvid")
READERS = ("auto", "decord", "pyav", "imageio")
SHORT_POLICIES = ("skip", "reduce_stride")
EVAL_STARTS = ("center", "zero")
MOTION_BUCKETS = ("manifest", "estimate")


def check_choice(key: str, value, allowed) -> None:
    """Raise ConfigError on `key` unless `value` is one of `allowed` (listed in the message)."""
    if value not in allowed:
        raise ConfigError(key, f"got {value!r}, allowed values are {list(allowed)}")


def check_size(key: str, value, what: str | None = None) -> None:
    """A pixel size: in [8, 8192] and a multiple of 8 (the VAE factor); `what` is shown instead of value."""
    check_range(key, value, 8, 8192)
    if int(value) % 8:
        raise ConfigError(key, f"got {value if what is None else what}, must be a multiple of 8 (the VAE factor)")


class DataConfig:
    """What the video and the image ``data:`` sections share: dict round trip, target sizes and the
    checks of the keys both have (sizes/buckets, latent cache, loader settings).

    Subclasses are dataclasses with the fields height, width, buckets, use_cache, cache_dir,
    batch_size, num_workers, prefetch_factor, max_failure_fraction and failure_check_after."""

    @classmethod
    def from_dict(cls, d: dict | None):
        """Construct from a mapping: unknown keys and values of the wrong type raise ConfigError naming
        the key (`validate()` checks ranges and choices)."""
        if d is not None and not isinstance(d, dict):
            raise ConfigError("data", f"expected a mapping of keys, got {type(d).__name__}")
        return build_section(cls, dict(d or {}), "data", validate=False)

    def to_dict(self) -> dict:
        return asdict(self)

    def sizes(self) -> list[tuple[int, int]]:
        """Target sizes (h, w): the buckets, or the single (height, width)."""
        if self.buckets:
            return [(int(h), int(w)) for h, w in self.buckets]
        return [(int(self.height), int(self.width))]

    def check_sizes(self) -> None:
        """data.height / data.width, and data.buckets (null, or a non-empty list of [h, w] pairs)."""
        for key in ("height", "width"):
            check_size(f"data.{key}", getattr(self, key))
        if self.buckets is None:
            return
        if not isinstance(self.buckets, (list, tuple)) or not self.buckets:
            raise ConfigError("data.buckets", "must be a non-empty list of [height, width] pairs or null")
        for i, pair in enumerate(self.buckets):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConfigError(f"data.buckets[{i}]", f"must be [height, width], got {pair!r}")
            for v in pair:
                check_size(f"data.buckets[{i}]", v, what=repr(pair))

    def check_cache(self, how: str = "") -> None:
        """data.cache_dir is required with data.use_cache; `how` tells how to build one."""
        if self.use_cache and not self.cache_dir:
            raise ConfigError("data.cache_dir", "required when data.use_cache is true" + (f" ({how})" if how else ""))

    def check_cache_dir(self) -> None:
        """With use_cache: cache_dir holds a finished cache (its index.json)."""
        from pathlib import Path
        if self.use_cache and not (Path(self.cache_dir) / "index.json").is_file():
            raise ConfigError("data.cache_dir", f"{self.cache_dir!r} is not a finished latent cache (no index.json); "
                                                "build it first (tdd-cache-video / tdd-cache-images)")

    def check_loader(self) -> None:
        """Batch size, worker settings and the failure budget shared by the video and image loaders."""
        check_range("data.batch_size", self.batch_size, 1, 100000)
        check_range("data.num_workers", self.num_workers, 0, 256)
        check_range("data.prefetch_factor", self.prefetch_factor, 1, 64)
        check_range("data.max_failure_fraction", self.max_failure_fraction, 0.0, 1.0)
        check_range("data.failure_check_after", self.failure_check_after, 1, 10**9)


@dataclass
class VideoDataConfig(DataConfig):
    """Video clip data settings. Sizes are (height, width) in pixels."""

    source: str = "auto"                 # auto | folder | manifest (CSV/JSONL) | webvid (CSV)
    path: str = ""                       # folder of videos, or the manifest / WebVid CSV file
    video_root: str = ""                 # webvid: local folder holding the videos (default: CSV's folder)
    num_frames: int = 14                 # frames per clip (SVD: 14, SVD-xt: 25)
    target_fps: float | None = 7.0       # sample at this rate (stride = round(src_fps / target_fps))
    stride: int | None = None            # fixed frame stride instead of target_fps (set target_fps: null)
    height: int = 320
    width: int = 576
    buckets: list[list[int]] | None = None  # [[h, w], ...] multi-resolution buckets (overrides height/width)
    flip: bool = False                   # random horizontal flip (train only)
    train: bool = True                   # train: random start/crop/flip; eval: fixed start, centre crop
    eval_start: str = "center"           # eval clip start: centre of the video or its first frame
    short_policy: str = "reduce_stride"  # too-short videos: skip | reduce_stride (down to min_stride)
    min_stride: int = 1
    batch_size: int = 1
    num_workers: int = 2
    prefetch_factor: int = 2
    reader: str = "auto"                 # auto = decord with PyAV fallback (and for GIF)
    reader_cache_size: int = 4           # open readers kept per worker (LRU)
    reader_threads: int = 1              # decoder threads per worker (0 = library default: all cores)
    # scale frames at decode time (the decoder's scaler, bilinear, antialiased) to the size that covers the
    # target, then crop; false = full-size RGB frames resized by Pillow (slower at HD sizes, same crop)
    decode_resize: bool = True
    max_failure_fraction: float = 0.1    # stop if more than this fraction of samples fail
    failure_check_after: int = 50        # ... once at least this many samples were attempted
    default_motion_bucket_id: int = 127  # docs/math.md §1a: SVD-xt 1.1 fine-tune used 127
    # motion_bucket_id of a clip (docs/math.md §13): manifest = the manifest's value, else the default;
    # estimate = from the clip's frames (optical flow, tdd_video.data.motion), mapped to 0..255 by a calibration
    motion_bucket: str = "manifest"
    motion_calibration: str = ""         # estimate: fixed calibration JSON; "" = the dataset's own (computed once
    #                                      and stored next to the data, see tdd_video.data.motion)
    motion_percentiles: list[float] | None = None  # estimate: fixed calibration, raw motion (frame diagonals
    #                                      per second) at the 5th / 50th / 95th percentiles -> 12.75 / 127.5 / 242.25
    motion_calibration_clips: int = 0    # computing the dataset's calibration: 0 = every video, N = N evenly spaced
    default_fps: float | None = None     # used only when a container reports no frame rate
    drop_last: bool = True
    check_files: bool = True             # report manifest rows pointing nowhere at start-up
    use_cache: bool = False              # read the latent cache in cache_dir instead of videos
    cache_dir: str = ""
    extensions: list[str] = field(default_factory=lambda: [".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif", ".m4v"])

    def validate(self) -> "VideoDataConfig":
        """Raise ConfigError for the first bad value (key named, allowed range given)."""
        check_choice("data.source", self.source, SOURCE_KINDS)
        check_choice("data.reader", self.reader, READERS)
        check_choice("data.short_policy", self.short_policy, SHORT_POLICIES)
        check_choice("data.eval_start", self.eval_start, EVAL_STARTS)
        # an empty data.path is allowed here (the trainer maps "" / "synthetic" to generated clips);
        # build_video_dataset refuses it.
        self.check_cache()
        check_range("data.num_frames", self.num_frames, 1, 1024)
        if (self.target_fps is None) == (self.stride is None):
            raise ConfigError("data.target_fps", "set exactly one of data.target_fps and data.stride "
                              f"(got target_fps={self.target_fps!r}, stride={self.stride!r})")
        if self.target_fps is not None:
            check_range("data.target_fps", self.target_fps, 0, 240, lo_open=True)
        if self.stride is not None:
            check_range("data.stride", self.stride, 1, 1000)
        check_range("data.min_stride", self.min_stride, 1, 1000)
        self.check_sizes()
        self.check_loader()
        check_range("data.reader_cache_size", self.reader_cache_size, 1, 1024)
        check_range("data.reader_threads", self.reader_threads, 0, 256)
        if not isinstance(self.decode_resize, bool):
            raise ConfigError("data.decode_resize", f"got {self.decode_resize!r}, expected true or false")
        check_range("data.default_motion_bucket_id", self.default_motion_bucket_id, 0, 1023)
        self.check_motion()
        if self.default_fps is not None:
            check_range("data.default_fps", self.default_fps, 0, 1000, lo_open=True)
        return self

    def check_motion(self) -> None:
        """data.motion_bucket and its calibration keys (docs/math.md §13)."""
        check_choice("data.motion_bucket", self.motion_bucket, MOTION_BUCKETS)
        check_range("data.motion_calibration_clips", self.motion_calibration_clips, 0, 10**9)
        if self.motion_bucket != "estimate":
            for key in ("motion_calibration", "motion_percentiles"):
                if getattr(self, key):
                    raise ConfigError(f"data.{key}", "only used with data.motion_bucket: estimate "
                                                     f"(got data.motion_bucket: {self.motion_bucket})")
            return
        if self.motion_calibration and self.motion_percentiles is not None:
            raise ConfigError("data.motion_percentiles", "set data.motion_calibration (a file) or "
                                                         "data.motion_percentiles, not both")
        if self.motion_percentiles is not None:
            p = self.motion_percentiles
            if len(p) != 3 or min(p) < 0 or not p[0] <= p[1] <= p[2] or p[2] <= p[0]:
                raise ConfigError("data.motion_percentiles", f"got {p!r}: need [p5, p50, p95], raw motion "
                                  "(frame diagonals per second) >= 0, non-decreasing, p95 > p5")

    def check_paths(self) -> None:
        """The files a run will read exist (called before any model is built; not by `validate`, so recipes
        for other machines still load): data.path (unless 'synthetic' or a latent cache), cache_dir and a
        fixed data.motion_calibration file."""
        from pathlib import Path
        if self.motion_bucket == "estimate" and self.motion_calibration and not Path(self.motion_calibration).is_file():
            raise ConfigError("data.motion_calibration", f"file not found: {self.motion_calibration!r} (write one "
                                                         "with `tdd-check-data --motion --write-calibration FILE`)")
        if self.use_cache:
            self.check_cache_dir()
            return
        if not self.path:
            raise ConfigError("data.path", "required: a folder of videos, a CSV/JSONL manifest, a WebVid CSV, or "
                                           "'synthetic' (generated toy clips)")
        if self.path != "synthetic" and not Path(self.path).exists():
            raise ConfigError("data.path", f"not found: {self.path!r}")
        if self.video_root and not Path(self.video_root).is_dir():
            raise ConfigError("data.video_root", f"folder not found: {self.video_root!r}")
