"""Spatial transforms and multi-resolution buckets.

* `resize_crop`: aspect-preserving, antialiased resize so the frame *covers* the target size,
  then a crop (random in training, centre in evaluation) — never padding / black bars (the public
  AnimateLCM loader pads). Output stays on the 8-bit grid ((x+1)·127.5 is an integer) so that the
  latent cache can store the first frame as uint8 losslessly. It is `to_pixels` of
  `resize_crop_uint8` (the loader measures a clip's motion on those uint8 frames, docs/math.md §13).
* Decode-time downscaling (``data.decode_resize``): `decode_size` is the size a reader's scaler
  produces so that the frame already covers the target (`cover_size`, aspect kept, e.g. 1080x1920
  -> 324x576 for a 320x576 target); `resize_crop_uint8(..., src_hw=)` then crops the region the
  full-size frame would give (offsets drawn from the rng the same way): a plain slice when the scaled
  size is exact (at scale 1 that is exactly what the resample would give), else a resample of the box
  within a pixel of the target size.
* Buckets: each clip goes to the bucket whose aspect is nearest in log space
  (|ln(h/w) − ln(h_b/w_b)| smallest; ties -> the earlier bucket); `bucket_batches` groups sample
  indices so every batch holds one bucket only.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from einops import rearrange

Tensor = torch.Tensor

# SVD's native sizes and their portrait twins (h, w)
DEFAULT_BUCKETS = ((576, 1024), (320, 576), (1024, 576), (576, 320))


def cover_size(src_h: int, src_w: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) of a ``src_h`` x ``src_w`` frame scaled by ``s = max(height/src_h, width/src_w)`` (aspect
    kept, rounded up so the frame covers ``height`` x ``width``)."""
    scale = max(height / src_h, width / src_w)
    return (max(height, int(math.ceil(src_h * scale - 1e-6))), max(width, int(math.ceil(src_w * scale - 1e-6))))


def decode_size(src_h: int, src_w: int, height: int, width: int) -> tuple[int, int] | None:
    """Size a decoder should scale a displayed ``src_h`` x ``src_w`` frame to for a ``height`` x ``width``
    target: `cover_size` when that is a downscale, None when the frame is not larger than needed (it is
    then decoded at its own size and `resize_crop_uint8` upsamples it, as without decode-time scaling)."""
    if src_h <= 0 or src_w <= 0:
        raise ValueError(f"bad frame size {src_h}x{src_w}")
    if max(height / src_h, width / src_w) >= 1.0:
        return None
    return cover_size(src_h, src_w, height, width)


def resize_crop(frames: np.ndarray | Tensor, height: int, width: int, crop: str = "center",
                rng: np.random.Generator | None = None, flip: bool = False) -> Tensor:
    """uint8 frames [F, H, W, 3] -> float [F, 3, height, width] in [-1, 1] (on the 8-bit grid).

    Scale ``s = max(height/H, width/W)`` (aspect kept, the frame covers the target), crop
    (``crop='random'`` needs ``rng``; ``'center'`` otherwise) and optionally flip horizontally.
    Implemented as one antialiased bilinear resample per frame of the crop's box in source
    coordinates (Pillow: ~7x faster than torch's antialiased interpolate on CPU, same result
    within one 8-bit level). ``to_pixels(resize_crop_uint8(...))``.
    """
    return to_pixels(resize_crop_uint8(frames, height, width, crop, rng, flip))


def resize_crop_uint8(frames: np.ndarray | Tensor, height: int, width: int, crop: str = "center",
                      rng: np.random.Generator | None = None, flip: bool = False,
                      src_hw: tuple[int, int] | None = None) -> np.ndarray:
    """`resize_crop` before the conversion to float: uint8 [F, height, width, 3].

    ``src_hw``: the frames are a scaled copy of ``src_hw``-sized frames (decode-time scaling): the crop
    is the region, drawn from ``rng`` the same way, that the full-size frames would give. It is a plain
    slice when the copy is the exact cover size (e.g. 1080x1920 -> 324x576), else a resample of a box
    within a pixel of the target size (e.g. 480x854 -> 324x576, which is 323.7x576 rounded up)."""
    from PIL import Image

    x = frames.cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    src_h, src_w = (int(v) for v in (src_hw or x.shape[1:3]))
    scale = max(height / src_h, width / src_w)
    new_h, new_w = cover_size(src_h, src_w, height, width)
    top, left = crop_offsets(new_h, new_w, height, width, crop, rng)
    box_w, box_h = min(src_w, width / scale), min(src_h, height / scale)    # crop size in source pixels
    x0 = left / (new_w - width) * (src_w - box_w) if new_w > width else (src_w - box_w) / 2
    y0 = top / (new_h - height) * (src_h - box_h) if new_h > height else (src_h - box_h) / 2
    fy, fx = x.shape[1] / src_h, x.shape[2] / src_w                         # source -> these frames' pixels
    box = (x0 * fx, y0 * fy, (x0 + box_w) * fx, (y0 + box_h) * fy)
    b = [int(round(v)) for v in box]
    if all(abs(v - r) < 1e-6 for v, r in zip(box, b)) and (b[2] - b[0], b[3] - b[1]) == (width, height):
        out = x[:, b[1]:b[3], b[0]:b[2]]  # scale 1 (e.g. scaled at decode time): the crop is a slice
        return np.ascontiguousarray(out[:, :, ::-1] if flip else out)
    out = np.empty((x.shape[0], height, width, 3), np.uint8)
    for i, frame in enumerate(x):
        out[i] = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR, box=box))
    return np.ascontiguousarray(out[:, :, ::-1]) if flip else out


def to_pixels(frames: np.ndarray) -> Tensor:
    """uint8 [F, H, W, 3] -> float [F, 3, H, W] in [-1, 1]."""
    a = np.ascontiguousarray(frames)
    if not a.flags.writeable:                   # e.g. a decoded read-only buffer: torch wants a writable array
        a = a.copy()
    t = rearrange(torch.from_numpy(a), "f h w c -> f c h w").float()
    return (t / 127.5 - 1.0).contiguous()


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
