"""The training loop: Method × Family × Trainables on a backend (plain / DeepSpeed / accelerate).

    for each optimizer step:  for each micro batch:  x0, c = family.encode(batch)
                                                      loss = method.training_step(x0, c, roles)
                                                      non-finite loss on any rank → stop (no checkpoint)
                                                      backend.backward(loss)
                              backend.step() (clip, AdamW, warmup lr);  EMA update
                              log / validate / checkpoint (atomic) at their intervals
    end: final checkpoint and export (LoRA in diffusers format, optionally a fused UNet folder)

`train(cfg)` builds everything from a validated Config; tests and benches may inject `family`
and `loader` (any iterable of batches with state_dict/load_state_dict for exact resume).
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from tdd_video import lora
from tdd_video.engine.build import build_family, build_loader, check_init_unet
from tdd_video.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tdd_video.engine.config import check_runnable
from tdd_video.engine.distributed import make_backend
from tdd_video.engine.logging import MetricsLogger
from tdd_video.engine.preempt import Preempted, PreemptionFlag
from tdd_video.engine.rundir import RunLock, prepare_run_dir, truncate_metrics
from tdd_video.engine.trainables import Trainables
from tdd_video.engine.validation import Validator, validation_duties
from tdd_video.errors import ConfigError
from tdd_video.methods import build_method

logger = logging.getLogger("tdd_video.engine")


class NonFiniteLoss(RuntimeError):
    """The run stopped because of non-finite losses / gradients; no checkpoint was written from that state."""

    def __init__(self, step: int, message: str):
        self.step = step
        super().__init__(f"{message} (at optimizer step {step}). Training stopped; no checkpoint was written from "
                         f"this state. Lower train.lr or trainable.lora_alpha, check the data, or resume from the "
                         f"last checkpoint.")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _resume_folder(cfg, run_dir: Path):
    r = cfg.run.resume
    if r is None:
        return None
    if r == "auto":
        return latest_checkpoint(run_dir)
    p = Path(r)
    if not (p / "state.json").is_file():
        raise ConfigError("run.resume", f"{p} is not a complete checkpoint folder (no state.json)")
    return p


def _export_context(trainables, backend):
    """Under ZeRO-3 every rank must take part in gathering the partitioned weights."""
    import contextlib
    if backend.name == "deepspeed" and backend.ds_cfg.get("zero_optimization", {}).get("stage", 0) == 3:
        import deepspeed
        return deepspeed.zero.GatheredParameters(list(trainables.module.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


EXPORT_DONE = ".complete"


def _export_complete(cfg, run_dir: Path) -> bool:
    """The run's export was written to the end (its marker exists), or the recipe exports nothing."""
    return not (cfg.export.lora or cfg.export.fused_unet) or (run_dir / "export" / EXPORT_DONE).is_file()


def export(cfg, trainables, backend, run_dir: Path, step: int) -> dict:
    """Final artefacts (all ranks call; rank 0 writes): the LoRA in diffusers format with alpha kept
    (`tdd_video.lora.save_lora`), optionally a fused UNet folder; for partial/full fine-tuning the
    trained UNet. Under DeepSpeed the fp32 master weights are exported, not their bf16 copies; with
    `export.ema` the fp32 EMA of the student weights is exported instead of the last weights."""
    out: dict = {}
    if not (cfg.export.lora or cfg.export.fused_unet):
        return out
    masters = None
    if backend.name == "deepspeed":
        from deepspeed.utils import safe_get_full_fp32_param
        masters = [safe_get_full_fp32_param(p) for p in trainables.parameters()]
    exp = run_dir / "export"
    with _export_context(trainables, backend):
        if backend.is_main:
            exp.mkdir(parents=True, exist_ok=True)
            if masters is not None:
                for p, m in zip(trainables.parameters(), masters):
                    p.data = m.detach().float().to(p.device).reshape(p.shape)
            if trainables.export_ema is not None:          # export.ema: the EMA weights are the result
                trainables.export_ema.copy_to(trainables.named_parameters())
            module = trainables.module
            if trainables.kind == "lora":
                if cfg.export.lora:
                    out["lora"] = str(lora.save_lora(module, exp / "lora", adapter="student", family=cfg.model.family,
                                                     extra={"method": cfg.method_name, "step": step}))
                if cfg.export.fused_unet:
                    out["fused_unet"] = str(lora.export_fused_unet(module, exp / "unet", adapter="student",
                                                                   inplace=True))
            elif hasattr(module, "save_pretrained"):
                module.save_pretrained(exp / "unet")
                out["unet"] = str(exp / "unet")
            else:
                torch.save(module.state_dict(), exp / "unet.pt")
                out["unet"] = str(exp / "unet.pt")
            (exp / EXPORT_DONE).write_text(json.dumps({"step": step, **out}))   # written last: export complete
    backend.barrier()
    return out


def log_data_stats(log, step: int, loader, backend) -> dict[str, int]:
    """Samples attempted / skipped (unreadable, too short) so far, summed over workers and ranks, logged as
    data/attempts and data/skipped. Every rank calls this at the same steps (it all-reduces)."""
    if not hasattr(loader, "data_stats"):
        return {}
    st = loader.data_stats()
    both = torch.tensor([float(st.get("attempts", 0)), float(st.get("skipped", 0))], dtype=torch.float64,
                        device=backend.device)
    total = backend.all_reduce_mean(both) * backend.world_size
    values = {"data/attempts": int(round(float(total[0]))), "data/skipped": int(round(float(total[1])))}
    log.step(step, values, prefix="")
    return values


def _summary_losses(losses: list[float]) -> tuple[float, float]:
    """Mean of the finite losses over the first and the last 10 % of the steps (at least one step each)."""
    finite = [v for v in losses if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    n = max(1, len(finite) // 10)
    return sum(finite[:n]) / n, sum(finite[-n:]) / n


def _weights_finite(trainables, backend) -> bool:
    """All trainable weights (this rank's share under ZeRO-3) finite, agreed by every rank."""
    bad = 0.0
    for p in trainables.parameters():
        t = getattr(p, "ds_tensor", p)
        if t.numel() and not bool(torch.isfinite(t.detach()).all()):
            bad = 1.0
            break
    return backend.all_reduce_max(torch.tensor([bad], device=backend.device)).item() == 0


def train(cfg, *, family=None, loader=None, progress: bool | None = None) -> dict:
    """Run a recipe to `train.max_steps`. Returns {'losses', 'steps', 'run_dir', 'checkpoint', 'export', ...}.

    Raises NonFiniteLoss after `train.max_nonfinite_steps` skipped steps in a row and Preempted after a
    preemption signal (the checkpoint of the current step is written first)."""
    if family is None or loader is None:
        check_runnable(cfg)
    run_dir = Path(cfg.run.output_dir)
    micro_batch = getattr(cfg.data, "batch_size", 1)
    backend = make_backend(cfg.train, micro_batch)
    with RunLock(run_dir, active=backend.is_main) as lock:
        backend.barrier()
        return _train_locked(cfg, run_dir, backend, lock, family, loader, progress)


def _train_locked(cfg, run_dir: Path, backend, lock, family, loader, progress) -> dict:
    notes = [lock.note] if lock.note else []
    if backend.is_main:
        cleared = prepare_run_dir(run_dir, cfg.run.resume, cfg.run.overwrite)
        if cleared:
            notes.append(f"--overwrite: deleted the previous run's {', '.join(cleared)}")
    backend.barrier()
    folder = _resume_folder(cfg, run_dir)
    if folder is not None:
        done_step = json.loads((folder / "state.json").read_text())["step"]
        if done_step >= cfg.train.max_steps and _export_complete(cfg, run_dir):
            return {"already_finished": True, "steps": 0, "step": done_step, "run_dir": str(run_dir),
                    "checkpoint": str(folder), "export": {}, "losses": [], "rank": backend.rank,
                    "backend": backend.name, "world_size": backend.world_size, "notes": notes}
    if backend.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    seed_everything(cfg.run.seed * 1000 + backend.rank)
    check_init_unet(cfg)
    family = family if family is not None else build_family(cfg, backend, run_dir)
    t = cfg.trainable
    method = build_method(cfg.method_name, cfg.method, family)
    trainables = Trainables(family, t.kind, lora_rank=t.lora_rank, lora_alpha=t.lora_alpha, lora_preset=t.lora_preset,
                            gradient_checkpointing=t.gradient_checkpointing, ema_decay=method.target_ema,
                            export_ema_decay=cfg.export.ema, init_unet=t.init_unet, init_lora=t.init_lora)
    backend.setup(trainables)
    held = trainables.held_bytes()              # before export, which writes fp32 masters into rank 0's student
    loader = loader if loader is not None else build_loader(cfg, backend, run_dir)
    generator = torch.Generator().manual_seed(cfg.run.seed * 1000 + backend.rank + 1)
    start, samples_seen, nonfinite, last_ckpt = 0, 0, 0, None
    if folder is not None:
        state = load_checkpoint(folder, backend=backend, trainables=trainables, generator=generator, loader=loader,
                                method=method)
        start, samples_seen = state["step"], state["samples_seen"]
        nonfinite = int(state.get("nonfinite_steps", 0))
        last_ckpt = folder                      # a finished run whose export was interrupted only re-exports
        if backend.is_main:
            truncate_metrics(run_dir, start)
    batches = loader.infinite() if hasattr(loader, "infinite") else itertools.cycle(loader)
    log = MetricsLogger(run_dir, backend.is_main, cfg.train.tensorboard, purge_step=start + 1 if start else None)
    validator = None
    show = cfg.train.progress if progress is None else progress
    bar = None
    if backend.is_main and show:
        from tqdm import tqdm
        bar = tqdm(total=cfg.train.max_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    losses: list[float] = []
    data_stats: dict[str, int] = {}
    zero3 = getattr(backend, "zero_stage", 0) == 3
    renders, metric = validation_duties(cfg.validation, backend.is_main, zero3)
    if zero3 and cfg.validation.every > 0:
        logger.warning("validation renders are skipped under ZeRO-3 (partitioned weights); "
                       "render from the exported LoRA with infer/img2vid.py instead")
    streak, accum = 0, cfg.train.grad_accum
    if zero3 and getattr(method, "adv", None) is not None:
        method.adv.early_exit = False           # ZeRO-3 gathers weights around every block's forward: run it whole

    def checkpoint(step: int):
        if not _weights_finite(trainables, backend):
            raise NonFiniteLoss(step, "the trainable weights are not finite")
        return save_checkpoint(run_dir, step, backend=backend, trainables=trainables, generator=generator,
                               loader=loader, samples_seen=samples_seen, keep_last=cfg.train.keep_last,
                               extra={"nonfinite_steps": nonfinite}, method=method)

    try:
        with PreemptionFlag(cfg.train.preempt_signals) as preempt:
            for step in range(start, cfg.train.max_steps):
                t0, lr, micro_losses, skip = time.perf_counter(), backend.lr(), [], False
                method.set_step(step)
                auxes, scalars = [], {}
                for _ in range(accum):
                    batch = next(batches)
                    with torch.no_grad():
                        x0 = family.encode_latents(batch, generator)
                        cond = family.encode_conditioning(batch, generator, train=True)
                    if validator is None and (renders or metric):
                        validator = Validator(cfg.validation, family, batch, tuple(x0.shape), run_dir,
                                              getattr(cfg.method, "num_grid", 250), method=method, renders=renders)
                        if metric and step == 0:        # distillation distance before the first update
                            with trainables.exported_weights():
                                log.step(0, validator.distances(trainables), prefix="")
                    samples_seen += x0.shape[0] * backend.world_size
                    if skip:
                        continue                        # the rest of a skipped step's micro batches: data only
                    with backend.autocast():
                        out = method.training_step(x0, cond, trainables, generator)
                    finite = torch.isfinite(out.loss.detach()).all()
                    bad = backend.all_reduce_max(torch.tensor([0.0 if finite else 1.0], device=out.loss.device))
                    if bad.item() > 0:
                        if backend.name == "deepspeed" and micro_losses:
                            raise NonFiniteLoss(step + 1, "non-finite loss in the middle of a gradient accumulation "
                                                          "cycle under DeepSpeed (it cannot be skipped there; use "
                                                          "train.grad_accum=1 to skip such steps)")
                        skip = True
                        continue
                    backend.backward(out.loss)
                    micro_losses.append(out.loss.detach().float())
                    log.add_stats(out.stats)
                    auxes.append(out.aux)
                    for k, v in out.scalars.items():
                        scalars[k] = scalars.get(k, 0.0) + v / accum
                if skip:
                    backend.skip_step()
                    grad_norm = float("nan")
                else:
                    grad_norm = backend.step()
                    if not math.isfinite(grad_norm):
                        skip = True                    # plain/accelerate skipped the update; DeepSpeed applied it
                        if backend.name == "deepspeed" and not _weights_finite(trainables, backend):
                            raise NonFiniteLoss(step + 1, f"gradient norm {grad_norm} made the weights non-finite")
                done = step + 1
                if skip:
                    nonfinite, streak = nonfinite + 1, streak + 1
                    loss = float("nan")
                    if streak >= cfg.train.max_nonfinite_steps:
                        raise NonFiniteLoss(done, f"{streak} optimizer steps in a row had a non-finite loss or "
                                                  f"gradient norm and were skipped (train.max_nonfinite_steps)")
                else:
                    streak = 0
                    trainables.update_ema()
                    loss = float(backend.all_reduce_mean(torch.stack(micro_losses).mean().reshape(1)).item())
                    scalars.update(method.aux_update(auxes, trainables, backend, generator))
                losses.append(loss)
                dt = time.perf_counter() - t0
                sps = getattr(cfg.data, "batch_size", 1) * accum * backend.world_size / dt
                log.step(done, {"loss": loss, "lr": lr, "grad_norm": grad_norm, "samples_per_s": sps,
                                "nonfinite_steps": nonfinite})
                if scalars and not skip:
                    log.step(done, scalars, prefix="")
                if done % cfg.train.log_every == 0 or done == cfg.train.max_steps:
                    log.flush(done)
                    data_stats = log_data_stats(log, done, loader, backend)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2e}", **({"skipped": nonfinite} if nonfinite else {}))
                if validator is not None and validator.due(done):
                    with trainables.exported_weights():
                        validator.render(done, trainables)
                if metric and validator.metric_due(done, cfg.train.max_steps):
                    with trainables.exported_weights():
                        log.step(done, validator.distances(trainables), prefix="")
                if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0:
                    last_ckpt = checkpoint(done)
                stop = backend.all_reduce_max(torch.tensor([1.0 if preempt.received else 0.0],
                                                           device=backend.device))
                if stop.item() > 0 and done < cfg.train.max_steps:
                    if last_ckpt is None or not last_ckpt.name.endswith(f"{done:06d}"):
                        last_ckpt = checkpoint(done)
                    raise Preempted(done, preempt.received or "a signal on another rank", last_ckpt)
        end = cfg.train.max_steps
        if last_ckpt is None or not last_ckpt.name.endswith(f"{end:06d}"):
            last_ckpt = checkpoint(end)
        exported = export(cfg, trainables, backend, run_dir, cfg.train.max_steps)
        if backend.is_main and data_stats.get("data/skipped", 0) > 0:
            logger.warning("%d of %d samples could not be loaded and were replaced (all ranks and workers); "
                           "the warnings above name the files", data_stats["data/skipped"], data_stats["data/attempts"])
    finally:
        if bar is not None:
            bar.close()
        log.close()
    first, last = _summary_losses(losses)
    return {"losses": losses, "steps": cfg.train.max_steps - start, "run_dir": str(run_dir),
            "checkpoint": str(last_ckpt), "export": exported, "trainable_params": trainables.num_trainable(),
            "backend": backend.name, "rank": backend.rank, "world_size": backend.world_size,
            "optimizer_state_bytes": backend.optimizer_state_bytes(), "weights_bytes_held": held,
            "loss_first_10pct": first,
            "loss_last_10pct": last, "nonfinite_steps": nonfinite, "notes": notes, "already_finished": False,
            "method_state_sum": _state_sum(method.state_dict())}


def _state_sum(state) -> float | None:
    """Sum of every tensor in a (nested) state dict: a cheap fingerprint to compare ranks' method states."""
    if isinstance(state, torch.Tensor):
        return float(state.double().sum()) if state.is_floating_point() else 0.0
    if isinstance(state, dict):
        parts = [_state_sum(v) for v in state.values()]
        parts = [v for v in parts if v is not None]
        return sum(parts) if parts else None
    return None
