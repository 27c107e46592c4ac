"""Distillation methods, generic over model families. Build one with `build_method(name, cfg, family)`;
a new method registers its config class and method class with `register_method`."""
from tdd_video.methods.animatelcm import AnimateLCM, AnimateLCMConfig  # registers "animatelcm"
from tdd_video.methods.base import (
                                    DistillMethod,
                                    NetworkRoles,
                                    StaticRoles,
                                    StepOutput,
                                    build_method,
                                    method_config_class,
                                    register_method,
)
from tdd_video.methods.tdd import TDD, TDDConfig

__all__ = ["DistillMethod", "NetworkRoles", "StaticRoles", "StepOutput", "build_method", "method_config_class",
           "register_method", "TDD", "TDDConfig", "AnimateLCM", "AnimateLCMConfig"]
