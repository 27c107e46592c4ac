"""Rotated phone videos (display matrix / ``rotate`` tag) come out in display orientation from every
reader: decord, PyAV (and the imageio bench reader) give the same shape, the same orientation and
the same pixels, and report the displayed width/height.

The clips are made here with the ffmpeg binary bundled by imageio-ffmpeg: a 64x32 (W x H) lossless
H.264 clip with a bright block in the top-left corner and a grey block that moves right frame by
frame, then stream-copied with ``-display_rotation`` / ``-display_hflip`` / ``-display_vflip``
(which only write the container's display matrix, the pixels stay coded landscape).
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tdd_video.data import orientation, readers
from tdd_video.data.readers import ReaderPool, open_reader

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
av = pytest.importorskip("av")

W, H, F = 64, 32, 8
BACKENDS = ["pyav"] + (["decord"] if readers.decord_available() else []) + ["imageio"]
IDX = [5, 0, 3, 7]  # out of order: exercises the seeks


def _ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, input=stdin, check=True, capture_output=True, timeout=60)


def _source() -> np.ndarray:
    """[F, H, W, 3] uint8, grey levels only (lossless through yuv420p): bright 12x8 block in the
    top-left corner, grey 6x8 block moving right by 6 px a frame."""
    frames = np.full((F, H, W, 3), 16, np.uint8)
    frames[:, 0:8, 0:12] = 235
    for i in range(F):
        frames[i, 20:28, 16 + 6 * i:22 + 6 * i] = 128
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("rotation")
    plain = root / "plain.mp4"
    _ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", "8", "-i", "-",
            "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", "4", "-pix_fmt", "yuv420p",
            str(plain), stdin=_source().tobytes())
    return root, plain


def _display(src: np.ndarray, ccw: int, hflip: bool, vflip: bool) -> np.ndarray:
    """What ffmpeg / a player shows: rotate counter-clockwise, then mirror (av_display_matrix_flip)."""
    out = np.rot90(src, ccw // 90, axes=(1, 2))
    if hflip:
        out = out[:, :, ::-1]
    if vflip:
        out = out[:, ::-1]
    return out


def _bright_corner(frame: np.ndarray) -> str:
    corners = {"top-left": frame[:3, :3], "top-right": frame[:3, -3:],
               "bottom-left": frame[-3:, :3], "bottom-right": frame[-3:, -3:]}
    bright = [name for name, patch in corners.items() if patch.mean() > 200]
    assert len(bright) == 1, bright
    return bright[0]


def _check(frames: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert frames.shape == expected.shape, f"{what}: shape {frames.shape} != {expected.shape}"
    assert frames.dtype == np.uint8 and frames.flags.c_contiguous
    for got, want in zip(frames, expected):
        assert _bright_corner(got) == _bright_corner(want), what
    diff = np.abs(frames.astype(np.int16) - expected.astype(np.int16))
    assert diff.mean() < 1.5 and diff.max() <= 12, f"{what}: mean {diff.mean():.2f} max {diff.max()}"


CASES = {  # name: (-display_rotation, hflip, vflip)
    "rot90": (90, False, False),
    "rot180": (180, False, False),
    "rot270": (270, False, False),
    "rot90-hflip": (90, True, False),  # mirrored: decord only turns by the rotation part
    "hflip": (0, True, False),  # decord alone would turn this one by 180 degrees
    "vflip": (0, False, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_display_matrix_same_frames_from_every_reader(clips, case):
    root, plain = clips
    ccw, hflip, vflip = CASES[case]
    path = root / f"{case}.mp4"
    flags = ["-display_rotation", str(ccw)] + ["-display_hflip"] * hflip + ["-display_vflip"] * vflip
    _ffmpeg(*flags, "-i", str(plain), "-c", "copy", str(path))
    with av.open(str(path)) as c:  # the file does carry the matrix, the pixels stay coded 64x32
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (W, H)
        assert any("DISPLAYMATRIX" in str(sd.type) for sd in frame.side_data)

    expected = _display(_source(), ccw, hflip, vflip)[IDX]
    h, w = expected.shape[1:3]
    got = {}
    for backend in BACKENDS:
        reader = open_reader(path, backend)
        assert reader.backend == backend
        assert (reader.height, reader.width) == (h, w), f"{backend} reports {reader.height}x{reader.width}"
        assert reader.num_frames == F
        got[backend] = reader.get_frames(IDX)
        _check(got[backend], expected, f"{case}/{backend}")
        reader.close()
    for backend, frames in got.items():  # readers agree with each other, up to codec rounding
        assert np.abs(frames.astype(np.int16) - got["pyav"].astype(np.int16)).mean() < 1.0, backend


def test_pyav_reports_displayed_size_without_decoding(clips, monkeypatch):
    """For MP4/MOV the orientation comes from the track header: width/height need no decode."""
    root, plain = clips
    path = root / "size90.mp4"
    _ffmpeg("-display_rotation", "-90", "-i", str(plain), "-c", "copy", str(path))

    def no_decode(self):
        raise AssertionError("decoded a frame just to report the size")

    monkeypatch.setattr(readers.PyAVReader, "_probe_size", no_decode, raising=False)
    reader = open_reader(path, "pyav")
    assert (reader.height, reader.width) == (W, H)
    reader.close()
    monkeypatch.undo()
    reader = open_reader(plain, "pyav")  # no matrix at all: coded size, still no decode needed
    monkeypatch.setattr(readers.PyAVReader, "_probe_size", no_decode, raising=False)
    assert (reader.height, reader.width) == (H, W)
    _check(reader.get_frames(IDX), _source()[IDX], "plain/pyav")
    reader.close()


def test_rotate_tag_matroska(clips):
    """An old-style ``rotate`` tag (degrees clockwise; Matroska spells it ROTATE) with no display
    matrix: decord honours it, so PyAV must too."""
    root, plain = clips
    path = root / "tag90.mkv"
    _ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v", "rotate=90", str(path))
    expected = np.rot90(_source(), -1, axes=(1, 2))[IDX]  # clockwise quarter turn
    for backend in [b for b in BACKENDS if b != "imageio"]:  # the ffmpeg CLI ignores the tag now
        reader = open_reader(path, backend)
        assert (reader.height, reader.width) == (W, H), backend
        _check(reader.get_frames(IDX), expected, f"tag/{backend}")
        reader.close()


def test_pyav_matrix_seen_only_on_frames(clips):
    """Matroska keeps the display matrix where only decoded frames show it (FFmpeg >= 7): PyAV
    rotates the frames and reports the size of frame 0 as displayed."""
    root, plain = clips
    mp4, path = root / "mkv90.mp4", root / "mkv90.mkv"
    _ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(mp4))
    _ffmpeg("-i", str(mp4), "-c", "copy", str(path))
    with av.open(str(path)) as c:
        if not next(c.decode(video=0)).rotation:
            pytest.skip("this FFmpeg drops the display matrix when remuxing to Matroska")
    reader = open_reader(path, "pyav")
    assert (reader.height, reader.width) == (W, H)
    _check(reader.get_frames(IDX), _display(_source(), 90, False, False)[IDX], "mkv/pyav")
    reader.close()


def test_pool_fallback_keeps_orientation(clips, monkeypatch):
    """``reader: auto`` falling back from decord to PyAV mid-run yields the same frames."""
    root, plain = clips
    path = root / "pool90.mp4"
    _ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(path))
    expected = _display(_source(), 90, False, False)[IDX]
    pool = ReaderPool("auto")
    first = pool.read(path, IDX)
    _check(first, expected, f"pool/{pool.get(path).backend}")
    if readers.decord_available():
        assert pool.get(path).backend == "decord"

        def broken(self, indices):
            raise readers.VideoReadError(f"{self.path}: decord failed to decode frames (simulated)")

        monkeypatch.setattr(readers.DecordReader, "get_frames", broken)
        pool.evict(path)
        again = pool.read(path, IDX)
        assert pool.get(path).backend == "pyav"
        _check(again, expected, "pool/fallback")
        assert np.abs(again.astype(np.int16) - first.astype(np.int16)).mean() < 1.0
    pool.close()


def test_orientation_helpers_match_numpy():
    """The eight orientations applied to a labelled array, against numpy rot90/flip."""
    src = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    for k in range(4):
        o = orientation._orientation_from_rotation(90 * k)
        assert np.array_equal(orientation.orient(src, o), np.rot90(src, k))
        assert orientation.display_hw(2, 3, o) == np.rot90(src, k).shape[:2]
        for hflip, vflip in [(True, False), (False, True)]:
            mirror = (-1 if hflip else 1, 0, 0, -1 if vflip else 1)
            want = np.rot90(src, k)
            want = want[:, ::-1] if hflip else want[::-1]
            assert np.array_equal(orientation.orient(src, orientation._compose(o, mirror)), want)
