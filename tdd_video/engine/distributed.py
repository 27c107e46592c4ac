"""Training backends: plain single process, DeepSpeed ZeRO, accelerate (DDP).

All three expose the same small surface to the trainer: `setup(trainables, train_cfg)`,
`autocast()`, `backward(loss)` per micro step, `step() -> grad norm` per optimizer step, `lr()`,
`save(dir)` / `load(dir)` of optimizer + lr schedule, `barrier()`, `all_reduce_mean(x)`.

Facts used (measured on this project's machines): DeepSpeed on CPU uses gloo, bf16/fp32 only; `torch_adam: true`
avoids compiling fused ops; accelerate on CPU needs InitProcessGroupKwargs(backend="gloo").
The lr schedule is a linear warmup, then constant, cosine or linear decay to lr·lr_min_ratio at
max_steps (`train.lr_schedule`), stepped once per optimizer step by us (accelerate's prepared
scheduler would step it num_processes times per call — a warmup that does not warm up).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import socket
import time
from pathlib import Path

import torch

from tdd_video.engine.lr import lr_factor
from tdd_video.errors import ConfigError


def detect_backend(requested: str, deepspeed_config: str | None) -> str:
    """'auto' → deepspeed when launched by a launcher with a DeepSpeed JSON, accelerate under
    `accelerate launch`, else plain."""
    if requested != "auto":
        return requested
    launched = "RANK" in os.environ or "LOCAL_RANK" in os.environ
    if any(k.startswith("ACCELERATE_") for k in os.environ):
        return "accelerate"
    if launched and deepspeed_config:
        return "deepspeed"
    return "plain"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXIT_GRACE_S = 0.2


def tear_down_at_exit() -> None:
    """Register, once per process, an exit hook that tears the process group down while Python is still whole.

    Why: a gloo worker thread drops its last references to a finished collective's tensors (Python objects) a
    moment after the collective returns; it needs the GIL for that. If the main thread has already begun
    interpreter shutdown, taking the GIL ends the worker thread with a forced unwind through C++ code, and the
    process dies of SIGABRT ("terminate called without an active exception") after all of its work is done —
    the launcher then reports the whole run as failed. Measured here with torch 2.13 and 2 gloo ranks under
    torchrun: a script that ends after an all-reduce aborts in 4–6 of 20 runs; a 3-step accelerate DDP script in
    3–5 of 20–30. Destroying the group alone fixes the plain script but not the accelerate one (accelerate keeps
    the group alive); destroying it and then releasing the GIL for EXIT_GRACE_S gave 0 of 30 (docs/multinode.md,
    "Exit"). The hook runs on a normal return, on sys.exit (preemption) and after an uncaught exception."""
    if not getattr(tear_down_at_exit, "registered", False):
        atexit.register(_tear_down)
        tear_down_at_exit.registered = True


def _tear_down() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        time.sleep(EXIT_GRACE_S)      # releases the GIL: the worker threads finish their last decrefs


class Backend:
    name = "base"
    rank, world_size, local_rank = 0, 1, 0

    def __init__(self, train_cfg):
        self.cfg = train_cfg
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
            else torch.device("cpu")
        if train_cfg.mixed_precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.mixed_precision", "fp16 needs a CUDA GPU; on CPU use bf16 or no")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.cfg.mixed_precision == "no":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.mixed_precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def barrier(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def all_reduce_mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            x = x.clone()
            torch.distributed.all_reduce(x)
            x /= self.world_size
        return x

    def all_reduce_max(self, x: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            x = x.clone()
            torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.MAX)
        return x

    def optimizer_state_bytes(self) -> int:
        """Bytes of optimizer state tensors (AdamW moments, fp32 master partitions) held by THIS rank."""
        opt = getattr(self, "optimizer", None)
        inner = getattr(opt, "optimizer", opt)          # DeepSpeed / accelerate wrap the torch optimizer
        total = 0
        for st in getattr(inner, "state", {}).values():
            total += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v) and v.ndim > 0)
        for attr in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):   # ZeRO-2 / ZeRO-3
            for t in getattr(opt, attr, None) or []:
                if torch.is_tensor(t):
                    total += t.numel() * t.element_size()
        return total

    def _adamw(self, params):
        c = self.cfg
        return torch.optim.AdamW(params, lr=c.lr, betas=(c.adam_beta1, c.adam_beta2), eps=c.adam_eps,
                                 weight_decay=c.weight_decay)


class PlainBackend(Backend):
    """Single process, torch AdamW, manual accumulation and clipping."""

    name = "plain"

    def __init__(self, train_cfg):
        super().__init__(train_cfg)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("train.backend", "'plain' is single-process; under a multi-process launcher "
                                               "use train.backend=deepspeed or accelerate")

    def setup(self, trainables) -> None:
        self.params = trainables.parameters()
        self.optimizer = self._adamw(self.params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(self.cfg))

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.cfg.grad_accum).backward()

    def step(self) -> float:
        """Clip and update; a non-finite gradient norm skips the update (and the lr schedule) instead."""
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if math.isfinite(norm):
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def skip_step(self) -> None:
        """Drop this step's (partial) gradients; no update, no lr step."""
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def save(self, folder: Path) -> None:
        if self.is_main:
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                       folder / "optimizer.pt")

    def load(self, folder: Path) -> None:
        state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class AccelerateBackend(PlainBackend):
    """`accelerate launch`: DDP across processes (gloo on CPU); our own optimizer/lr stepping."""

    name = "accelerate"

    def __init__(self, train_cfg):
        Backend.__init__(self, train_cfg)
        if "WORLD_SIZE" not in os.environ:
            raise ConfigError("train.backend", "'accelerate' needs processes started by a launcher: `accelerate launch "
                                               "--config_file configs/accelerate/ddp_2proc_cpu.yaml ...` (it starts "
                                               "them with torchrun) or `torchrun --nproc_per_node N ...`. This process "
                                               "was started alone (an accelerate config with distributed_type "
                                               "MULTI_CPU starts one process unless MPI is set up); for one process "
                                               "use train.backend=plain")
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs
        handlers = [] if torch.cuda.is_available() else [InitProcessGroupKwargs(backend="gloo")]
        self.acc = Accelerator(mixed_precision=train_cfg.mixed_precision, kwargs_handlers=handlers,
                               cpu=not torch.cuda.is_available())
        self.rank, self.world_size = self.acc.process_index, self.acc.num_processes
        tear_down_at_exit()
        self.local_rank, self.device = self.acc.local_process_index, self.acc.device

    def autocast(self):
        return self.acc.autocast()

    def setup(self, trainables) -> None:
        self.params = trainables.parameters()
        opt = self._adamw(self.params)
        wrapped, self.optimizer = self.acc.prepare(trainables.module, opt)
        trainables.wrapper = wrapped
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer, lr_factor(self.cfg))

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss / self.cfg.grad_accum)

    def step(self) -> float:
        """Clip and update (the norm is of the all-reduced gradients, so every rank decides alike); a
        non-finite gradient norm skips the update and the lr schedule."""
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        norm = float(self.acc.clip_grad_norm_(self.params, clip))
        if math.isfinite(norm):
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def save(self, folder: Path) -> None:
        if self.is_main:
            torch.save({"optimizer": self.optimizer.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                       folder / "optimizer.pt")

    def load(self, folder: Path) -> None:
        state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        self.optimizer.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def deepspeed_config(path: str, train_cfg) -> dict:
    """Read a DeepSpeed JSON and fill in what the recipe owns (batch, accumulation, clipping,
    precision, AdamW). Values the recipe owns always win over the JSON's."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("train.deepspeed_config", f"file not found: {p}")
    try:
        ds = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError("train.deepspeed_config", f"{p} is not valid JSON: {e}") from None
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError("train.deepspeed_config", f"zero_optimization.stage must be 0..3, got {stage!r}")
    c = train_cfg
    ds["gradient_accumulation_steps"] = c.grad_accum
    ds["gradient_clipping"] = c.grad_clip
    ds["bf16"] = {"enabled": c.mixed_precision == "bf16"}
    ds["fp16"] = {"enabled": c.mixed_precision == "fp16"}
    ds["optimizer"] = {"type": "AdamW", "params": {
        "lr": c.lr, "betas": [c.adam_beta1, c.adam_beta2], "eps": c.adam_eps, "weight_decay": c.weight_decay,
        "torch_adam": c.torch_adam}}
    ds.pop("scheduler", None)
    ds.setdefault("steps_per_print", 10 ** 9)
    if ds.get("zero_optimization", {}).get("offload_optimizer") and c.torch_adam:
        ds["zero_force_ds_cpu_optimizer"] = False   # allow torch AdamW with optimizer offload
    return ds


SHM_DIR = Path("/dev/shm")


def shm_buffer_path(rank: int) -> Path:
    """The /dev/shm segment DeepSpeed's CPU all-reduce creates for `rank` of the job at MASTER_ADDR:MASTER_PORT."""
    return SHM_DIR / (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
                      f"{os.environ.get('MASTER_PORT', '')}_{rank}")


def release_shm_name(rank: int) -> None:
    """Unlink this rank's DeepSpeed CPU all-reduce segment once every rank has mapped it.

    On CPU, ``deepspeed.init_distributed`` maps one 69 MB shared-memory segment per rank and never unlinks it, so
    each run leaves its segments in RAM-backed /dev/shm until the machine runs out of memory (seen here: 193
    leftover segments, 13 GB, made a later 2-rank job get OOM-killed). Each rank maps its peers' segments by
    name during init; after a barrier no rank needs the names, and unlinking keeps the mappings alive until the
    processes exit, so nothing is left behind, even after a crash or SIGKILL. Call on every rank (barrier)."""
    torch.distributed.barrier()
    shm_buffer_path(rank).unlink(missing_ok=True)


class DeepSpeedBackend(Backend):
    """`deepspeed train/distill_svd.py`: ZeRO 0–3 from configs/deepspeed/*.json."""

    name = "deepspeed"

    def __init__(self, train_cfg, micro_batch: int = 1):
        super().__init__(train_cfg)
        import deepspeed
        self.ds = deepspeed
        if "RANK" not in os.environ:   # plain `python` run with backend=deepspeed: a 1-process group
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(_free_port()))
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        self.rank, self.world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        tear_down_at_exit()
        if not torch.cuda.is_available():
            release_shm_name(self.rank)
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.micro_batch = micro_batch

    def autocast(self):
        return contextlib.nullcontext()   # DeepSpeed casts the module itself

    def setup(self, trainables) -> None:
        ds_cfg = deepspeed_config(self.cfg.deepspeed_config, self.cfg)
        self.zero_stage = ds_cfg.get("zero_optimization", {}).get("stage", 0)
        if self.zero_stage == 3 and (trainables.ema is not None or trainables.export_ema is not None):
            key = "method.target_ema" if trainables.ema is not None else "export.ema"
            raise ConfigError(key, "an EMA of the student needs full (unpartitioned) trainable weights; "
                                   "with ZeRO-3 set it to 0, or use a ZeRO-2 config")
        ds_cfg["train_micro_batch_size_per_gpu"] = self.micro_batch
        ds_cfg["train_batch_size"] = self.micro_batch * self.cfg.grad_accum * self.world_size
        self.ds_cfg = ds_cfg
        self.params = trainables.parameters()
        engine, optimizer, _, scheduler = self.ds.initialize(
            model=trainables.module, model_parameters=self.params, config=ds_cfg,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(self.cfg)))
        self.engine, self.optimizer, self.scheduler = engine, optimizer, scheduler
        trainables.wrapper = engine
        self.teacher_engine = None
        if trainables.teacher_module is not None and self.cfg.mixed_precision == "bf16":
            trainables.teacher_module.to(torch.bfloat16)
        if trainables.teacher_module is not None and self.zero_stage == 3:
            self.teacher_engine = self.shard_frozen(trainables.teacher_module, ds_cfg)

    def shard_frozen(self, module: torch.nn.Module, ds_cfg: dict):
        """ZeRO-3 partitions of a frozen module (the teacher copy of a spatial / temporal / full student):
        each rank keeps 1/world of its weights, and DeepSpeed's hooks gather a submodule's weights for its
        forward, exactly as for the student — calling the module itself stays the same. Same order of
        forwards on every rank (docs/zero.md), no optimizer, nothing saved (it is frozen)."""
        cfg = {k: v for k, v in ds_cfg.items() if k not in ("optimizer", "scheduler")}
        engine, *_ = self.ds.initialize(model=module, config=cfg)
        return engine

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()              # DeepSpeed only updates at accumulation boundaries

    def step(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def skip_step(self) -> None:
        """Nothing to drop: a skipped step made no backward call (grad_accum 1; see the trainer)."""

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder), tag="deepspeed", save_latest=False, exclude_frozen_parameters=True)

    def load(self, folder: Path) -> None:
        self.engine.load_checkpoint(str(folder), tag="deepspeed", load_module_strict=False)


def make_backend(train_cfg, micro_batch: int = 1) -> Backend:
    kind = detect_backend(train_cfg.backend, train_cfg.deepspeed_config)
    if kind == "deepspeed":
        if not train_cfg.deepspeed_config:
            raise ConfigError("train.deepspeed_config", "needed for the deepspeed backend (configs/deepspeed/*.json)")
        return DeepSpeedBackend(train_cfg, micro_batch)
    if kind == "accelerate":
        return AccelerateBackend(train_cfg)
    return PlainBackend(train_cfg)
