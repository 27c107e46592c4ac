"""Checks of TDD's schedule parameters (pure Python, no torch: recipes are validated before torch loads)."""
from __future__ import annotations

from tdd_video.errors import ConfigError, check_range

# The sampler's default γ-sampling η (docs/math.md §5): 0 = deterministic DDIM-style jumps. Chosen by the quality
# bench (docs/quality.md): on the toy students η = 0 gives the smallest same-noise distance to the teacher's
# 25-step output at every step count, for SVD and SDXL; η > 0 trades that distance for sharpness.
DEFAULT_ETA = 0.0


def validate_tdd_params(num_grid: int, k_min: int, k_max: int, eta_max: float = 0.0) -> None:
    """Reject inconsistent TDD settings with a message naming the key and allowed range (docs/math.md §3)."""
    check_range("k_min", k_min, 1, None)
    if k_max < k_min:
        raise ConfigError("k_max", f"got {k_max}, must be >= k_min ({k_min})")
    if num_grid < k_max:
        raise ConfigError("num_grid", f"got {num_grid}, must be >= k_max ({k_max}): "
                                      f"a K-step schedule needs K distinct grid points")
    check_range("eta_max", eta_max, 0.0, 1.0, hi_open=True)
