"""Model-family registry: ``load_family("svd" | "sdxl", model, dtype=..., device=...)``.

``model`` is a local diffusers pipeline folder or a hub id (hub ids need a reachable hub);
``model=None`` or ``"tiny"`` / ``"tiny:SEED"`` builds the tiny random-weight model of that family in
memory (tests, demo; the trained toy zoo is a folder you pass as ``model``).
"""
from __future__ import annotations

import importlib

import torch

from tdd_video.errors import ConfigError
from tdd_video.families.base import Conditioning, Family, check_model_folder, quiet_loading

# name -> (module, class); imported lazily so `import tdd_video.families` stays light.
FAMILIES: dict[str, tuple[str, str]] = {
    "svd": ("tdd_video.families.svd", "SVDFamily"),
    "sdxl": ("tdd_video.families.sdxl", "SDXLFamily"),
}


def family_class(name: str) -> type[Family]:
    """The Family subclass registered under `name`; ConfigError listing the known names otherwise."""
    if name not in FAMILIES:
        raise ConfigError("family", f"unknown model family {name!r}; known families: {', '.join(sorted(FAMILIES))}")
    module, cls = FAMILIES[name]
    return getattr(importlib.import_module(module), cls)


def parse_tiny(model) -> int | None:
    """Seed if `model` names the tiny random model (None, "tiny", "tiny:SEED"), else None."""
    if model is None:
        return 0
    if isinstance(model, str) and (model == "tiny" or model.startswith("tiny:")):
        try:
            return int(model.split(":", 1)[1]) if ":" in model else 0
        except ValueError:
            raise ConfigError("model", f"got {model!r}; expected 'tiny' or 'tiny:<int seed>'") from None
    return None


def load_family(name: str, model=None, *, dtype: torch.dtype = torch.float32, device="cpu", **kwargs) -> Family:
    """Build family `name` from a diffusers folder / hub id, or the tiny random model (see module doc).

    Loading is quiet (families.base.quiet_loading): no library progress bars or notices."""
    cls = family_class(name)
    seed = parse_tiny(model)
    with quiet_loading():
        if getattr(cls, "pipeline_class", None):      # import it now, quietly (the families use its helpers)
            getattr(importlib.import_module("diffusers"), cls.pipeline_class)
        if seed is not None:
            kwargs.pop("variant", None)   # weight-file variants mean nothing for an in-memory model
            return cls.tiny(seed=seed, dtype=dtype, device=device, **kwargs)
        return cls.from_pretrained(model, dtype=dtype, device=device, **kwargs)


__all__ = ["FAMILIES", "Conditioning", "Family", "check_model_folder", "family_class", "load_family", "parse_tiny",
           "quiet_loading"]
