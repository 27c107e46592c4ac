"""Typed recipe sections: a dataclass built from a YAML mapping, every key checked by its type hint.

Unknown keys are refused by name (with the allowed keys listed), values are checked (and YAML's
string-for-number quirk coerced) against the field's type, nested dataclass fields are built
recursively, and a section's ``validate(prefix)`` runs last. Pure Python: importing it (and the recipe
classes built on it) pulls in neither torch nor diffusers, so a wrong value is reported at once.
"""
from __future__ import annotations

import dataclasses
import types
import typing

from tdd_video.errors import ConfigError


def check_type(key: str, value, hint):
    """Coerce/check one value against a type hint (int, float, bool, str, list, Optional[...])."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return check_type(key, value, inner[0]) if len(inner) == 1 else value
    if hint is typing.Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"got {value!r}, expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"got {value!r}, expected an integer")
        return value
    if hint is float:
        if isinstance(value, str):          # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"got {value!r}, expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"got {value!r}, expected a string")
        return value
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"got {value!r}, expected a list")
        args = typing.get_args(hint)
        if origin is list and len(args) == 1:
            return [check_type(f"{key}[{n}]", v, args[0]) for n, v in enumerate(value)]
        return list(value)
    return value


def build_section(cls, values: dict | None, prefix: str, validate: bool = True):
    """Instantiate dataclass `cls` from a dict: unknown keys rejected, types checked, `validate(prefix)` run
    (unless `validate` is False). A field whose type is a dataclass is built recursively (`prefix.field`)."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping of keys, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = f"'{prefix}'" if prefix else "the recipe"
        raise ConfigError(_join(prefix, unknown[0]), f"unknown key; allowed keys in {where} are: {', '.join(names)}")
    kwargs = {}
    for k, v in values.items():
        if dataclasses.is_dataclass(hints[k]):
            kwargs[k] = build_section(hints[k], v, _join(prefix, k))
        else:
            kwargs[k] = check_type(_join(prefix, k), v, hints[k])
    obj = cls(**kwargs)
    if validate and hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


