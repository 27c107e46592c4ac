"""Decode-time downscaling (``data.decode_resize``): the readers' scalers return frames that cover the
target with the aspect kept — landscape, rotated portrait (display matrix, also mirrored), buckets —
for decord and PyAV; the crop that follows gives what the full-size path gives (PSNR > 30 dB on a
natural-statistics clip, same crop offsets from the same rng); sources not larger than the target
are decoded at their own size (then bit-identical to the full-size path); the option is validated.

Clips are made here with the ffmpeg bundled by imageio-ffmpeg: 256x144 H.264 (CRF 18, keyframe every
6 frames), a panning 1/f-noise texture (the amplitude spectrum of natural images) with a few hard-edged
shapes; rotated variants are stream copies with ``-display_rotation`` / ``-display_hflip``.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tdd_video.data import pyav_reader, readers
from tdd_video.data.config import VideoDataConfig
from tdd_video.data.dataset import build_video_dataset
from tdd_video.data.readers import ReaderPool, header_display_hw, open_reader
from tdd_video.data.sampler import SampleKey
from tdd_video.data.transforms import cover_size, decode_size, resize_crop_uint8
from tdd_video.errors import ConfigError

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
pytest.importorskip("av")

W, H, F = 256, 144, 16
BACKENDS = ["pyav"] + (["decord"] if readers.decord_available() else [])
IDX = [9, 1, 5, 13]  # out of order: exercises the seeks


def _ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, input=stdin, check=True, capture_output=True, timeout=60)


def natural_frames(num: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [F, H, W, 3]: colour 1/f noise panning 3 px a frame, with a dark disc and a bright bar."""
    g = np.random.default_rng(seed)
    th, tw = height, width + 3 * num
    fy, fx = np.fft.fftfreq(th)[:, None], np.fft.rfftfreq(tw)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    planes = []
    for _ in range(3):
        spec = (g.normal(size=f.shape) + 1j * g.normal(size=f.shape)) / f ** 1.2
        spec[0, 0] = 0
        planes.append(np.fft.irfft2(spec, s=(th, tw)))
    tex = np.stack(planes, -1) @ np.array([[1, .6, .4], [.6, 1, .6], [.4, .6, 1]])
    tex = 128 + 45 * (tex - tex.mean()) / tex.std()
    yy, xx = np.mgrid[:th, :tw]
    tex[(yy - th * 0.6) ** 2 + (xx - tw * 0.3) ** 2 < (th * 0.2) ** 2] = 30
    tex[int(th * 0.15):int(th * 0.25), int(tw * 0.5):int(tw * 0.8)] = 225
    return np.stack([np.clip(tex[:, 3 * i:3 * i + width], 0, 255) for i in range(num)]).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode_resize")
    plain = root / "plain.mp4"
    _ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", "24", "-i", "-",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-g", "6", "-pix_fmt", "yuv420p",
            str(plain), stdin=natural_frames(F, H, W).tobytes())
    out = {"plain": plain}
    for name, flags in {"rot90": ["-display_rotation", "90"],
                        "rot270-hflip": ["-display_rotation", "270", "-display_hflip"]}.items():
        out[name] = root / f"{name}.mp4"
        _ffmpeg(*flags, "-i", str(plain), "-c", "copy", str(out[name]))
    out["mkv"] = root / "plain.mkv"  # no orientation in the header: decord learns the size from frame 0
    _ffmpeg("-i", str(plain), "-c", "copy", str(out["mkv"]))
    small = root / "small.mp4"  # smaller than the targets below: nothing to downscale
    _ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x32", "-r", "24", "-i", "-", "-c:v", "libx264",
            "-preset", "veryfast", "-crf", "18", "-g", "6", "-pix_fmt", "yuv420p", str(small),
            stdin=natural_frames(F, 32, 64, seed=1).tobytes())
    out["small"] = small
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_decode_and_cover_sizes():
    assert decode_size(1080, 1920, 320, 576) == (324, 576)       # landscape 1080p -> SVD's 320x576
    assert decode_size(1080, 1920, 576, 1024) == (576, 1024)
    assert decode_size(1920, 1080, 576, 320) == (576, 324)       # phone video, portrait bucket
    assert decode_size(1920, 1080, 320, 576) == (1024, 576)      # portrait source, landscape target
    assert decode_size(1080, 1920, 256, 256) == (256, 456)
    assert decode_size(320, 576, 320, 576) is None                # already the target: no scaling
    assert decode_size(180, 320, 320, 576) is None                # upscale: left to the resample
    for src in [(1080, 1920), (1920, 1080), (720, 1280), (1081, 1919), (144, 256)]:
        for target in [(320, 576), (576, 320), (48, 48), (32, 64)]:
            h, w = cover_size(*src, *target)
            assert h >= target[0] and w >= target[1] and (h == target[0] or w == target[1])
            assert abs(h / w - src[0] / src[1]) <= 1.0 / min(h, w)     # aspect kept up to the rounding


def test_crop_of_a_covering_frame_is_the_resample():
    """At scale 1 `resize_crop_uint8` slices: exactly what Pillow's resample of the integer box gives."""
    from PIL import Image

    frames = natural_frames(3, 36, 64)
    for crop, seed in [("center", 0), ("random", 3), ("random", 4)]:
        out = resize_crop_uint8(frames, 32, 64, crop, np.random.default_rng(seed), flip=seed == 4)
        top = 2 if crop == "center" else int(np.random.default_rng(seed).integers(0, 5))
        ref = np.stack([np.asarray(Image.fromarray(f).resize((64, 32), Image.BILINEAR, box=(0, top, 64, top + 32)))
                        for f in frames])
        assert np.array_equal(out, ref[:, :, ::-1] if seed == 4 else ref)


CASES = {  # clip: (displayed h, w)
    "plain": (H, W), "rot90": (W, H), "rot270-hflip": (W, H), "mkv": (H, W),
}
TARGETS = [(32, 64), (64, 32), (48, 48), (40, 72)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", list(CASES))
def test_scaled_decode_covers_target_and_matches_full_size(clips, clip, backend):
    """Right size in display orientation for every target, and after the crop the same picture as the
    full-size path (orientation included: a wrong turn or mirror would not pass the PSNR bound)."""
    path = clips[clip]
    full = open_reader(path, backend)
    assert (full.height, full.width) == CASES[clip]
    reference = full.get_frames(IDX)
    full.close()
    for target in TARGETS:
        reader = open_reader(path, backend, cover=target)
        expected = decode_size(*CASES[clip], *target)
        assert expected is not None
        if backend == "decord" and not readers.decord_width_ok(expected[1]):
            expected = CASES[clip]  # e.g. 41x72, 86x48: decord 0.6 cannot copy 72-, 48-wide RGB frames
        assert reader.backend == backend and (reader.height, reader.width) == CASES[clip]
        assert reader.frame_hw == expected, (clip, backend, target)
        frames = reader.get_frames(IDX)
        reader.close()
        assert frames.shape == (len(IDX), *expected, 3) and frames.dtype == np.uint8 and frames.flags.c_contiguous
        for crop, seed in [("center", 0), ("random", 1)]:
            a = resize_crop_uint8(reference, *target, crop, np.random.default_rng(seed))
            b = resize_crop_uint8(frames, *target, crop, np.random.default_rng(seed), src_hw=CASES[clip])
            assert psnr(a, b) > 30, (clip, backend, target, crop, psnr(a, b))


def test_readers_agree_and_header_size_needs_no_decode(clips, monkeypatch):
    """decord and PyAV scale alike; decord opens an MP4 once, already scaled (size from the header),
    and an MKV (no orientation in its header) by way of frame 0 of an unscaled reader."""
    assert header_display_hw(clips["rot90"]) == (W, H)
    assert header_display_hw(clips["mkv"]) is None
    if not readers.decord_available():
        pytest.skip("decord not installed")
    opened = []
    real = readers._decord.VideoReader

    def counting(*args, **kwargs):
        opened.append((kwargs.get("height"), kwargs.get("width")))
        return real(*args, **kwargs)

    monkeypatch.setattr(readers._decord, "VideoReader", counting)
    for clip, calls in [("rot90", [(64, 36)]), ("mkv", [(-1, -1), (36, 64)])]:
        opened.clear()
        target = (64, 32) if clip == "rot90" else (32, 64)
        dec = open_reader(clips[clip], "decord", cover=target).get_frames(IDX)
        assert opened == calls, clip
        pyav = open_reader(clips[clip], "pyav", cover=target).get_frames(IDX)
        assert dec.shape == pyav.shape and psnr(dec, pyav) > 30


@pytest.mark.parametrize("backend", BACKENDS)
def test_source_smaller_than_target_is_decoded_at_its_size(clips, backend):
    reader = open_reader(clips["small"], backend, cover=(48, 80))
    assert reader.frame_hw == (32, 64)
    frames = reader.get_frames(IDX)
    assert np.array_equal(frames, open_reader(clips["small"], backend).get_frames(IDX))


def test_decord_width_ok():
    """The widths decord 0.6 fails to copy with its FFmpeg's 32-byte rows (8, 12, 16, 24, 48, 72: found
    by decoding every width from 8 to 400), plus those of 64-byte rows; SVD's sizes are fine."""
    assert [w for w in range(8, 400) if not readers.decord_width_ok(w)] == [8, 12, 16, 24, 32, 48, 72, 96, 144]
    assert all(readers.decord_width_ok(w) for w in (320, 324, 456, 576, 1024))


def test_pool_keeps_one_reader_per_size_and_evicts_all(clips):
    pool = ReaderPool("pyav")
    a = pool.read(clips["plain"], [2], cover=(32, 64))
    b = pool.read(clips["plain"], [2], cover=(48, 48))
    c = pool.read(clips["plain"], [2])
    assert a.shape[1:3] == (36, 64) and b.shape[1:3] == (48, 86) and c.shape[1:3] == (H, W)
    assert pool.opened == 3
    pool.read(clips["plain"], [3], cover=(32, 64))
    assert pool.opened == 3
    pool.evict(clips["plain"])
    assert not pool._open


def test_fast_container_probe_same_answers(clips, monkeypatch):
    """MP4/MOV are opened without FFmpeg's decoding probe (~50 ms per 1080p file): same frame count, rate,
    displayed size and pixels (orientation included) as with the full probe."""
    got = {}
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(pyav_reader, "_is_iso_bmff", lambda path: False)
        for name in ("plain", "rot90", "rot270-hflip"):
            reader = open_reader(clips[name], "pyav", cover=(32, 64))
            got[fast, name] = (reader.num_frames, reader.fps, reader.height, reader.width, reader.get_frames(IDX))
            reader.close()
    for name in ("plain", "rot90", "rot270-hflip"):
        fast, full = got[True, name], got[False, name]
        assert fast[:4] == full[:4] and np.array_equal(fast[4], full[4]), name


def _cfg(folder, **kw):
    base = dict(path=str(folder), num_frames=4, target_fps=8, batch_size=1, num_workers=0,
                buckets=[[32, 64], [64, 32], [48, 48]], train=True, flip=True, reader="auto")
    base.update(kw)
    return base


def test_dataset_buckets_same_crops_with_and_without(clips, tmp_path):
    """Through the dataset: each record gets its bucket's size, and decode_resize on/off give the same
    clips (frame indices, crop offsets, flips — the rng is used the same way) up to the resampling."""
    folder = tmp_path / "vids"
    folder.mkdir()
    for name in ("plain", "rot90", "rot270-hflip"):
        (folder / clips[name].name).symlink_to(clips[name])
    on = build_video_dataset(_cfg(folder))
    off = build_video_dataset(_cfg(folder, decode_resize=False))
    sizes = {r.path.name: on.sizes[b] for r, b in zip(on.records, on.bucket_of)}
    assert sizes == {"plain.mp4": (32, 64), "rot90.mp4": (64, 32), "rot270-hflip.mp4": (64, 32)}
    for epoch in range(3):
        for i, rec in enumerate(on.records):
            a, b = on[SampleKey(i, epoch)], off[SampleKey(i, epoch)]
            assert a["pixel_values"].shape == (4, 3, *sizes[rec.path.name])
            assert a["frame_indices"].tolist() == b["frame_indices"].tolist()
            u8 = [((x["pixel_values"] + 1) * 127.5).round().byte().numpy() for x in (a, b)]
            assert psnr(*u8) > 30, (rec.path.name, epoch, psnr(*u8))
    pool = on.pool  # the readers were opened for the bucket sizes, at the scaled size
    frame_sizes = {k[0].rsplit("/", 1)[-1]: (k[1], r.frame_hw) for k, r in pool._open.items()}
    assert frame_sizes["plain.mp4"] == ((32, 64), (36, 64))
    assert frame_sizes["rot90.mp4"] == ((64, 32), (64, 36))


def test_config_option_validated():
    assert VideoDataConfig().decode_resize is True
    assert VideoDataConfig.from_dict({"decode_resize": False}).validate().decode_resize is False
    with pytest.raises(ConfigError, match="data.decode_resize"):
        VideoDataConfig.from_dict({"decode_resize": "yes"})
    with pytest.raises(ConfigError, match="data.decode_resize"):
        VideoDataConfig(decode_resize=1).validate()
