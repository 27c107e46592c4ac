"""The PyAV reader and container helpers (fast MP4/MOV open, displayed size from the header).

See `tdd_video.data.readers` for the orientation and decode-time scaling rules every reader follows."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from tdd_video.data.orientation import display_hw, frame_orientation, orient, pyav_stream_orientation
from tdd_video.data.reader_base import VideoReadError, _LazySizeReader
from tdd_video.data.transforms import decode_size

logger = logging.getLogger("tdd_video.data")


_ISO_FIRST_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp")


def _is_iso_bmff(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] in _ISO_FIRST_BOXES
    except OSError:
        return False


def open_container(path: str | Path):
    """``av.open``; for MP4/MOV (ISO-BMFF) without the decoding in FFmpeg's stream probe.

    avformat_find_stream_info decodes frames until it has guessed the decoder delay (~7 frames of an
    H.264 stream with B-frames: ~50 ms per open at 1080p, paid by every clip of a large dataset, where
    a clip rarely finds its file still open). ``skip_frame=nonkey`` for the probe's own decoder (not the
    stream's, which decodes every frame) reads the same bytes, gives the same size, rate, frame count
    and time base, and costs < 1 ms. Only for MP4/MOV: there the display orientation comes from the
    track header (`pyav_stream_orientation`), while without the decoding probe FFmpeg 8 does not put
    a Matroska display matrix on the decoded frames. Reopened with the full probe when the fast one
    leaves the video size or rate unknown."""
    import av

    if not _is_iso_bmff(path):
        return av.open(str(path))
    container = av.open(str(path), options={"skip_frame": "nonkey"})
    try:
        video = container.streams.video
        if not video:
            return container
        ctx, stream = video[0].codec_context, video[0]
        if ctx.width > 0 and ctx.height > 0 and (stream.average_rate or stream.guessed_rate):
            return container
    except Exception:
        pass
    container.close()
    return av.open(str(path))


def header_display_hw(path: str | Path) -> tuple[int, int] | None:
    """Displayed (height, width) of the first video stream read from the container header with PyAV
    (no decoding): the coded size turned by the stream's orientation (MP4/MOV matrix, older PyAV's
    stream side data, ``rotate`` tag). None when it cannot be known without decoding (no PyAV, no
    video stream, no size, or a container whose orientation only decoded frames show)."""
    try:
        with open_container(path) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            h, w = int(stream.codec_context.height), int(stream.codec_context.width)
            o = pyav_stream_orientation(stream, Path(path))
    except Exception:
        return None
    if h <= 0 or w <= 0 or o is None:
        return None
    return display_hw(h, w, o)


class PyAVReader(_LazySizeReader):
    """PyAV reader. Constant-frame-rate streams: seek to the keyframe before the first index and
    map each decoded frame to its index by pts; GIFs and streams without pts: decode in order.

    PyAV hands out coded pixels; each frame is turned to display orientation with the display matrix
    it carries (FFmpeg >= 7), else the stream's (older PyAV's stream side data, the MP4/MOV track
    header, the ``rotate`` tag). ``height``/``width`` are the displayed size: from the stream when
    the orientation is known without decoding (any MP4/MOV), else from frame 0, decoded on first use.
    RGB conversion (and with ``cover`` the scaling) runs in swscale with ``threads`` threads (0 = all
    cores), through one reformatter per reader (its scaler is set up once, not per frame)."""

    backend = "pyav"

    def __init__(self, path: str | Path, threads: int = 1, cover: tuple[int, int] | None = None):
        from av.video.reformatter import VideoReformatter

        self.path = Path(path)
        self.cover = None if cover is None else (int(cover[0]), int(cover[1]))
        self._reformatter = VideoReformatter()
        self._sws_threads: int | None = int(threads)
        try:
            self._container = open_container(path)
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

    def _rgb(self, frame) -> np.ndarray:
        """RGB pixels of ``frame`` in display orientation (scaled to cover ``self.cover`` if set)."""
        o = frame_orientation(frame)
        o = o if o is not None else self._stream_orientation
        kwargs = {"format": "rgb24"}
        if self.cover is not None:
            shown = display_hw(int(frame.height), int(frame.width), o)
            if self._hw is None:  # the displayed size, known now without an extra decode
                self._hw = shown
            size = decode_size(*shown, *self.cover)
            if size is not None:  # the scaler works at the coded orientation: swap back for a quarter turn
                kwargs["height"], kwargs["width"] = display_hw(*size, o)
                kwargs["interpolation"] = "BILINEAR"
        if self._sws_threads is not None:
            try:
                rgb = self._reformatter.reformat(frame, threads=self._sws_threads, **kwargs)
            except TypeError:  # PyAV < 13: no threads argument
                self._sws_threads = None
        if self._sws_threads is None:
            rgb = self._reformatter.reformat(frame, **kwargs)
        return orient(rgb.to_ndarray(), o)

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
