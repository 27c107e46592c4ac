"""Small synthetic test videos made with ffmpeg (imageio-ffmpeg) at test/bench time — never committed.

* `index_coded_frames`: frame i is a flat grey level ``16 + step·i`` with a bright bar in the
  top-left quarter, so a decoded frame tells its index (and orientation) back.
* `make_video`: one file in any container the writer supports (.mp4 H.264, .avi MPEG-4, .webm VP9,
  .gif); `make_broken_files`: zero-byte, truncated, garbage and audio-only files.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from tdd_video.data.video_io import write_video


def index_coded_frames(num_frames: int, height: int, width: int, step: int = 4) -> np.ndarray:
    """uint8 [F, H, W, 3]; frame i has grey level 16 + step·i (must stay <= 235)."""
    if 16 + step * (num_frames - 1) > 235:
        raise ValueError(f"too many frames ({num_frames}) for step {step}")
    levels = 16 + step * np.arange(num_frames)
    frames = np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).astype(np.uint8).copy()
    frames[:, : max(1, height // 4), : max(1, width // 4)] = 250
    return frames


def frame_index_of(frame: np.ndarray, step: int = 4) -> int:
    """Recover i from a decoded index-coded frame [H, W, 3] (uses its bottom-right quarter)."""
    h, w = frame.shape[:2]
    level = float(frame[h // 2:, w // 2:].mean())
    return int(round((level - 16) / step))


def random_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random content (cheap to encode), uint8 [F, H, W, 3]."""
    g = np.random.default_rng(seed)
    base = g.integers(0, 255, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    base = np.kron(base, np.ones((8, 8, 1)))[:height, :width]
    shift = np.linspace(0, 40, num_frames)[:, None, None, None]
    return np.clip(base[None] * 0.8 + shift, 0, 255).astype(np.uint8)


def make_video(path: str | Path, num_frames: int = 48, height: int = 48, width: int = 64, fps: float = 24,
               frames: np.ndarray | None = None, ffmpeg_params: list[str] | None = None) -> Path:
    """Write an index-coded (or given) video; the suffix picks the container/codec."""
    frames = index_coded_frames(num_frames, height, width) if frames is None else frames
    return write_video(frames, path, fps=fps, ffmpeg_params=ffmpeg_params)


def make_broken_files(folder: str | Path, good_video: str | Path) -> dict[str, Path]:
    """zero-byte, truncated (first 40% of ``good_video``), garbage bytes and audio-only files."""
    import imageio_ffmpeg

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(good_video).read_bytes()
    out = {"zero": folder / "zero.mp4", "truncated": folder / "truncated.mp4",
           "garbage": folder / "garbage.mp4", "audio_only": folder / "audio_only.mp4"}
    out["zero"].write_bytes(b"")
    out["truncated"].write_bytes(data[: int(len(data) * 0.4)])
    out["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=0.5", "-c:a", "aac", str(out["audio_only"])], check=True)
    return out
