"""Motion from the frames: SVD's ``motion_bucket_id`` estimated per clip (docs/math.md §13).

SVD is conditioned on ``added_time_ids = [fps_id, motion_bucket_id, σ_aug]`` (docs/math.md §1a). A real
clip without a motion annotation gets the default 127, so a student distilled on such data never sees
the motion input vary with the content. Stability describes the bucket as growing with the amount of
motion (SVD curated its data with dense optical flow) but never published the map from a video to its
bucket (Stability-AI/generative-models issue #354). This module defines one:

1. a **raw motion** ``m`` (`estimate_motion`): the clip's mean optical-flow magnitude, in *frame
   diagonals per second* — independent of the frame size and of the sampling stride;
2. a **bucket** in 0..255 (`MotionCalibration.bucket`): a monotone, documented map of ``m``,
   calibrated on a dataset (its quantiles) or fixed (a JSON file or three given percentiles).

Estimator: pyramidal Lucas–Kanade dense flow at 32 px
------------------------------------------------------
Why optical flow and not a cheaper proxy: the mean absolute frame difference measures *contrast ×
displacement* and saturates once the displacement exceeds the texture's correlation length, so a
low-contrast fast pan and a high-contrast slow one look alike; global phase correlation sees only a
camera translation (a moving object over a still background reads 0). Flow measures displacement —
what "amount of motion" means — and at 32 px it costs a few milliseconds.

Steps (numpy / Pillow / float32 torch on CPU; no OpenCV):

* luma ``Y = 0.299 R + 0.587 G + 0.114 B`` in [0, 1], box-averaged down to a short side of
  ``WORK_SHORT`` = 32 px (320×576 → 32×58; smaller frames are used as they are) — every clip is seen
  at the same size, hence the size invariance — then a 5-tap binomial blur (σ = 1 px);
* a pyramid of area-halvings while the short side stays ≥ ``MIN_LEVEL`` = 16 (32 → 16: 2 levels);
* coarse to fine, on all F − 1 consecutive frame pairs at once: the coarser level's flow is upsampled,
  then ``ITERATIONS`` = 2 Lucas–Kanade updates (4 on the coarsest level): warp frame f + 1 by the flow
  (bilinear, border padding) and solve ``(G + λI) d = −b`` per pixel, ``G`` the structure tensor of
  frame f's gradients and ``b`` the gradient × temporal difference, both summed over a 5×5 binomial
  window, Tikhonov ``λ = 1e-4`` (flat regions get d ≈ 0 instead of noise); each update clipped to ±1 px;
* per pair: the mean flow magnitude over the frame (2 px at the border left out, where content
  enters or leaves), divided by the working frame's diagonal → diagonals per frame;
* per clip: the **median** over the pairs (one cut or glitch does not count) × the clip's real fps
  (source fps / stride) → ``m`` in diagonals per second. One frame → 0.

Properties (tests/test_data_motion.py): ≈ 0 for a still clip (< 1e-6 diagonals/s, also after H.264),
monotone in the true speed and within ≈ ±30 % of it for pans of 0.1–8 % of the width per frame,
within 10 % across frame sizes (32×56 … 576×1024), deterministic (no randomness; the same bits for
the same input, also across torch thread counts). Limits: textureless interiors move only at their
edges (aperture problem — a flat shape counts by its outline), fades read as a little motion, and
per-frame displacements above ≈ 25 % of the short side are underestimated. The calibration is rank
based, so a monotone bias changes no bucket order.

Cost (one thread, as in a loader worker; numbers in docs/math.md §13): ≈ 8 ms per clip of 14 frames
at 320×576, where decoding + resizing the same clip takes ≈ 100–270 ms; ≈ 2.2 ms at 8 frames of
32×32 (about the decode time of such a tiny clip — a fixed cost of ~300 small torch operations).

Calibration: raw motion → bucket
--------------------------------
Knots ``(r_k, b_k)``: raw motion ``r_k`` at percentile level ``q_k`` of a dataset's clips, bucket
``b_k = 255 · q_k / 100``. The bucket of a clip is the piecewise-linear interpolation through the
knots (the end segments extended), clamped to [0, 255] and rounded half up. Knots with equal raw
values are merged (average bucket — the average rank of tied clips).

* dataset calibration (``MotionCalibration.from_values``): levels 0, 5, …, 100 (21 knots), i.e.
  bucket ≈ 255 · (rank of the clip's motion among the dataset's clips) / (n − 1), exact when n − 1
  divides 20 (e.g. n = 6, 11, 21) and within one knot step (12.75) otherwise. The dataset's clips spread
  evenly over 0..255 and the median clip gets 127.5 → 128, next to SVD's default 127.
* fixed calibration: a JSON file written by `MotionCalibration.save` (``data.motion_calibration``), or
  the raw motion at the 5th/50th/95th percentiles (``data.motion_percentiles``), which become
  buckets 12.75 / 127.5 / 242.25 with the outer segments extended.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

WORK_SHORT = 32          # short side of the working resolution (px): every clip is seen at this size
MIN_LEVEL = 16           # coarsest pyramid level keeps a short side >= this
PRE_BLUR = 1             # binomial blur passes (σ = 1 px at the working resolution) before the pyramid
WINDOW = 1               # binomial passes of the Lucas-Kanade window (5×5, σ = 1 px)
ITERATIONS = 2           # Lucas-Kanade updates per pyramid level (twice as many on the coarsest)
TIKHONOV = 1e-4          # λ added to the structure tensor's diagonal
MAX_STEP = 1.0           # |update| clip per iteration (px)
BORDER = 2               # px left out around the working frame when averaging the magnitude
ESTIMATOR = "lucas-kanade-pyramid-v1"
UNIT = "frame diagonals per second"

LEVELS = tuple(float(q) for q in range(0, 101, 5))     # dataset calibration: every 5 % of the clips
PERCENTILE_LEVELS = (5.0, 50.0, 95.0)                   # data.motion_percentiles: raw at these levels
CALIBRATION_VERSION = 1


# ------------------------------------------------------------------------------------ estimator
BINOMIAL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)   # 5-tap binomial ≈ Gaussian with σ = 1 px


def _blur(x: torch.Tensor, passes: int = 1) -> torch.Tensor:
    """Separable 5-tap binomial blur of [N, C, h, w], replicated borders, ``passes`` times (σ = √passes px).
    Written as weighted sums of shifted views: several times faster on CPU than torch's grouped
    convolution at these sizes."""
    h, w = x.shape[-2:]
    for _ in range(passes):
        p = F.pad(x, (2, 2, 0, 0), mode="replicate")
        x = sum(k * p[..., i:i + w] for i, k in enumerate(BINOMIAL))
        p = F.pad(x, (0, 0, 2, 2), mode="replicate")
        x = sum(k * p[..., i:i + h, :] for i, k in enumerate(BINOMIAL))
    return x


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of [N, 1, h, w] (one-sided at the borders, via replicate padding)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) * 0.5, (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) * 0.5


def working_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the working frames: short side min(WORK_SHORT, its own), aspect kept."""
    s = min(1.0, WORK_SHORT / min(height, width))
    return max(1, round(height * s)), max(1, round(width * s))


def _luma_uint8(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> luma [F, 1, h, w] in [0, 1] at the working size, with Pillow: ITU-R 601 luma
    (L), then box reductions in float ("F") — ~4x cheaper than the same in torch on the float frames."""
    from PIL import Image

    h, w = working_size(*frames.shape[1:3])
    k = min(frames.shape[1:3]) // WORK_SHORT
    out = np.empty((len(frames), 1, h, w), np.float32)
    for i, frame in enumerate(frames):
        im = Image.fromarray(np.ascontiguousarray(frame)).convert("L").convert("F")
        if k >= 2:
            im = im.reduce(k)
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BOX)
        out[i, 0] = np.asarray(im)
    return torch.from_numpy(out).div_(255.0)


def _luma_float(frames: torch.Tensor) -> torch.Tensor:
    """float [F, 3, H, W] in [-1, 1] -> luma [F, 1, h, w] in [0, 1] at the working size (box averages)."""
    y = F.conv2d(frames.detach().cpu().float(), torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))
    h, w = working_size(*y.shape[-2:])
    k = min(y.shape[-2:]) // WORK_SHORT
    if k >= 2:
        y = F.avg_pool2d(y, k, ceil_mode=True)
    if y.shape[-2:] != (h, w):
        y = F.interpolate(y, size=(h, w), mode="area")
    return (y + 1.0) * 0.5                                   # the luma weights sum to 1


def working_frames(frames) -> torch.Tensor:
    """Luma in [0, 1] at the working resolution (short side ≤ WORK_SHORT), blurred: [F, 1, h, w].

    Accepts uint8 [F, H, W, 3] (numpy or tensor; the data loader's path) or float [F, 3, H, W] in [-1, 1].
    Downsampling is a box average: by the integer factor k = ⌊short side / WORK_SHORT⌋, then an area
    resize to the exact working size."""
    if isinstance(frames, torch.Tensor) and frames.dtype != torch.uint8:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"float frames must be [F, 3, H, W] in [-1, 1], got {tuple(frames.shape)}")
        y = _luma_float(frames)
    else:
        x = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [F, H, W, 3] or float [F, 3, H, W], got {x.dtype} {x.shape}")
        y = _luma_uint8(x)
    return _blur(y, PRE_BLUR)


def _pyramid(x: torch.Tensor) -> list[torch.Tensor]:
    levels = [x]
    while min(levels[-1].shape[-2:]) // 2 >= MIN_LEVEL:
        h, w = levels[-1].shape[-2:]
        levels.append(F.interpolate(levels[-1], size=((h + 1) // 2, (w + 1) // 2), mode="area"))
    return levels


def dense_flow(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Pyramidal Lucas–Kanade flow from `first` to `second` ([N, 1, h, w] each): [N, 2, h, w] in px,
    such that second(x + flow(x)) ≈ first(x)."""
    p0, p1 = _pyramid(first), _pyramid(second)
    flow = None
    for level in range(len(p0) - 1, -1, -1):
        i0, i1 = p0[level], p1[level]
        h, w = i0.shape[-2:]
        if flow is None:
            flow = torch.zeros(i0.shape[0], 2, h, w)
        else:
            ph, pw = flow.shape[-2:]
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=True)
            flow = flow * torch.tensor([w / pw, h / ph], dtype=torch.float32).view(1, 2, 1, 1)
        gx, gy = _gradients(i0)
        sxx, sxy, syy = _blur(torch.cat((gx * gx, gx * gy, gy * gy), 1), WINDOW).unbind(1)
        sxx, syy = sxx + TIKHONOV, syy + TIKHONOV
        det = sxx * syy - sxy * sxy
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=torch.float32)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        base = torch.stack((xs, ys), -1) * scale - 1.0                      # [h, w, 2], align_corners grid
        for _ in range(ITERATIONS * (2 if level == len(p0) - 1 else 1)):
            grid = base + flow.permute(0, 2, 3, 1) * scale
            it = F.grid_sample(i1, grid, mode="bilinear", padding_mode="border", align_corners=True) - i0
            bx, by = _blur(torch.cat((gx * it, gy * it), 1), WINDOW).unbind(1)
            du = (sxy * by - syy * bx) / det
            dv = (sxy * bx - sxx * by) / det
            flow = flow + torch.stack((du, dv), 1).clamp(-MAX_STEP, MAX_STEP)
    return flow


def pair_motion(frames) -> np.ndarray:
    """Mean flow magnitude of each consecutive frame pair, in frame diagonals per frame: [F − 1] float64."""
    with torch.no_grad():
        y = working_frames(frames)
        if y.shape[0] < 2:
            return np.zeros(0)
        flow = dense_flow(y[:-1], y[1:])
        h, w = flow.shape[-2:]
        b = BORDER if min(h, w) > 4 * BORDER else 0
        mag = flow[..., b:h - b, b:w - b].pow(2).sum(1).sqrt()
        return (mag.mean(dim=(1, 2)).double() / math.hypot(h, w)).numpy()


def estimate_motion(frames, fps: float) -> float:
    """Raw motion of a clip in frame diagonals per second: median over frame pairs of the mean flow
    magnitude (diagonals per frame) × the clip's real fps. Frames: uint8 [F, H, W, 3] or float
    [F, 3, H, W] in [-1, 1]. See the module docstring and docs/math.md §13."""
    if not fps or fps <= 0:
        raise ValueError(f"estimate_motion needs the clip's fps > 0, got {fps!r}")
    per_pair = pair_motion(frames)
    return float(np.median(per_pair) * fps) if len(per_pair) else 0.0


# ---------------------------------------------------------------------------------- calibration
def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class MotionCalibration:
    """Monotone map raw motion (diagonals/s) -> motion_bucket_id: knots (raw[k], 255·levels[k]/100),
    piecewise linear with the end segments extended, clamped to [0, 255], rounded half up."""

    levels: tuple[float, ...]
    raw: tuple[float, ...]
    num_clips: int = field(default=0, compare=False)                # clips it was computed on (0: given)
    settings: dict = field(default_factory=dict, compare=False)   # how it was computed (data, estimator)

    def __post_init__(self):
        if len(self.levels) != len(self.raw) or not self.raw:
            raise ValueError(f"a motion calibration needs as many levels as raw values (>= 1), got "
                             f"{len(self.levels)} and {len(self.raw)}")
        if any(not math.isfinite(r) for r in self.raw) or any(not 0 <= q <= 100 for q in self.levels):
            raise ValueError(f"bad motion calibration knots: levels {self.levels}, raw {self.raw}")
        if any(b < a for seq in (self.levels, self.raw) for a, b in zip(seq, seq[1:])):
            raise ValueError(f"motion calibration knots must be non-decreasing: levels {self.levels}, raw {self.raw}")

    @property
    def buckets(self) -> tuple[float, ...]:
        return tuple(255.0 * q / 100.0 for q in self.levels)

    def knots(self) -> tuple[np.ndarray, np.ndarray]:
        """(raw, bucket) with tied raw values merged (average bucket)."""
        xs: list[float] = []
        ys: list[list[float]] = []
        for x, y in zip(self.raw, self.buckets):
            if xs and x == xs[-1]:
                ys[-1].append(y)
            else:
                xs.append(x)
                ys.append([y])
        return np.array(xs, dtype=np.float64), np.array([sum(v) / len(v) for v in ys], dtype=np.float64)

    def value(self, raw) -> np.ndarray:
        """Unrounded bucket (float, clamped to [0, 255]) of raw motion value(s)."""
        x = np.asarray(raw, dtype=np.float64)
        kx, ky = self.knots()
        if len(kx) == 1:
            return np.clip(np.full_like(x, ky[0]), 0.0, 255.0)
        y = np.interp(x, kx, ky)
        lo_slope = (ky[1] - ky[0]) / (kx[1] - kx[0])
        hi_slope = (ky[-1] - ky[-2]) / (kx[-1] - kx[-2])
        y = np.where(x < kx[0], ky[0] + (x - kx[0]) * lo_slope, y)
        y = np.where(x > kx[-1], ky[-1] + (x - kx[-1]) * hi_slope, y)
        return np.clip(y, 0.0, 255.0)

    def bucket(self, raw: float) -> int:
        """motion_bucket_id (0..255) of one clip's raw motion: `value` rounded half up (after rounding to
        1e-6, so that float noise at a knot cannot flip a half)."""
        return _round_half_up(round(float(self.value(float(raw))), 6))

    # -- construction
    @classmethod
    def from_values(cls, values: Sequence[float], levels: Sequence[float] = LEVELS,
                    settings: dict | None = None) -> "MotionCalibration":
        """Dataset calibration: the raw motion of the clips at percentile ``levels`` (numpy's linear
        interpolation between order statistics)."""
        v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
        if v.size == 0:
            raise ValueError("cannot calibrate motion buckets on zero clips (no readable clip in the data?)")
        raw = np.percentile(v, list(levels))
        raw = np.maximum.accumulate(raw)                      # guard against round-off non-monotonicity
        return cls(tuple(float(q) for q in levels), tuple(float(r) for r in raw), int(v.size), dict(settings or {}))

    @classmethod
    def from_percentiles(cls, p5: float, p50: float, p95: float) -> "MotionCalibration":
        """Fixed calibration from the raw motion at the 5th, 50th and 95th percentiles."""
        return cls(PERCENTILE_LEVELS, (float(p5), float(p50), float(p95)), 0, {"given": "percentiles"})

    # -- storage
    def to_dict(self) -> dict:
        return {"version": CALIBRATION_VERSION, "unit": UNIT, "estimator": ESTIMATOR,
                "rule": "piecewise-linear through (raw, bucket) knots, end segments extended, clamp [0, 255], "
                        "round half up (docs/math.md §13)",
                "levels": list(self.levels), "raw": list(self.raw), "buckets": list(self.buckets),
                "num_clips": self.num_clips, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict) -> "MotionCalibration":
        if not isinstance(d, dict) or "raw" not in d or "levels" not in d:
            raise ValueError("a motion calibration needs 'levels' (percent) and 'raw' (motion at those levels)")
        if d.get("estimator", ESTIMATOR) != ESTIMATOR:
            raise ValueError(f"motion calibration made with estimator {d.get('estimator')!r}, this code has "
                             f"{ESTIMATOR!r}: recompute it (tdd-check-data --motion --write-calibration)")
        return cls(tuple(float(q) for q in d["levels"]), tuple(float(r) for r in d["raw"]),
                   int(d.get("num_clips", 0)), dict(d.get("settings") or {}))

    def save(self, path: str | Path) -> Path:
        """Write the JSON atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MotionCalibration":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a usable motion calibration ({e})") from None


def default_calibration_path(data_path: str | Path) -> Path:
    """Where a dataset's own calibration is stored: ``<folder>/motion_calibration.json`` for a folder
    of videos, ``<manifest stem>.motion_calibration.json`` next to a manifest / WebVid CSV."""
    p = Path(data_path).expanduser().absolute()
    return p / "motion_calibration.json" if p.is_dir() else p.with_name(p.stem + ".motion_calibration.json")


def records_fingerprint(paths: Sequence[str]) -> str:
    """A short hash of the list of video paths a calibration was computed on."""
    h = hashlib.sha1()
    for p in paths:
        h.update(str(p).encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:16]


def describe(values: Sequence[float], calibration: MotionCalibration | None, bins: int = 16) -> dict:
    """Summary of raw motion values: percentiles, and the bucket histogram (``bins`` equal bins over
    0..255, keyed by their lower edge) under ``calibration``."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    out: dict = {"unit": UNIT, "num_clips": int(v.size)}
    if v.size == 0:
        return out
    qs = (0, 5, 25, 50, 75, 95, 100)
    out["percentiles"] = {str(q): float(x) for q, x in zip(qs, np.percentile(v, qs))}
    out["mean"] = float(v.mean())
    if calibration is not None:
        width = 256 // bins
        hist = {b * width: 0 for b in range(bins)}
        for x in v:
            hist[min(calibration.bucket(x) // width, bins - 1) * width] += 1
        out["bucket_histogram"] = hist
        out["calibration"] = calibration.to_dict()
    return out
