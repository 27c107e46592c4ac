"""Which weights train, and how the teacher / target / student roles are realised (docs/math.md §9).

Layouts (`trainable.kind`):
* ``lora`` (default): a LoRA adapter "student" on the shared frozen base. Teacher = the same
  module with adapters disabled, target = the student adapter under no_grad (or the fp32 EMA
  swapped into it). One copy of the base weights in memory instead of three.
* ``spatial`` / ``temporal``: fine-tune only the spatial (``transformer_blocks``,
  ``spatial_res_block``) or temporal (``temporal_transformer_blocks``, ``temporal_res_block``,
  ``time_mixer``, ``time_pos_embed``) parts of the SVD UNet; the teacher is a frozen copy.
* ``full``: every UNet weight trains; the teacher is a frozen copy.

Staged training (AnimateLCM: spatial blocks first, then temporal blocks): stage 2 passes
``init_unet`` = stage 1's trained UNet (its ``export/unet`` folder or a state-dict file). The frozen
teacher copy is taken from the base BEFORE that UNet is loaded (strictly) into the student, so
stage 2's student starts from stage 1 while its teacher stays the original model.
"""
from __future__ import annotations

import contextlib
import copy
import re

import torch
from torch import nn

from tdd_video import lora
from tdd_video.engine.ema import EMA
from tdd_video.errors import ConfigError
from tdd_video.unet_checkpoint import load_unet_checkpoint

STUDENT = "student"
# '(^|\.)' anchors: a bare `.*transformer_blocks\.` would also match `temporal_transformer_blocks`.
SPATIAL_RE = re.compile(r"(^|\.)(transformer_blocks|spatial_res_block)\.")
TEMPORAL_RE = re.compile(r"(^|\.)(temporal_transformer_blocks|temporal_res_block|time_mixer|time_pos_embed)\.")


class StudentCall:
    """Calls go through the training wrapper (DeepSpeed engine / DDP); attributes come from the
    plain module (dtype, config …), which wrappers do not all forward."""

    def __init__(self, wrapper, module: nn.Module):
        self.wrapper, self.module = wrapper, module

    def __call__(self, *args, **kwargs):
        return self.wrapper(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.module, name)


class Trainables:
    """Sets requires_grad per layout, owns the optional EMA, and implements NetworkRoles."""

    def __init__(self, family, kind: str = "lora", *, lora_rank: int = 64, lora_alpha: float | None = None,
                 lora_preset: str = "attn", gradient_checkpointing: bool = False, ema_decay: float = 0.0,
                 export_ema_decay: float = 0.0, init_lora: str | None = None,
                 init_unet: str | None = None):
        self.family, self.kind = family, kind
        self.module: nn.Module = family.unet
        self.module.requires_grad_(False)
        self.teacher_module: nn.Module | None = None
        self.lora_rank, self.lora_alpha = lora_rank, (lora_alpha if lora_alpha is not None else float(lora_rank))
        if kind == "lora":
            if init_unet is not None:
                raise ConfigError("trainable.init_unet", "not with a LoRA student (it shares the base with the "
                                                         "teacher); use kind spatial, temporal or full")
            lora.add_lora(self.module, STUDENT, rank=lora_rank, alpha=self.lora_alpha, preset=lora_preset,
                          init_from=init_lora)
            for n, p in self.module.named_parameters():
                p.requires_grad_(f".{STUDENT}." in f".{n}." or n.endswith(f".{STUDENT}"))
        else:
            self.teacher_module = copy.deepcopy(self.module).requires_grad_(False).eval()
            if init_unet is not None:       # staged training: the student starts from an earlier stage
                load_unet_checkpoint(self.module, init_unet, strict=True)
            for n, p in self.module.named_parameters():
                p.requires_grad_(kind == "full" or bool((SPATIAL_RE if kind == "spatial" else TEMPORAL_RE).search(n)))
        if not any(p.requires_grad for p in self.module.parameters()):
            raise ConfigError("trainable.kind", f"layout {kind!r} selects no parameter of {type(self.module).__name__}")
        if gradient_checkpointing:
            if not hasattr(self.module, "enable_gradient_checkpointing"):
                raise ConfigError("trainable.gradient_checkpointing",
                                  f"{type(self.module).__name__} does not support gradient checkpointing")
            self.module.enable_gradient_checkpointing()
        self.wrapper = self.module            # replaced by the backend (DeepSpeed engine / DDP)
        self.ema = EMA(self.named_parameters(), ema_decay) if ema_decay > 0 else None          # target θ⁻
        self.export_ema = EMA(self.named_parameters(), export_ema_decay) if export_ema_decay > 0 else None

    # -- parameters --------------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]

    def parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_trainable(self) -> int:
        return sum(getattr(p, "ds_numel", p.numel()) for p in self.parameters())   # ZeRO-3: full size

    def held_bytes(self) -> dict[str, int]:
        """Bytes of weights this rank holds: the student module (LoRA: base + adapters) and the frozen teacher
        copy (0 for a LoRA student, whose teacher is the same base). Under ZeRO-3, this rank's partitions."""
        def size(m):
            held = (getattr(p, "ds_tensor", p) for p in (m.parameters() if m is not None else ()))
            return sum(t.numel() * t.element_size() for t in held)
        return {"student": size(self.module), "teacher": size(self.teacher_module)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable weights only, fp32 on CPU (what a checkpoint stores)."""
        return {n: p.detach().float().cpu().clone() for n, p in self.named_parameters()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        if set(params) != set(state):
            diff = sorted(set(params) ^ set(state))
            raise KeyError(f"checkpoint does not match the trainable parameters, e.g. {diff[:5]}")
        for n, p in params.items():
            p.copy_(state[n].to(p.dtype))

    def update_ema(self) -> None:
        for ema in (self.ema, self.export_ema):
            if ema is not None:
                ema.update(self.named_parameters())

    @contextlib.contextmanager
    def exported_weights(self):
        """The weights a run exports: the student's, or its export EMA (export.ema) swapped in."""
        if self.export_ema is None:
            yield self.module
        else:
            with self.export_ema.swapped_in(self.named_parameters()):
                yield self.module

    # -- NetworkRoles ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def student(self):
        yield StudentCall(self.wrapper, self.module) if self.wrapper is not self.module else self.module

    @contextlib.contextmanager
    def teacher(self):
        if self.teacher_module is not None:
            yield self.teacher_module
            return
        with lora.adapters_disabled(self.module):
            yield self.module

    @contextlib.contextmanager
    def target(self, ema: bool):
        if ema and self.ema is not None:
            with self.ema.swapped_in(self.named_parameters()):
                yield self.module
        else:
            yield self.module
