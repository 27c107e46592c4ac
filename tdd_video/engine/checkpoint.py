"""Atomic checkpoints with everything an exact resume needs.

Layout: <output_dir>/checkpoints/step_000123/ with
  state.json          step, samples seen, world size
  trainable.pt        trainable weights, fp32 (rank 0; not written under ZeRO-3, DeepSpeed has them)
  ema.pt              fp32 EMA shadow of the target network (rank 0, if any)
  ema_export.pt       fp32 EMA of the student weights that is exported (export.ema, rank 0, if any)
  method.pt           the method's own state, e.g. adversarial TDD's discriminator heads + optimizer (rank 0)
  optimizer.pt | deepspeed/   optimizer + lr schedule (plain/accelerate | DeepSpeed's own shards)
  rng_rank{r}.pt      torch / numpy / python / CUDA RNG states and the method's generator, per rank
                      (tensors and numbers only)
  data_rank{r}.json   the loader position and data counters, per rank

Safe loading: every file is read with ``torch.load(..., weights_only=True)`` (or as JSON), so a run
folder from someone else cannot execute code (DeepSpeed's own shards are read by DeepSpeed). A
checkpoint is never written from non-finite weights, and loading one with non-finite weights is
refused.

Atomicity: every rank writes into `.tmp-step_000123/`; after a barrier rank 0 renames it to
`step_000123/` (os.replace of a directory is atomic on POSIX). A crash mid-save leaves only a
`.tmp-*` folder, which `latest_checkpoint` ignores and the next save removes, so the last complete
checkpoint stays intact. The last `keep_last` complete checkpoints are kept, always including the one
just written.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

STEP_RE = re.compile(r"^step_(\d{6,})$")


class CheckpointError(ValueError):
    """A checkpoint this trainer refuses to resume (one line for the user; the CLIs print it and exit 2)."""


class NonFiniteCheckpoint(CheckpointError):
    """A checkpoint holds NaN/inf weights (it can only come from outside this trainer): loading is refused."""

    def __init__(self, folder):
        super().__init__(f"checkpoint {folder} holds non-finite (NaN/inf) weights; it was not written by a healthy "
                         "run — resume from another checkpoint or start over")


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint file that safe loading (weights_only) refuses, e.g. one written by an older format that
    pickled numpy objects: resuming it is refused with the file named and what to do instead."""

    def __init__(self, path, reason: str):
        super().__init__(f"checkpoint file {path} cannot be read safely ({reason}); it may come from an "
                         "older tdd_video checkpoint format — start a new run from its weights instead "
                         "(trainable.init_lora=<run>/export/lora or trainable.init_unet=...)")


def _safe_load(path: Path):
    """torch.load(path, weights_only=True); UnreadableCheckpoint instead of a deep unpickling stack trace."""
    import pickle
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise UnreadableCheckpoint(path, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}") from None


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_RE.match(p.name))
             and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def rng_state(generator: torch.Generator | None) -> dict:
    """Every RNG state as tensors and plain numbers (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def _finite(tensors: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in tensors.values() if torch.is_tensor(v))


def save_checkpoint(output_dir, step: int, *, backend, trainables, generator, loader, samples_seen: int,
                    keep_last: int, extra: dict | None = None, method=None) -> Path:
    """Write checkpoint `step` atomically (all ranks call this). Returns the final folder. `extra`: more
    numbers for state.json (e.g. the count of skipped non-finite steps). The caller checks that the
    weights are finite first (the trainer does, on all ranks)."""
    root = checkpoint_dir(output_dir)
    name = f"step_{step:06d}"
    tmp, final = root / f".tmp-{name}", root / name
    if backend.is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    backend.barrier()
    backend.save(tmp)
    owns_weights = getattr(backend, "name", "") == "deepspeed" and \
        backend.ds_cfg.get("zero_optimization", {}).get("stage", 0) == 3
    if backend.is_main:
        if not owns_weights:
            torch.save(trainables.state_dict(), tmp / "trainable.pt")
        if trainables.ema is not None:
            torch.save(trainables.ema.state_dict(), tmp / "ema.pt")
        if getattr(trainables, "export_ema", None) is not None:
            torch.save(trainables.export_ema.state_dict(), tmp / "ema_export.pt")
        method_state = method.state_dict() if method is not None else {}
        if method_state:
            torch.save(method_state, tmp / "method.pt")
    r = backend.rank
    torch.save(rng_state(generator), tmp / f"rng_rank{r}.pt")
    if hasattr(loader, "state_dict"):
        (tmp / f"data_rank{r}.json").write_text(json.dumps(loader.state_dict()))
    backend.barrier()
    if backend.is_main:
        (tmp / "state.json").write_text(json.dumps({"step": step, "samples_seen": samples_seen,
                                                    "world_size": backend.world_size, **(extra or {})}))
        if final.exists():
            shutil.rmtree(final)
        tmp.replace(final)
        others = [c for c in list_checkpoints(output_dir) if c != final]
        for old in others[:max(0, len(others) - (keep_last - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    backend.barrier()
    return final


def load_checkpoint(folder: Path, *, backend, trainables, generator, loader, method=None) -> dict:
    """Restore a checkpoint written by `save_checkpoint`; returns its state.json."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    if state["world_size"] != backend.world_size:
        raise RuntimeError(f"checkpoint {folder} was written by {state['world_size']} ranks, this run has "
                           f"{backend.world_size}: exact resume (RNG and data position per rank) needs the same count")
    if (folder / "trainable.pt").is_file():
        weights = _safe_load(folder / "trainable.pt")
        if not _finite(weights):
            raise NonFiniteCheckpoint(folder)
        trainables.load_state_dict(weights)
    backend.load(folder)
    for ema, name in ((trainables.ema, "ema.pt"), (getattr(trainables, "export_ema", None), "ema_export.pt")):
        if ema is not None:
            ema_state = _safe_load(folder / name)
            if not _finite(ema_state["shadow"]):
                raise NonFiniteCheckpoint(folder)
            ema.load_state_dict(ema_state)
    if method is not None and (folder / "method.pt").is_file():
        method.load_state_dict(_safe_load(folder / "method.pt"))
    r = backend.rank
    set_rng_state(_safe_load(folder / f"rng_rank{r}.pt"), generator)
    data_file = folder / f"data_rank{r}.json"
    if data_file.is_file() and hasattr(loader, "load_state_dict"):
        loader.load_state_dict(json.loads(data_file.read_text()))
    return state
