"""Training metrics: TensorBoard (rank 0) and a JSON-lines file `metrics.jsonl` in the run dir.

Every optimizer step: loss, lr, grad norm, samples/s. Every `log_every` steps, over the steps since
the last flush: histograms of the method's per-sample stats (TDD: K, τ, η, source σ) and the loss
per noise-level bin (5 bins of the source time u, TensorBoard scalars `loss_by_noise/u_a-b`).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

HIST_KEYS = ("k", "tau", "eta", "sigma", "t", "s", "w_min", "w_max")
NOISE_BINS = 5


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True, purge_step: int | None = None):
        """`purge_step`: a resumed run's first step; TensorBoard drops events from that step on (they are
        rewritten), as the trainer drops those lines of metrics.jsonl."""
        self.enabled = enabled
        self.writer = None
        self.window: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.jsonl = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)

    def add_stats(self, stats: dict[str, torch.Tensor]) -> None:
        """Accumulate a micro step's per-sample stats ([B] tensors)."""
        if self.enabled:
            for k, v in stats.items():
                self.window[k].append(v.detach().float().cpu().reshape(-1))

    def step(self, step: int, scalars: dict[str, float], prefix: str = "train/") -> None:
        """One metrics.jsonl line; TensorBoard tags `prefix` + key (validation and data scalars pass
        their own namespaced keys, e.g. val/mse_to_teacher_k4, with prefix "")."""
        if not self.enabled or not scalars:
            return
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(f"{prefix}{k}", v, step)

    def flush(self, step: int) -> dict[str, float]:
        """Write histograms and per-noise-bin losses of the window; returns the bin means."""
        out: dict[str, float] = {}
        if not self.enabled or not self.window:
            return out
        data = {k: torch.cat(v) for k, v in self.window.items()}
        self.window.clear()
        if self.writer is not None:
            for k in HIST_KEYS:
                if k in data and data[k].numel():
                    self.writer.add_histogram(f"target/{k}", data[k], step)
        if "loss" in data and "t" in data:
            edges = torch.linspace(0, 1, NOISE_BINS + 1)
            b = torch.bucketize(data["t"].clamp(1e-9, 1.0), edges[1:-1], right=False)
            for i in range(NOISE_BINS):
                sel = data["loss"][b == i]
                if sel.numel():
                    key = f"loss_by_noise/u_{edges[i]:.1f}-{edges[i + 1]:.1f}"
                    out[key] = float(sel.mean())
                    if self.writer is not None:
                        self.writer.add_scalar(key, out[key], step)
            if self.writer is not None:
                self.writer.add_histogram("loss/per_sample", data["loss"], step)
        if out:
            self.jsonl.write(json.dumps({"step": step, **out}) + "\n")
        return out

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
