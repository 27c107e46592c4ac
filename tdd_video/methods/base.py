"""What a distillation method is, and the network roles the engine hands to it.

A method turns (clean latents x0, conditioning c) into a scalar loss for the student, using three
network *roles*: the teacher ψ, the target θ⁻ and the student θ. The engine (tdd_video.engine.
trainables) decides how the roles are realised — one shared base with a LoRA adapter switched on
and off (docs/math.md §9), or a frozen teacher copy for partial/full fine-tuning — so a method never knows.
Methods register a config dataclass and a class here; the engine builds them by `method.name`.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ContextManager, Protocol

import torch
from torch import nn

from tdd_video.methods.configs import method_config_class

Tensor = torch.Tensor


class NetworkRoles(Protocol):
    """The three roles a method may call. Each is a context manager yielding the module to pass
    as `unet=` to `family.denoise`; entering it switches adapters/weights, leaving restores."""

    def student(self) -> ContextManager[nn.Module]: ...
    def teacher(self) -> ContextManager[nn.Module]: ...
    def target(self, ema: bool) -> ContextManager[nn.Module]: ...


class StaticRoles:
    """Roles backed by plain modules (tests, benches, frozen-teacher layouts without switching)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, ema: nn.Module | None = None):
        self._student, self._teacher, self._ema = student, teacher, ema

    def student(self):
        return contextlib.nullcontext(self._student)

    def teacher(self):
        return contextlib.nullcontext(self._teacher)

    def target(self, ema: bool):
        return contextlib.nullcontext(self._ema if (ema and self._ema is not None) else self._student)


@dataclass
class StepOutput:
    """Result of one method step: `loss` (fp32 scalar with grad), detached per-sample stats ([B] tensors,
    e.g. 'k', 'tau', 'eta', 'loss', 'sigma') for logging, scalars to log (e.g. 'adv/g_loss'), and `aux`:
    what the method's own update after the optimizer step needs (see DistillMethod.aux_update)."""

    loss: Tensor
    stats: dict[str, Tensor] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    aux: dict = field(default_factory=dict)


class DistillMethod(ABC):
    """Base class of distillation methods (TDD, AnimateLCM, ...). Generic over families."""

    name: str = "base"

    def __init__(self, cfg, family):
        self.cfg = cfg
        self.family = family

    step: int = 0                       # the optimizer step being computed (set by the trainer)

    def set_step(self, step: int) -> None:
        """Called by the trainer before each optimizer step (0-based): schedules inside a method use it."""
        self.step = int(step)

    def aux_update(self, auxes: list[dict], nets: NetworkRoles, backend, generator) -> dict[str, float]:
        """The method's own update after the student's optimizer step (e.g. a discriminator), from the
        `aux` of this step's micro batches; returns scalars to log. Default: nothing."""
        return {}

    def state_dict(self) -> dict:
        """The method's own trainable state (e.g. discriminator heads + optimizer), saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`."""

    @property
    def target_ema(self) -> float:
        """EMA decay of the target network θ⁻ (0 = the online student under no_grad)."""
        return float(getattr(self.cfg, "target_ema", 0.0))

    @abstractmethod
    def training_step(self, x0: Tensor, cond, nets: NetworkRoles,
                      generator: torch.Generator | None = None) -> StepOutput:
        """One loss evaluation. x0: clean latents [B, F, C, h, w] (video) or [B, C, h, w];
        cond: the family's Conditioning for the batch; all randomness from `generator`."""


_REGISTRY: dict[str, type] = {}


def register_method(name: str, method_cls: type) -> None:
    """Make a method buildable from a recipe with `method.name: <name>` (its config class lives in
    tdd_video.methods.configs.CONFIGS under the same name)."""
    _REGISTRY[name] = method_cls


def build_method(name: str, cfg, family) -> DistillMethod:
    """Instantiate the registered method `name` with its validated config and a family."""
    method_config_class(name)
    if name not in _REGISTRY:                       # the method module registers itself when imported
        import importlib
        importlib.import_module(f"tdd_video.methods.{name}")
    return _REGISTRY[name](cfg, family)
