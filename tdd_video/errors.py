"""Project-wide exception types with messages that name the offending key."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of its allowed range."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")


def check_range(key: str, value, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False):
    """Raise ConfigError unless lo <= value <= hi (bounds optionally open). Returns value."""
    lo_ok = lo is None or (value > lo if lo_open else value >= lo)
    hi_ok = hi is None or (value < hi if hi_open else value <= hi)
    if not (lo_ok and hi_ok):
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(key, f"got {value!r}, allowed range is {left}{lo_s}, {hi_s}{right}")
    return value
