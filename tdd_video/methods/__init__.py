"""Distillation methods, generic over model families. Build one with `build_method(name, cfg, family)`;
a new method adds its config dataclass to methods/configs.py and registers its class with `register_method`.
Names are re-exported lazily (PEP 562): `tdd_video.methods.configs` loads without torch."""
import importlib

_WHERE = {"DistillMethod": "base", "NetworkRoles": "base", "StaticRoles": "base", "StepOutput": "base",
          "build_method": "base", "register_method": "base", "method_config_class": "configs",
          "TDD": "tdd", "TDDConfig": "configs", "AnimateLCM": "animatelcm", "AnimateLCMConfig": "configs"}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"tdd_video.methods.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'tdd_video.methods' has no attribute {name!r}")
