"""Clip sampling: which source frames make a training clip, and the fps the clip really has.

Pure functions (no I/O), docs/math.md §1a: SVD is conditioned on ``fps_id = fps − 1`` (the diffusers
pipeline passes ``fps − 1`` to the UNet), where fps must be the clip's *real* sampling rate
after striding, ``src_fps / stride`` — never a constant.

Definitions (all frame indices are 0-based indices into the decoded source video):

* stride: ``stride = max(1, round_half_up(src_fps / target_fps))`` when a target fps is given,
  else the fixed ``stride``. The clip's real fps is ``src_fps / stride`` and its
  ``fps_id = max(0, round_half_up(real_fps) − 1)``.
* window: frames ``[lo, hi)`` with ``lo = ceil(start·src_fps)`` and ``hi = min(n, floor(end·src_fps))``
  (manifest ``start``/``end`` in seconds; the whole video when absent).
* span of a clip: ``(num_frames − 1)·stride + 1`` source frames.
* start: ``random`` (training; uniform over every start that fits, from the caller's seeded
  generator), ``center`` (evaluation default: the clip centred in the window) or ``zero`` (the
  window's first frame).
* too-short windows (span > window), ``short_policy``:
  ``reduce_stride`` — use the largest stride in ``[min_stride, stride)`` that fits (the clip's
  fps_id then reflects the higher real fps); if even ``min_stride`` does not fit, skip.
  ``skip`` — skip the video. Frames are never repeated to pad a clip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

START_MODES = ("random", "center", "zero")
SHORT_POLICIES = ("skip", "reduce_stride")


def round_half_up(x: float) -> int:
    """Round to nearest, halves up (Python's round() rounds 6.5 to 6; we want 7)."""
    return int(math.floor(x + 0.5))


def stride_for(src_fps: float, target_fps: float | None = None, stride: int | None = None) -> int:
    """Frame stride: ``round_half_up(src_fps / target_fps)`` (≥ 1), or the fixed ``stride``."""
    if target_fps is not None:
        if target_fps <= 0 or src_fps <= 0:
            raise ValueError(f"fps must be > 0 (source {src_fps}, target {target_fps})")
        return max(1, round_half_up(src_fps / target_fps))
    if stride is None or stride < 1:
        raise ValueError(f"need target_fps or a stride >= 1, got stride={stride}")
    return int(stride)


def fps_id_for(real_fps: float) -> int:
    """SVD's fps conditioning id for a clip sampled at ``real_fps``: round(fps) − 1, ≥ 0 (docs/math.md §1a)."""
    return max(0, round_half_up(real_fps) - 1)


def frame_window(num_source_frames: int, src_fps: float, start_sec: float | None = None,
                 end_sec: float | None = None) -> tuple[int, int]:
    """The usable source frames ``[lo, hi)`` given optional start/end times in seconds."""
    lo = 0 if start_sec is None else max(0, math.ceil(start_sec * src_fps - 1e-6))
    hi = num_source_frames if end_sec is None else min(num_source_frames, math.floor(end_sec * src_fps + 1e-6))
    return lo, max(lo, hi)


@dataclass(frozen=True)
class ClipPlan:
    """A planned clip: ``indices`` (len = num_frames, increasing by ``stride``) into the source."""

    indices: tuple[int, ...]
    stride: int
    src_fps: float

    @property
    def fps(self) -> float:
        """The real sampling rate of the clip: src_fps / stride."""
        return self.src_fps / self.stride

    @property
    def fps_id(self) -> int:
        return fps_id_for(self.fps)


def plan_clip(num_source_frames: int, src_fps: float, num_frames: int, *,
              target_fps: float | None = None, stride: int | None = None,
              start_sec: float | None = None, end_sec: float | None = None,
              start_mode: str = "random", rng: np.random.Generator | None = None,
              short_policy: str = "reduce_stride", min_stride: int = 1) -> ClipPlan | None:
    """Choose the frames of one clip, or None when the video is too short (policy ``skip``).

    ``rng`` is required for ``start_mode='random'`` (seeded by the caller for reproducibility).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if start_mode not in START_MODES:
        raise ValueError(f"start_mode must be one of {START_MODES}, got {start_mode!r}")
    if short_policy not in SHORT_POLICIES:
        raise ValueError(f"short_policy must be one of {SHORT_POLICIES}, got {short_policy!r}")
    wanted = stride_for(src_fps, target_fps, stride)
    lo, hi = frame_window(num_source_frames, src_fps, start_sec, end_sec)
    available = hi - lo
    chosen = usable_stride(available, num_frames, wanted, short_policy, min_stride)
    if chosen is None:
        return None
    span = (num_frames - 1) * chosen + 1
    slack = available - span
    if start_mode == "random":
        if rng is None:
            raise ValueError("start_mode='random' needs a seeded rng")
        first = lo + int(rng.integers(0, slack + 1))
    elif start_mode == "center":
        first = lo + slack // 2
    else:
        first = lo
    return ClipPlan(tuple(first + i * chosen for i in range(num_frames)), chosen, float(src_fps))


def usable_stride(available: int, num_frames: int, wanted: int, short_policy: str = "reduce_stride",
                  min_stride: int = 1) -> int | None:
    """The stride to use for a window of ``available`` frames, or None if the clip cannot fit."""
    def fits(s: int) -> bool:
        return (num_frames - 1) * s + 1 <= available

    if fits(wanted):
        return wanted
    if short_policy == "skip":
        return None
    floor = max(1, min(min_stride, wanted))
    if available >= 1 and num_frames > 1:
        largest = (available - 1) // (num_frames - 1)
    else:
        largest = wanted if available >= num_frames else 0
    candidate = min(largest, wanted - 1)
    return candidate if candidate >= floor and fits(candidate) else None


def min_frames_needed(num_frames: int, stride: int) -> int:
    """Source frames a clip of ``num_frames`` at ``stride`` spans."""
    return (num_frames - 1) * stride + 1
