"""What every video reader shares: the error type and the reader interface (frames by exact index)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tdd_video.data.transforms import decode_size


class VideoReadError(RuntimeError):
    """A video file could not be opened or decoded (message names the file and the reason)."""


class _Reader:
    backend = "base"
    path: Path
    num_frames: int
    fps: float
    height: int
    width: int
    cover: tuple[int, int] | None = None  # frames scaled at decode time to cover this (h, w); None: full size

    @property
    def frame_hw(self) -> tuple[int, int]:
        """(height, width) of the frames `get_frames` returns (display orientation)."""
        if self.cover is None:
            return self.height, self.width
        return decode_size(self.height, self.width, *self.cover) or (self.height, self.width)

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


class _LazySizeReader(_Reader):
    """A reader whose display size is found on first use (``_size()``, e.g. by decoding frame 0), not on open."""

    def _size(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def height(self) -> int:
        return self._size()[0]

    @property
    def width(self) -> int:
        return self._size()[1]
