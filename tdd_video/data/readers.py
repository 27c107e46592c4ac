"""Video readers with exact frame indices: decord (default), PyAV (fallback), imageio (bench only).

``ReaderPool`` is what a dataset worker holds: a small LRU of open readers (one pool per worker
process, created lazily after the fork, so readers are never shared across processes). With
``backend='auto'`` it opens decord, and falls back to PyAV when decord is not installed, when the
file is a GIF (decord cannot read GIF), or when decord fails to open or to decode the file.

Every reader returns uint8 frames ``[F, H, W, 3]`` for the requested 0-based indices (exact:
index i is the i-th frame in presentation order) and reports the container's real frame rate.

Frames come out in *display* orientation, whichever reader opened the file: a phone video whose
stream carries a display matrix (rotation by a multiple of 90 degrees, possibly mirrored) or an
old-style ``rotate`` tag is rotated/flipped the way ffmpeg shows it, and ``height``/``width``
describe the displayed frame (e.g. a 1920x1080 coded stream with rotation 90 reports 1080 wide,
1920 high). decord applies the rotation part itself (the rest, the mirror of a mirrored MP4/MOV
matrix, is applied here); PyAV applies the whole matrix (see "display orientation" below).

Decode-time downscaling (``data.decode_resize``): a reader opened with ``cover=(h, w)`` returns frames
already scaled, aspect kept, to the size that covers ``h`` x ``w`` in display orientation
(`tdd_video.data.transforms.decode_size`, e.g. a 1920x1080 stream -> 576x324 for 320x576; frames not
larger than that are returned at their own size), by the decoder's own scaler, which converts to RGB
in the same pass: swscale's bilinear filter, widened by the downscale factor (antialiased, like the
Pillow resample of `resize_crop_uint8`). decord scales in its filter graph (``transpose`` for the
rotation, then ``scale=w:h``, whose default flags are ``bilinear`` in the FFmpeg 4.1 decord 0.6
bundles), so it must know the displayed size when it opens the file: from the container header (PyAV
stream + MP4/MOV matrix or ``rotate`` tag, no decoding), else from frame 0 decoded by an unscaled
reader. PyAV scales each frame with ``VideoReformatter.reformat(width=, height=, format='rgb24',
interpolation=BILINEAR)`` at its coded orientation (the display size with rows and columns swapped
for a quarter turn) and then orients it. ``height``/``width`` stay the displayed size of the video;
``frame_hw`` is the size of the frames `get_frames` returns. The imageio reader has no scaler: it
ignores ``cover``.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from tdd_video.data.orientation import decord_leftover, display_hw, orient
from tdd_video.data.pyav_reader import PyAVReader, header_display_hw, open_container  # noqa: F401 (re-exported)
from tdd_video.data.reader_base import VideoReadError, _LazySizeReader, _Reader
from tdd_video.data.transforms import decode_size

logger = logging.getLogger("tdd_video.data")

try:  # decord has no wheels on some platforms (e.g. aarch64)
    import decord as _decord
except Exception:  # pragma: no cover - depends on the platform
    _decord = None

BACKENDS = ("auto", "decord", "pyav", "imageio")


def decord_available() -> bool:
    return _decord is not None


def decord_width_ok(width: int) -> bool:
    """Whether decord 0.6 copies RGB frames of this width correctly. Its test for a "compact" frame is
    ``row stride % width == 0``, and FFmpeg pads a row of ``3 * width`` bytes to ``3 * FFALIGN(width,
    2^k)`` for the first k that makes it a multiple of the buffer alignment (32 bytes in decord's FFmpeg
    4.1, 64 in some builds): for a few small widths (8, 12, 16, 24, 48, 72 with 32; up to 189 with 64)
    the padded stride is a multiple of the width, decord takes it for a 4-channel frame and fails
    (``DECORDArrayCopyFromTo: The size must exactly match``). A scaled decord decode to such a width
    is not attempted (full-size decode instead, then the usual resample); SVD's sizes are all fine."""
    def stride(w: int, align: int) -> int:
        k = 1
        while True:
            row = 3 * (-(-w // k) * k)
            if row % align == 0 or k >= align:
                return row
            k *= 2

    return not any(stride(width, a) != 3 * width and stride(width, a) % width == 0 for a in (32, 64))


class DecordReader(_LazySizeReader):
    """decord reader. decord applies the rotation of a display matrix itself; what it leaves out (the
    mirror of a mirrored MP4/MOV matrix) is applied here, so frames match PyAV's. With ``cover`` the
    VideoReader is opened with the scaled size (``width=``, ``height=``: display orientation, as
    decord scales after its rotation; the leftover mirror does not change the size)."""

    backend = "decord"

    def __init__(self, path: str | Path, threads: int = 1, cover: tuple[int, int] | None = None):
        if _decord is None:
            raise VideoReadError("decord is not installed")
        self.path = Path(path)
        self.threads = threads
        self.cover = None if cover is None else (int(cover[0]), int(cover[1]))
        self._hw: tuple[int, int] | None = None
        self._out: tuple[int, int] | None = None   # size decord scales to; None = the displayed size
        if self.cover is not None:
            self._hw = header_display_hw(self.path)
            if self._hw is not None:
                self._out = self._scaled(self._hw)
        self._vr = self._open(self._out)
        try:
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except Exception as e:
            raise VideoReadError(f"{path}: decord cannot open it ({type(e).__name__}: {str(e)[:200]})") from None
        if self.num_frames <= 0:
            raise VideoReadError(f"{path}: no video frames")
        self._leftover = decord_leftover(self.path)
        if self.cover is not None and self._hw is None:  # size unknown from the header: frame 0 tells
            self._out = self._scaled(self._size())
            if self._out is not None:
                self._vr = self._open(self._out)

    def _scaled(self, hw: tuple[int, int]) -> tuple[int, int] | None:
        size = decode_size(*hw, *self.cover)
        return size if size is not None and decord_width_ok(size[1]) else None

    def _open(self, out: tuple[int, int] | None):
        h, w = out if out is not None else (-1, -1)
        try:
            return _decord.VideoReader(str(self.path), ctx=_decord.cpu(0), width=w, height=h,
                                       num_threads=self.threads)
        except Exception as e:
            raise VideoReadError(f"{self.path}: decord cannot open it ({type(e).__name__}: {str(e)[:200]})") from None

    @property
    def frame_hw(self) -> tuple[int, int]:
        return self._out if self._out is not None else self._size()

    def _size(self) -> tuple[int, int]:
        """(height, width), decoded from frame 0 on first use only: opening a file for a clip should not
        pay for an extra decode (every clip of a large dataset opens a new file). A scaled reader knows
        it from the header (or from frame 0 of the unscaled reader it opened first)."""
        if self._hw is None:
            try:
                h, w = self._vr[0].shape[:2]
                self._vr.seek(0)
                self._hw = display_hw(int(h), int(w), self._leftover)
            except Exception as e:
                raise VideoReadError(f"{self.path}: decord cannot decode frame 0 "
                                     f"({type(e).__name__}: {str(e)[:200]})") from None
        return self._hw

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = self._check(indices)
        try:
            frames = self._vr.get_batch(idx).asnumpy()
        except Exception as e:
            raise VideoReadError(f"{self.path}: decord failed to decode frames "
                                 f"({type(e).__name__}: {str(e)[:200]})") from None
        if frames.shape[0] != len(idx):
            raise VideoReadError(f"{self.path}: decord returned {frames.shape[0]} of {len(idx)} frames")
        if self._leftover is not None:
            frames = np.ascontiguousarray(orient(frames, self._leftover))
        return frames

    def close(self) -> None:
        self._vr = None


class ImageioReader(_Reader):
    """imageio-ffmpeg reader (random access by re-seeking; slow — kept for the benchmark)."""

    backend = "imageio"

    def __init__(self, path: str | Path, threads: int = 1, cover: tuple[int, int] | None = None):
        import imageio.v2 as imageio  # no scaler here: ``cover`` is ignored (full-size frames)

        self.path = Path(path)
        try:
            self._reader = imageio.get_reader(str(path), format="ffmpeg")
            meta = self._reader.get_meta_data()
            self.fps = float(meta.get("fps") or 0.0)
            self.width, self.height = meta["size"]
            self.num_frames = int(self._reader.count_frames())
        except Exception as e:
            raise VideoReadError(f"{path}: imageio cannot open it ({type(e).__name__}: {str(e)[:200]})") from None

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = self._check(indices)
        try:
            return np.stack([np.asarray(self._reader.get_data(i))[..., :3] for i in idx])
        except Exception as e:
            raise VideoReadError(f"{self.path}: imageio failed to decode ({type(e).__name__})") from None

    def close(self) -> None:
        self._reader.close()


_CLASSES = {"decord": DecordReader, "pyav": PyAVReader, "imageio": ImageioReader}


def open_reader(path: str | Path, backend: str = "auto", threads: int = 1,
                cover: tuple[int, int] | None = None) -> _Reader:
    """Open ``path`` with ``backend``; 'auto' = decord, else PyAV (GIF, decord missing or failing).
    ``cover``: (height, width) the frames are scaled to cover at decode time (None: full size)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown video reader {backend!r}; choose from {BACKENDS}")
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: zero-byte file")
    if backend != "auto":
        return _CLASSES[backend](path, threads, cover)
    if _decord is not None and path.suffix.lower() != ".gif":
        try:
            return DecordReader(path, threads, cover)
        except VideoReadError as e:
            logger.debug("decord failed on %s, trying PyAV: %s", path, e)
    return PyAVReader(path, threads, cover)


class ReaderPool:
    """Per-worker LRU of open readers with decord -> PyAV fallback on decode errors. Readers are kept
    per (path, cover): a scaled decord reader is opened for one output size."""

    def __init__(self, backend: str = "auto", size: int = 4, threads: int = 1):
        self.backend, self.size, self.threads = backend, max(1, size), threads
        self._open: OrderedDict[tuple, _Reader] = OrderedDict()
        self.opened = 0  # number of files opened (for tests / stats)

    @staticmethod
    def _key(path: str | Path, cover: tuple[int, int] | None) -> tuple:
        return str(path), None if cover is None else (int(cover[0]), int(cover[1]))

    def get(self, path: str | Path, cover: tuple[int, int] | None = None) -> _Reader:
        key = self._key(path, cover)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        reader = open_reader(path, self.backend, self.threads, cover)
        self.opened += 1
        self._open[key] = reader
        while len(self._open) > self.size:
            _, old = self._open.popitem(last=False)
            old.close()
        return reader

    def read(self, path: str | Path, indices: Sequence[int], cover: tuple[int, int] | None = None) -> np.ndarray:
        """Frames ``indices`` of ``path`` (scaled to cover ``cover`` if given); with 'auto', a decord
        decode failure retries with PyAV."""
        reader = self.get(path, cover)
        try:
            return reader.get_frames(indices)
        except VideoReadError:
            if self.backend != "auto" or reader.backend != "decord":
                raise
            self.evict(path)
            fallback = PyAVReader(path, self.threads, cover)
            self._open[self._key(path, cover)] = fallback
            return fallback.get_frames(indices)

    def evict(self, path: str | Path) -> None:
        """Close and drop every reader of ``path`` (whatever its ``cover``)."""
        for key in [k for k in self._open if k[0] == str(path)]:
            self._open.pop(key).close()

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()
