"""Write and read short videos: .mp4 (H.264), .gif, or a folder of PNG frames.

`write_video` is what inference, validation renders and tests use to save clips; it accepts the
layouts the rest of the project produces:

* uint8 ``[F, H, W, 3]`` (numpy array or tensor), values 0..255;
* float tensor/array ``[F, 3, H, W]`` in [-1, 1] (the VAE/pixel convention of the families),
  or in [0, 1] with ``value_range=(0, 1)``. Values outside the range are clamped.

Facts (measured here): imageio's ffmpeg writer pads sizes to multiples of 16 unless
``macro_block_size=1`` — we pass it, so the file has exactly the frames' size. H.264 in yuv420p
needs even width and height; odd sizes are written in yuv444p (exact size, less widely playable).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from einops import rearrange

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
GIF_SUFFIX = ".gif"


def to_uint8_frames(frames, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Convert frames to a contiguous uint8 numpy array [F, H, W, 3].

    uint8 inputs must be [F, H, W, 3] (or [F, H, W, 1]/[F, H, W] grayscale, expanded to RGB);
    float inputs must be [F, 3, H, W] in ``value_range``.
    """
    if isinstance(frames, (list, tuple)):
        frames = torch.stack([torch.as_tensor(np.asarray(f)) for f in frames])
    arr = frames.detach().cpu() if isinstance(frames, torch.Tensor) else torch.as_tensor(np.asarray(frames))
    if arr.dtype == torch.uint8:
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
            raise ValueError(f"uint8 frames must be [F, H, W, 3], got shape {tuple(arr.shape)}")
        if arr.shape[-1] == 1:
            arr = arr.expand(-1, -1, -1, 3)
        return np.ascontiguousarray(arr.numpy())
    if not torch.is_floating_point(arr):
        raise ValueError(f"frames must be uint8 [F,H,W,3] or float [F,3,H,W], got dtype {arr.dtype}")
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"float frames must be [F, 3, H, W], got shape {tuple(arr.shape)}")
    lo, hi = value_range
    arr = ((arr.float().clamp(lo, hi) - lo) / (hi - lo) * 255.0).round().to(torch.uint8)
    return np.ascontiguousarray(rearrange(arr, "f c h w -> f h w c").numpy())


def write_video(frames, path: str | Path, fps: float = 7, value_range: tuple[float, float] = (-1.0, 1.0),
                quality: int | None = 8, ffmpeg_params: list[str] | None = None) -> Path:
    """Write ``frames`` to ``path`` and return the path written.

    The suffix chooses the format: a video suffix (.mp4, .mov, .mkv, .avi, .webm) -> H.264 via
    imageio-ffmpeg (.webm -> VP9, .avi -> MPEG-4 part 2); .gif -> animated GIF (looping);
    anything else (no suffix) -> a folder of ``frame_00000.png`` ... files. Missing parent folders
    are created. ``quality`` is imageio's 0..10 scale (None: the encoder's default, e.g. x264
    CRF 23; ignored for GIF/PNG); ``ffmpeg_params`` are
    extra encoder flags for video suffixes (e.g. ``["-g", "8"]`` for a keyframe every 8 frames).
    An OSError is raised when nothing (or an empty file) was written, also when the ffmpeg process
    failed without an exception (imageio only logs it).
    """
    data = to_uint8_frames(frames, value_range)
    if data.shape[0] == 0:
        raise ValueError("write_video: no frames to write")
    if fps <= 0:
        raise ValueError(f"write_video: fps must be > 0, got {fps}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_ffmpeg(data, path, fps, quality, ffmpeg_params)
        if not path.is_file() or path.stat().st_size == 0:
            raise OSError(f"write_video: ffmpeg wrote nothing to {path}")
    elif suffix == GIF_SUFFIX:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_gif(data, path, fps)
    else:
        path.mkdir(parents=True, exist_ok=True)
        from PIL import Image
        for i, frame in enumerate(data):
            Image.fromarray(frame).save(path / f"frame_{i:05d}.png")
    return path


def _write_ffmpeg(data: np.ndarray, path: Path, fps: float, quality: int | None, params: list[str] | None) -> None:
    import imageio.v2 as imageio

    height, width = data.shape[1:3]
    suffix = path.suffix.lower()
    codec = {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(suffix, "libx264")
    even = height % 2 == 0 and width % 2 == 0
    pixelformat = "yuv420p" if (even or codec == "mpeg4") else "yuv444p"
    if codec == "mpeg4" and not even:
        raise ValueError(f"write_video: .avi (MPEG-4) needs even sizes, got {height}x{width}")
    writer = imageio.get_writer(str(path), fps=fps, codec=codec, quality=quality, macro_block_size=1,
                                pixelformat=pixelformat, ffmpeg_log_level="error",
                                output_params=list(params or []))
    try:
        for frame in data:
            writer.append_data(frame)
    finally:
        writer.close()


def _write_gif(data: np.ndarray, path: Path, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in data]
    duration_ms = max(int(round(1000.0 / fps)), 10)
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0,
                   optimize=False, disposal=1)


def read_video_frames(path: str | Path, indices: Sequence[int] | None = None) -> np.ndarray:
    """Read all frames (or ``indices``) of a video file, GIF or PNG folder: uint8 [F, H, W, 3].

    A simple, exact reader for tests and tools (decodes sequentially with PyAV); the training
    path uses tdd_video.data.readers for fast random access.
    """
    path = Path(path)
    if path.is_dir():
        from PIL import Image
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files]) if files else \
            np.zeros((0, 0, 0, 3), np.uint8)
    elif path.suffix.lower() == GIF_SUFFIX:
        from PIL import Image, ImageSequence
        with Image.open(path) as im:
            frames = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    else:
        import av
        with av.open(str(path)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    if indices is not None:
        frames = frames[list(indices)]
    return frames


def video_fps(path: str | Path) -> float:
    """Average frame rate stored in a video container (PyAV), or from GIF frame durations."""
    path = Path(path)
    if path.suffix.lower() == GIF_SUFFIX:
        from PIL import Image, ImageSequence
        with Image.open(path) as im:
            durations = [f.info.get("duration", 100) or 100 for f in ImageSequence.Iterator(im)]
        return 1000.0 / (sum(durations) / len(durations))
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return float(rate)
