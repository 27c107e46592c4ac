"""write_video / read_video_frames: formats, exact sizes, input layouts, folders created."""
import numpy as np
import pytest
import torch

from tdd_video.data.video_io import read_video_frames, to_uint8_frames, video_fps, write_video


def _frames(f=5, h=36, w=52, seed=0):
    g = np.random.default_rng(seed)
    base = g.integers(0, 255, size=(1, h, w, 3)).astype(np.float32)
    ramp = np.linspace(0, 60, f)[:, None, None, None]
    return np.clip(base * 0.5 + ramp, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".mp4", ".gif", ""])
def test_write_read_exact_size_and_count(tmp_path, suffix):
    frames = _frames()
    out = write_video(frames, tmp_path / "a" / "b" / f"clip{suffix}", fps=8)
    assert out.exists()
    back = read_video_frames(out)
    assert back.shape == frames.shape  # no padding to 16 (macro_block_size=1)
    tol = 0 if suffix == "" else 40
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < max(tol, 1)


def test_float_layouts_and_ranges():
    x = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    a = to_uint8_frames(x)
    assert a.shape == (2, 4, 4, 3) and a.dtype == np.uint8
    assert a.min() == 0 and a.max() == 255
    b = to_uint8_frames((x + 1) / 2, value_range=(0, 1))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="F, 3, H, W"):
        to_uint8_frames(torch.zeros(2, 4, 4, 3))


def test_mp4_fps_and_odd_size(tmp_path):
    out = write_video(_frames(f=6, h=33, w=47), tmp_path / "odd.mp4", fps=12)
    assert read_video_frames(out).shape == (6, 33, 47, 3)
    assert abs(video_fps(out) - 12) < 1e-6
