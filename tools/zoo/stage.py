"""Small pieces shared by the zoo's training stages: per-step generators, resumable checkpoints, logs.
(LR schedules and the fp32 EMA are the engine's: tdd_video.engine.lr, tdd_video.engine.ema.)

A stage keeps everything in ``work_dir/<stage>/``: ``ckpt.pt`` (model, EMA shadow, optimizer, step:
tensors and numbers only, loaded with
``weights_only=True`` —
rewritten atomically every ``checkpoint_every`` steps), ``log.jsonl`` (one JSON line per log
event) and, when finished, ``done.json`` (final metrics). Randomness per step comes from
``step_generator(seed, step)``, so a resumed stage draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, stream)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 101 + stream) % (2**63 - 1))


class StageDir:
    """The folder of one stage: checkpoint, log and completion marker."""

    def __init__(self, work_dir: str | Path, name: str):
        self.dir = Path(work_dir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._t0 = time.time()

    @property
    def done_file(self) -> Path:
        return self.dir / "done.json"

    def is_done(self) -> bool:
        return self.done_file.is_file()

    def done_info(self) -> dict:
        return json.loads(self.done_file.read_text())

    def mark_done(self, info: dict) -> None:
        tmp = self.done_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(self.done_file)

    def log(self, **record) -> None:
        record = {"stage": self.name, "elapsed_s": round(time.time() - self._t0, 2), **record}
        with open(self.dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def save_checkpoint(self, step: int, **state) -> None:
        tmp = self.dir / "ckpt.pt.tmp"
        torch.save({"step": step, **{k: (v.state_dict() if hasattr(v, "state_dict") else v)
                                     for k, v in state.items()}}, tmp)
        tmp.replace(self.dir / "ckpt.pt")

    def load_checkpoint(self, **targets) -> int:
        """Load state into `targets` (modules/optimizers) if a checkpoint exists; returns its step (0 if none)."""
        path = self.dir / "ckpt.pt"
        if not path.is_file():
            return 0
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key, obj in targets.items():
            obj.load_state_dict(state[key])
        return int(state["step"])
