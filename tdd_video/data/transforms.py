"""Spatial transforms and multi-resolution buckets.

* `resize_crop`: aspect-preserving, antialiased resize so the frame *covers* the target size,
  then a crop (random in training, centre in evaluation) — never padding / black bars (the public
  AnimateLCM loader pads). Output is quantised to the 8-bit grid (x·255 is an integer) so that the
  latent cache can store the first frame as uint8 losslessly.
* Buckets: each clip goes to the bucket whose aspect is nearest in log space
  (|ln(h/w) − ln(h_b/w_b)| smallest; ties -> the earlier bucket); `bucket_batches` groups sample
  indices so every batch holds one bucket only.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# SVD's native sizes and their portrait twins (h, w)
DEFAULT_BUCKETS = ((576, 1024), (320, 576), (1024, 576), (576, 320))


def resize_crop(frames: np.ndarray | Tensor, height: int, width: int, crop: str = "center",
                rng: np.random.Generator | None = None, flip: bool = False) -> Tensor:
    """uint8 frames [F, H, W, 3] -> float [F, 3, height, width] in [-1, 1].

    Resize by ``s = max(height/H, width/W)`` (antialiased bilinear, aspect kept), then crop
    (``crop='random'`` needs ``rng``; ``'center'`` otherwise), then optionally flip horizontally.
    """
    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3] uint8, got shape {tuple(x.shape)}")
    src_h, src_w = int(x.shape[1]), int(x.shape[2])
    scale = max(height / src_h, width / src_w)
    new_h = max(height, int(math.ceil(src_h * scale - 1e-6)))
    new_w = max(width, int(math.ceil(src_w * scale - 1e-6)))
    x = x.permute(0, 3, 1, 2).float()
    if (new_h, new_w) != (src_h, src_w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = crop_offsets(new_h, new_w, height, width, crop, rng)
    x = x[:, :, top:top + height, left:left + width]
    if flip:
        x = x.flip(-1)
    x = x.clamp(0, 255).round()
    return (x / 127.5 - 1.0).contiguous()


def crop_offsets(h: int, w: int, height: int, width: int, crop: str = "center",
                 rng: np.random.Generator | None = None) -> tuple[int, int]:
    """(top, left) of a height×width crop of an h×w image."""
    if crop == "random":
        if rng is None:
            raise ValueError("crop='random' needs a seeded rng")
        return int(rng.integers(0, h - height + 1)), int(rng.integers(0, w - width + 1))
    if crop != "center":
        raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
    return (h - height) // 2, (w - width) // 2


def nearest_bucket(height: int, width: int, buckets: Sequence[tuple[int, int]]) -> int:
    """Index of the bucket whose aspect ratio h/w is nearest (in log space) to height/width."""
    if height <= 0 or width <= 0:
        raise ValueError(f"bad frame size {height}x{width}")
    aspect = math.log(height / width)
    return min(range(len(buckets)), key=lambda i: abs(aspect - math.log(buckets[i][0] / buckets[i][1])))


def bucket_batches(bucket_of: Sequence[int], order: Sequence[int], batch_size: int,
                   drop_last: bool = True) -> list[list[int]]:
    """Batches of sample indices, each from one bucket, in the order samples appear in ``order``.

    A bucket's batch is emitted as soon as it is full, so with a shuffled ``order`` the batch
    sequence is shuffled too. Incomplete batches at the end are dropped (or appended, bucket by
    bucket, when ``drop_last`` is False).
    """
    pending: dict[int, list[int]] = {}
    batches = []
    for i in order:
        b = bucket_of[i]
        pending.setdefault(b, []).append(int(i))
        if len(pending[b]) == batch_size:
            batches.append(pending.pop(b))
    if not drop_last:
        batches.extend(v for _, v in sorted(pending.items()) if v)
    return batches
