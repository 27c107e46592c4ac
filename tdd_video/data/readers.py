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
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from tdd_video.data.orientation import decord_leftover, display_hw, frame_orientation, orient, pyav_stream_orientation

logger = logging.getLogger("tdd_video.data")

try:  # decord has no wheels on some platforms (e.g. aarch64)
    import decord as _decord
except Exception:  # pragma: no cover - depends on the platform
    _decord = None

BACKENDS = ("auto", "decord", "pyav", "imageio")


class VideoReadError(RuntimeError):
    """A video file could not be opened or decoded (message names the file and the reason)."""


def decord_available() -> bool:
    return _decord is not None




class _Reader:
    backend = "base"
    path: Path
    num_frames: int
    fps: float
    height: int
    width: int

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _check(self, indices: Sequence[int]) -> list[int]:
        idx = [int(i) for i in indices]
        if not idx:
            raise VideoReadError(f"{self.path}: no frame indices requested")
        if min(idx) < 0 or max(idx) >= self.num_frames:
            raise VideoReadError(f"{self.path}: frame index out of range [0, {self.num_frames}): "
                                 f"{min(idx)}..{max(idx)}")
        return idx


class DecordReader(_Reader):
    """decord reader. decord applies the rotation of a display matrix itself; what it leaves out (the
    mirror of a mirrored MP4/MOV matrix) is applied here, so frames match PyAV's."""

    backend = "decord"

    def __init__(self, path: str | Path, threads: int = 1):
        if _decord is None:
            raise VideoReadError("decord is not installed")
        self.path = Path(path)
        self._hw: tuple[int, int] | None = None
        try:
            self._vr = _decord.VideoReader(str(path), ctx=_decord.cpu(0), num_threads=threads)
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except Exception as e:
            raise VideoReadError(f"{path}: decord cannot open it ({type(e).__name__}: {str(e)[:200]})") from None
        if self.num_frames <= 0:
            raise VideoReadError(f"{path}: no video frames")
        self._leftover = decord_leftover(self.path)

    def _size(self) -> tuple[int, int]:
        """(height, width), decoded from frame 0 on first use only: opening a file for a clip should not
        pay for an extra decode (every clip of a large dataset opens a new file)."""
        if self._hw is None:
            try:
                h, w = self._vr[0].shape[:2]
                self._vr.seek(0)
                self._hw = display_hw(int(h), int(w), self._leftover)
            except Exception as e:
                raise VideoReadError(f"{self.path}: decord cannot decode frame 0 "
                                     f"({type(e).__name__}: {str(e)[:200]})") from None
        return self._hw

    @property
    def height(self) -> int:
        return self._size()[0]

    @property
    def width(self) -> int:
        return self._size()[1]

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


class PyAVReader(_Reader):
    """PyAV reader. Constant-frame-rate streams: seek to the keyframe before the first index and
    map each decoded frame to its index by pts; GIFs and streams without pts: decode in order.

    PyAV hands out coded pixels; each frame is turned to display orientation with the display matrix
    it carries (FFmpeg >= 7), else the stream's (older PyAV's stream side data, the MP4/MOV track
    header, the ``rotate`` tag). ``height``/``width`` are the displayed size: from the stream when
    the orientation is known without decoding (any MP4/MOV), else from frame 0, decoded on first use."""

    backend = "pyav"

    def __init__(self, path: str | Path, threads: int = 1):
        import av

        self.path = Path(path)
        try:
            self._container = av.open(str(path))
            if not self._container.streams.video:
                raise VideoReadError(f"{path}: no video stream (audio-only or data file)")
            self._stream = self._container.streams.video[0]
            self._stream.codec_context.thread_count = threads
            if threads != 1:
                self._stream.thread_type = "AUTO"
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.fps = float(rate) if rate else 0.0
            self._coded_hw = (int(self._stream.codec_context.height), int(self._stream.codec_context.width))
            self._stream_orientation = pyav_stream_orientation(self._stream, self.path)
            self._hw: tuple[int, int] | None = None
            self._sequential = self._stream.codec_context.name == "gif" or self.fps <= 0
            self.num_frames = int(self._stream.frames or 0) or self._count_packets()
        except VideoReadError:
            raise
        except Exception as e:
            raise VideoReadError(f"{path}: PyAV cannot open it ({type(e).__name__}: {str(e)[:200]})") from None
        if self.num_frames <= 0:
            raise VideoReadError(f"{path}: no video frames")
        tb = self._stream.time_base
        self._time_base = float(tb) if tb else 0.0
        self._start = self._stream.start_time or 0

    def _size(self) -> tuple[int, int]:
        """(height, width) as displayed."""
        if self._hw is None:
            if self._stream_orientation is not None:
                self._hw = display_hw(*self._coded_hw, self._stream_orientation)
            else:
                self._hw = self._probe_size()
        return self._hw

    def _probe_size(self) -> tuple[int, int]:
        """Displayed size of frame 0, for containers whose display matrix only shows on decoded
        frames (e.g. Matroska with FFmpeg >= 7); the coded size if frame 0 does not decode."""
        try:
            self._container.seek(0)
            for frame in self._container.decode(self._stream):
                o = frame_orientation(frame)
                hw = display_hw(int(frame.height), int(frame.width), o)
                self._container.seek(0)
                return hw
        except Exception as e:
            logger.debug("%s: PyAV cannot decode frame 0 for its size: %s", self.path, e)
        return self._coded_hw

    @property
    def height(self) -> int:
        return self._size()[0]

    @property
    def width(self) -> int:
        return self._size()[1]

    def _rgb(self, frame) -> np.ndarray:
        """RGB pixels of ``frame`` in display orientation."""
        o = frame_orientation(frame)
        return orient(frame.to_ndarray(format="rgb24"), o if o is not None else self._stream_orientation)

    def _count_packets(self) -> int:
        count = sum(1 for packet in self._container.demux(self._stream) if packet.size > 0)
        self._container.seek(0)
        return count

    def _frame_index(self, frame) -> int:
        return int(round((frame.pts - self._start) * self._time_base * self.fps))

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = self._check(indices)
        wanted = set(idx)
        got: dict[int, np.ndarray] = {}
        try:
            if self._sequential or self._time_base <= 0:
                self._decode_in_order(wanted, got)
            else:
                first_pts = self._start + int(min(idx) / self.fps / self._time_base)
                self._container.seek(max(first_pts, self._start), stream=self._stream, backward=True)
                ok = self._decode_by_pts(wanted, got)
                if not ok:  # seek landed after the first index, or pts missing: restart from 0
                    got.clear()
                    self._container.seek(0)
                    self._decode_in_order(wanted, got)
        except VideoReadError:
            raise
        except Exception as e:
            raise VideoReadError(f"{self.path}: PyAV failed to decode ({type(e).__name__}: {str(e)[:200]})") from None
        missing = wanted - got.keys()
        if missing:
            raise VideoReadError(f"{self.path}: truncated or unreadable, frames {sorted(missing)[:5]} "
                                 f"of {self.num_frames} could not be decoded")
        return np.ascontiguousarray(np.stack([got[i] for i in idx]))  # oriented frames are views

    def _decode_by_pts(self, wanted: set[int], got: dict) -> bool:
        last = max(wanted)
        for n, frame in enumerate(self._container.decode(self._stream)):
            if frame.pts is None:
                return False
            i = self._frame_index(frame)
            if n == 0 and i > min(wanted):
                return False
            if i in wanted:
                got[i] = self._rgb(frame)
            if i >= last:
                break
        return True

    def _decode_in_order(self, wanted: set[int], got: dict) -> None:
        last = max(wanted)
        self._container.seek(0)
        for i, frame in enumerate(self._container.decode(self._stream)):
            if i in wanted:
                got[i] = self._rgb(frame)
            if i >= last:
                break

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass


class ImageioReader(_Reader):
    """imageio-ffmpeg reader (random access by re-seeking; slow — kept for the benchmark)."""

    backend = "imageio"

    def __init__(self, path: str | Path, threads: int = 1):
        import imageio.v2 as imageio

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


def open_reader(path: str | Path, backend: str = "auto", threads: int = 1) -> _Reader:
    """Open ``path`` with ``backend``; 'auto' = decord, else PyAV (GIF, decord missing or failing)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown video reader {backend!r}; choose from {BACKENDS}")
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: zero-byte file")
    if backend != "auto":
        return _CLASSES[backend](path, threads)
    if _decord is not None and path.suffix.lower() != ".gif":
        try:
            return DecordReader(path, threads)
        except VideoReadError as e:
            logger.debug("decord failed on %s, trying PyAV: %s", path, e)
    return PyAVReader(path, threads)


class ReaderPool:
    """Per-worker LRU of open readers with decord -> PyAV fallback on decode errors."""

    def __init__(self, backend: str = "auto", size: int = 4, threads: int = 1):
        self.backend, self.size, self.threads = backend, max(1, size), threads
        self._open: OrderedDict[str, _Reader] = OrderedDict()
        self.opened = 0  # number of files opened (for tests / stats)

    def get(self, path: str | Path) -> _Reader:
        key = str(path)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        reader = open_reader(path, self.backend, self.threads)
        self.opened += 1
        self._open[key] = reader
        while len(self._open) > self.size:
            _, old = self._open.popitem(last=False)
            old.close()
        return reader

    def read(self, path: str | Path, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` of ``path``; with 'auto', a decord decode failure retries with PyAV."""
        reader = self.get(path)
        try:
            return reader.get_frames(indices)
        except VideoReadError:
            if self.backend != "auto" or reader.backend != "decord":
                raise
            self.evict(path)
            fallback = PyAVReader(path, self.threads)
            self._open[str(path)] = fallback
            return fallback.get_frames(indices)

    def evict(self, path: str | Path) -> None:
        reader = self._open.pop(str(path), None)
        if reader is not None:
            reader.close()

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()
