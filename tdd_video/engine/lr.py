"""Learning-rate schedules: a multiplier of the base lr per optimizer step (0-based).

Linear warm-up (i + 1)/W for the first W steps, then constant, or cosine / linear decay from 1 at
step W to `min_ratio` at step `max_steps` − 1. Used by every training backend (`train.lr_schedule`)
and by the toy-zoo build tools.
"""
from __future__ import annotations

import math
from typing import Callable

SCHEDULES = ("constant", "cosine", "linear")


def lr_multiplier(warmup_steps: int, kind: str = "constant", max_steps: int = 1,
                  min_ratio: float = 0.0) -> Callable[[int], float]:
    """factor(i) for optimizer step i (see the module docstring)."""
    if kind not in SCHEDULES:
        raise ValueError(f"lr schedule {kind!r}; allowed: {', '.join(SCHEDULES)}")
    span = max(1, max_steps - 1 - warmup_steps)

    def factor(i: int) -> float:
        if warmup_steps > 0 and i < warmup_steps:
            return (i + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        p = min(1.0, max(0.0, (i - warmup_steps) / span))
        shape = 0.5 * (1.0 + math.cos(math.pi * p)) if kind == "cosine" else 1.0 - p
        return min_ratio + (1.0 - min_ratio) * shape
    return factor


def lr_factor(cfg) -> Callable[[int], float]:
    """The multiplier of a TrainConfig (`warmup_steps`, `lr_schedule`, `max_steps`, `lr_min_ratio`)."""
    return lr_multiplier(cfg.warmup_steps, getattr(cfg, "lr_schedule", "constant"), cfg.max_steps,
                         getattr(cfg, "lr_min_ratio", 0.0))
