"""Display orientation of video files (phone videos carry a display matrix: rotation and flips).

Every reader returns frames in DISPLAY orientation, as ffmpeg's autorotate shows them: PyAV reads the
display matrix (per frame, the stream's side data, the MP4/MOV track header, or an old `rotate` tag)
and applies it; decord applies only the rotation part, so the reader adds the missing flip. An
orientation is the 2×2 integer matrix (a, b, c, d) of one of the 8 quarter-turn rotations/flips.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

_IDENTITY = (1, 0, 0, 1)
_QUARTER_TURNS_CCW = ((1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0))
_ISO_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp"}


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def _orientation_from_matrix(m: Sequence[float]) -> tuple[int, int, int, int] | None:
    """Orientation of a 3x3 display matrix given as its 9 entries in row-major order (FFmpeg's
    int32 16.16 layout or floats: only the signs of the 2x2 part matter). A rotation that is not a
    multiple of 90 degrees snaps to the nearest quarter turn; None for a degenerate matrix."""
    a, b, c, d = (float(m[i]) for i in (0, 1, 3, 4))
    o = (_sign(a), 0, 0, _sign(d)) if abs(a) + abs(d) >= abs(b) + abs(c) else (0, _sign(b), _sign(c), 0)
    return o if o[0] * o[3] - o[1] * o[2] != 0 else None


def _orientation_from_rotation(degrees_ccw: float) -> tuple[int, int, int, int]:
    """Pure rotation by ``degrees_ccw`` counter-clockwise, snapped to a quarter turn."""
    return _QUARTER_TURNS_CCW[round(degrees_ccw / 90.0) % 4]


def _compose(first: tuple, then: tuple) -> tuple[int, int, int, int]:
    """Orientation of applying ``first`` and then ``then`` (matrix product first @ then)."""
    a1, b1, c1, d1 = first
    a2, b2, c2, d2 = then
    return (a1 * a2 + b1 * c2, a1 * b2 + b1 * d2, c1 * a2 + d1 * c2, c1 * b2 + d1 * d2)


def _inverse(o: tuple) -> tuple[int, int, int, int]:
    a, b, c, d = o  # a signed permutation matrix is orthogonal: its inverse is its transpose
    return (a, c, b, d)


def display_hw(height: int, width: int, o: tuple | None) -> tuple[int, int]:
    """(height, width) of a coded ``height`` x ``width`` frame once displayed with ``o``."""
    return (width, height) if o is not None and o[0] == 0 else (height, width)


def orient(frames: np.ndarray, o: tuple | None) -> np.ndarray:
    """Apply orientation ``o`` to ``[..., H, W, C]`` pixels (returns a view when it can)."""
    if o is None or o == _IDENTITY:
        return frames
    a, b, c, d = o
    if a == 0:  # x' = c*y, y' = b*x: rows and columns swap
        frames = np.swapaxes(frames, -3, -2)
        row_sign, col_sign = b, c
    else:  # x' = a*x, y' = d*y
        row_sign, col_sign = d, a
    if row_sign < 0:
        frames = np.flip(frames, -3)
    if col_sign < 0:
        frames = np.flip(frames, -2)
    return frames


def _rotate_tag_orientation(metadata) -> tuple[int, int, int, int] | None:
    """Orientation from an old-style ``rotate`` stream tag (degrees clockwise; FFmpeg < 5 exported
    it for MP4, Matroska keeps it as a plain tag). Key looked up case-insensitively, like
    av_dict_get (Matroska spells it ROTATE)."""
    try:
        for key, value in dict(metadata or {}).items():
            if str(key).lower() == "rotate":
                degrees = float(value)
                return None if math.isnan(degrees) else _orientation_from_rotation(-degrees)
    except (TypeError, ValueError):
        pass
    return None


def _iso_boxes(f, start: int, end: int):
    """(type, payload offset, end offset) of the ISO-BMFF boxes laid out in [start, end) of ``f``."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head)
        payload = pos + 8
        if size == 1:  # 64-bit size follows
            ext = f.read(8)
            if len(ext) < 8:
                return
            size, payload = struct.unpack(">Q", ext)[0], payload + 8
        elif size == 0:  # box runs to the end of its parent
            size = end - pos
        if size < payload - pos:
            return  # damaged
        yield kind, payload, min(pos + size, end)
        pos += size


def _iso_matrix(f, payload: int, offset_v0: int, offset_v1: int) -> tuple[float, float, float, float]:
    """2x2 part of the display matrix stored at ``payload + offset`` of an mvhd/tkhd box (the offset
    depends on the box version, the first payload byte)."""
    f.seek(payload)
    version = f.read(1)
    f.seek(payload + (offset_v1 if version == b"\x01" else offset_v0))
    m = struct.unpack(">9i", f.read(36))
    return m[0] / 65536.0, m[1] / 65536.0, m[3] / 65536.0, m[4] / 65536.0


def _iso_orientation(path: str | Path) -> tuple[int, int, int, int] | None:
    """Display orientation of the first video track of an MP4/MOV (ISO-BMFF) file: its tkhd matrix
    times the mvhd matrix, as FFmpeg's mov demuxer computes it. Reads a few small boxes only (no
    decoding); identity when the file has no matrix; None when the file is not ISO-BMFF, has no
    video track, or its header cannot be parsed."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            f.seek(0)
            if f.read(8)[4:8] not in _ISO_FIRST_BOXES:
                return None
            for kind, start, stop in _iso_boxes(f, 0, end):
                if kind != b"moov":
                    continue
                movie = (1.0, 0.0, 0.0, 1.0)
                for kind2, start2, stop2 in _iso_boxes(f, start, stop):
                    if kind2 == b"mvhd":
                        movie = _iso_matrix(f, start2, 36, 48)
                    elif kind2 == b"trak":
                        track, video = None, False
                        for kind3, start3, stop3 in _iso_boxes(f, start2, stop2):
                            if kind3 == b"tkhd":
                                track = _iso_matrix(f, start3, 40, 52)
                            elif kind3 == b"mdia":
                                for kind4, start4, _ in _iso_boxes(f, start3, stop3):
                                    if kind4 == b"hdlr":
                                        f.seek(start4 + 8)
                                        video = f.read(4) == b"vide"
                        if video and track is not None:
                            a, b, c, d = _compose(track, movie)
                            return _orientation_from_matrix((a, b, 0, c, d, 0, 0, 0, 1))
                return None
    except (OSError, struct.error, ValueError, IndexError):
        return None
    return None


def _stream_side_data_orientation(stream) -> tuple[int, int, int, int] | None:
    """Display matrix as older PyAV exposes it on the stream (``stream.side_data``, PyAV 11.2-13:
    {'DISPLAYMATRIX': rotation in degrees counter-clockwise}); None when absent."""
    side_data = getattr(stream, "side_data", None)
    if not side_data:
        return None
    try:
        for key, value in dict(side_data).items():
            if "DISPLAYMATRIX" not in str(key).upper():
                continue
            if isinstance(value, (int, float)):
                return None if math.isnan(value) else _orientation_from_rotation(value)
            m = np.frombuffer(bytes(value), dtype="=i4")
            return _orientation_from_matrix(m) if m.size == 9 else None
    except Exception:
        pass
    return None


def frame_orientation(frame) -> tuple[int, int, int, int] | None:
    """Display matrix a decoded PyAV frame carries (FFmpeg >= 7 copies the stream's onto every
    frame): the full matrix from its side data, else PyAV's ``frame.rotation`` (rotation only).
    None when the frame carries none."""
    try:
        for sd in frame.side_data:
            kind = getattr(sd.type, "name", None) or str(sd.type)
            if str(kind).upper().endswith("DISPLAYMATRIX"):
                m = np.frombuffer(bytes(sd), dtype="=i4")
                if m.size == 9:
                    return _orientation_from_matrix(m)
    except Exception:
        pass
    rotation = getattr(frame, "rotation", 0)
    try:
        return _orientation_from_rotation(float(rotation)) if rotation else None
    except (TypeError, ValueError):
        return None


def pyav_stream_orientation(stream, path: Path) -> tuple[int, int, int, int] | None:
    """Orientation of a stream known without decoding: stream side data (older PyAV), the MP4/MOV
    track matrix, the ``rotate`` tag. None when it can only be learnt from a decoded frame."""
    o = _stream_side_data_orientation(stream)
    if o is not None:
        return o
    iso = _iso_orientation(path)
    if iso is not None and iso != _IDENTITY:
        return iso
    tag = _rotate_tag_orientation(stream.metadata)
    return tag if tag is not None else iso


def decord_leftover(path: Path) -> tuple[int, int, int, int] | None:
    """What decord leaves to do. decord turns frames by the rotation part of the display matrix
    only (VideoReader::GetRotation: the ``rotate`` tag, else -av_display_rotation_get, then a
    transpose filter), which is the whole story for the usual pure-rotation matrix; a mirrored
    MP4/MOV matrix also needs the mirror, applied after decord's rotation. None: nothing left."""
    full = _iso_orientation(path)
    if full is None or full[0] * full[3] - full[1] * full[2] > 0:  # not ISO, or a pure rotation
        return None
    cw = math.degrees(math.atan2(full[1], full[0]))  # decord's angle (clockwise) for this matrix
    rest = _compose(_inverse(_orientation_from_rotation(-cw)), full)
    return None if rest == _IDENTITY else rest
