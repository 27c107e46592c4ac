"""fp32 exponential moving average of the trainable parameters (the optional target network θ⁻).

The shadow is kept in float32 whatever the compute dtype (bf16 under DeepSpeed): decay 0.95 applied
to bf16 weights would lose most updates (the public AnimateLCM code keeps its EMA in fp16). The
target role swaps the shadow into the trainable parameters under no_grad and restores them after,
so the same layout serves LoRA adapters and partial/full fine-tuning without a second module.
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from torch import nn

Tensor = torch.Tensor


class EMA:
    """shadow ← decay·shadow + (1 − decay)·θ, in float32. Keys are parameter names."""

    def __init__(self, named_params: Iterable[tuple[str, nn.Parameter]], decay: float):
        self.decay = float(decay)
        self.shadow: dict[str, Tensor] = {n: p.detach().float().clone() for n, p in named_params}

    @torch.no_grad()
    def update(self, named_params: Iterable[tuple[str, nn.Parameter]], decay: float | None = None) -> None:
        """One EMA step (`decay` overrides the stored decay for this step, e.g. an EMA warm-up)."""
        d = self.decay if decay is None else float(decay)
        for n, p in named_params:
            self.shadow[n].lerp_(p.detach().float().to(self.shadow[n].device), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, named_params: Iterable[tuple[str, nn.Parameter]]) -> None:
        """Write the shadow into the parameters for good (export / evaluation of the EMA weights)."""
        for n, p in named_params:
            p.copy_(self.shadow[n].to(p.dtype))

    @contextlib.contextmanager
    def swapped_in(self, named_params: Iterable[tuple[str, nn.Parameter]]):
        """Temporarily load the shadow into the parameters (in their dtype); restore on exit."""
        params = list(named_params)
        backup = [p.detach().clone() for _, p in params]
        with torch.no_grad():
            for n, p in params:
                p.copy_(self.shadow[n].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), b in zip(params, backup):
                    p.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state does not match the trainable parameters: {sorted(missing)[:5]}")
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
