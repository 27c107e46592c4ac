"""Training recipes: YAML -> typed, validated dataclasses, with dotted command-line overrides.

A recipe has the sections `run`, `model`, `trainable`, `method`, `train`, `validation`, `export`
and `data`. Everything is checked by `load_config` BEFORE any model is loaded: unknown keys are
rejected by name (with the allowed keys listed), values outside their range raise ConfigError
naming the dotted key and the range. `method` is dispatched on `method.name` to the config class
the method registered (tdd_video.methods), so a new method adds keys without touching the engine.
`data` is the data package's VideoDataConfig (or ImageDataConfig for image families).
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tdd_video.core.params import DEFAULT_ETA
from tdd_video.errors import ConfigError, check_range
from tdd_video.typed import build_section

SECTIONS = ("run", "model", "trainable", "method", "train", "validation", "export", "data")


@dataclass
class RunConfig:
    output_dir: str = "runs/tdd_svd_tiny"
    seed: int = 0
    resume: typing.Optional[str] = None  # None | "auto" (latest checkpoint in output_dir) | a checkpoint dir
    overwrite: bool = False               # start over in an output_dir that holds a run (deletes its outputs)

    def validate(self, p: str) -> None:
        check_range(f"{p}.seed", self.seed, 0, None)


@dataclass
class ModelConfig:
    family: str = "svd"                     # svd | sdxl
    path: typing.Optional[str] = None       # diffusers folder or hub id; None = build the tiny model
    dtype: str = "fp32"                     # weights of the frozen base: fp32 | bf16 | fp16
    tiny_seed: int = 0                      # seed of the tiny model built when path is None

    def validate(self, p: str) -> None:
        _choice(f"{p}.family", self.family, ("svd", "sdxl"))
        _choice(f"{p}.dtype", self.dtype, ("fp32", "bf16", "fp16"))


@dataclass
class TrainableConfig:
    kind: str = "lora"                      # lora | spatial | temporal | full
    lora_rank: int = 64
    lora_alpha: typing.Optional[float] = None   # None = rank (scale 1)
    lora_preset: str = "attn"               # tdd_video.lora preset of target modules
    gradient_checkpointing: bool = False
    # Staged training (AnimateLCM's spatial → temporal): a full UNet state dict (.safetensors/.bin or a
    # diffusers UNet folder, e.g. stage 1's <run>/export/unet) loaded strictly into the STUDENT after
    # the frozen teacher copy is made — the teacher stays the base. Only for spatial | temporal | full.
    init_unet: typing.Optional[str] = None
    # Start the LoRA student from a LoRA file (e.g. a finished TDD student before adversarial training); its rank,
    # alpha and target modules must match lora_rank / lora_alpha / lora_preset. Only for kind lora.
    init_lora: typing.Optional[str] = None

    def validate(self, p: str) -> None:
        _choice(f"{p}.kind", self.kind, ("lora", "spatial", "temporal", "full"))
        check_range(f"{p}.lora_rank", self.lora_rank, 1, 4096)
        if self.lora_alpha is not None:
            check_range(f"{p}.lora_alpha", self.lora_alpha, 0.0, None, lo_open=True)
        if self.init_lora is not None and self.kind != "lora":
            raise ConfigError(f"{p}.init_lora", "a LoRA file initialises a LoRA student (kind lora); for partial or "
                                                "full fine-tuning start from a UNet with trainable.init_unet")
        if self.init_unet is not None and self.kind == "lora":
            raise ConfigError(f"{p}.init_unet", "a LoRA student shares the base with the teacher, so a different "
                                                "student UNet would also change the teacher; use kind spatial, "
                                                "temporal or full (the teacher is then a frozen copy of the base)")


@dataclass
class TrainConfig:
    backend: str = "auto"                   # auto | plain | deepspeed | accelerate
    deepspeed_config: typing.Optional[str] = None
    mixed_precision: str = "no"             # no | bf16 | fp16
    max_steps: int = 1000
    grad_accum: int = 1
    lr: float = 1e-5
    warmup_steps: int = 0
    lr_schedule: str = "constant"           # after warmup: constant | cosine | linear (decay to lr·lr_min_ratio)
    lr_min_ratio: float = 0.0               # final lr / lr for cosine and linear
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0                  # 0 = off
    torch_adam: bool = True                 # DeepSpeed: torch AdamW instead of compiled fused ops
    log_every: int = 10
    checkpoint_every: int = 500             # 0 = only at the end
    keep_last: int = 3
    tensorboard: bool = True
    progress: bool = True
    max_nonfinite_steps: int = 10           # skipped (non-finite loss / grad norm) steps in a row that stop the run
    preempt_signals: list = field(default_factory=lambda: ["SIGTERM"])   # checkpoint + exit 75 on these

    def validate(self, p: str) -> None:
        _choice(f"{p}.backend", self.backend, ("auto", "plain", "deepspeed", "accelerate"))
        _choice(f"{p}.mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        check_range(f"{p}.max_steps", self.max_steps, 1, None)
        check_range(f"{p}.grad_accum", self.grad_accum, 1, None)
        check_range(f"{p}.lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range(f"{p}.warmup_steps", self.warmup_steps, 0, None)
        _choice(f"{p}.lr_schedule", self.lr_schedule, ("constant", "cosine", "linear"))
        check_range(f"{p}.lr_min_ratio", self.lr_min_ratio, 0.0, 1.0)
        check_range(f"{p}.weight_decay", self.weight_decay, 0.0, 1.0)
        check_range(f"{p}.adam_beta1", self.adam_beta1, 0.0, 1.0, hi_open=True)
        check_range(f"{p}.adam_beta2", self.adam_beta2, 0.0, 1.0, hi_open=True)
        check_range(f"{p}.adam_eps", self.adam_eps, 0.0, 1.0, lo_open=True)
        check_range(f"{p}.grad_clip", self.grad_clip, 0.0, None)
        check_range(f"{p}.log_every", self.log_every, 1, None)
        check_range(f"{p}.checkpoint_every", self.checkpoint_every, 0, None)
        check_range(f"{p}.keep_last", self.keep_last, 1, None)
        check_range(f"{p}.max_nonfinite_steps", self.max_nonfinite_steps, 1, None)
        allowed = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")
        if not isinstance(self.preempt_signals, list) or any(s not in allowed for s in self.preempt_signals):
            raise ConfigError(f"{p}.preempt_signals", f"got {self.preempt_signals!r}, a list of {', '.join(allowed)}")
        if self.backend == "deepspeed" and not self.deepspeed_config:
            raise ConfigError(f"{p}.deepspeed_config", "backend 'deepspeed' needs a DeepSpeed JSON "
                                                       "(e.g. configs/deepspeed/zero2.json)")


@dataclass
class ValidationConfig:
    every: int = 0                          # steps between renders; 0 = off
    steps: list = field(default_factory=lambda: [4, 8])
    num_images: int = 2                     # conditioning images taken from the first data batch(es)
    seeds: list = field(default_factory=lambda: [0])
    eta: float = DEFAULT_ETA
    guidance: float = 1.0
    format: str = "gif"                     # gif | mp4
    fps: int = 7
    # Distillation distance (tdd_video.engine.validation): latent MSE of the student's K-step sample
    # (each K in `steps`, same seeds / eta / guidance as the renders) to the teacher's many-step
    # sample from the same noise; at step 0, every `metric_every` steps and at the end. 0 = off.
    metric_every: int = 0
    images: str = "data"                    # data: the first training batch | heldout: real photos (video)
    reference_steps: int = 25               # teacher steps of the reference (computed once, cached)
    reference_guidance: list = field(default_factory=lambda: [1.0, 3.0])   # [g] or frame-wise [g_min, g_max]

    def validate(self, p: str) -> None:
        check_range(f"{p}.every", self.every, 0, None)
        check_range(f"{p}.metric_every", self.metric_every, 0, None)
        check_range(f"{p}.reference_steps", self.reference_steps, 1, 1000)
        g = self.reference_guidance
        if not 1 <= len(g) <= 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in g):
            raise ConfigError(f"{p}.reference_guidance", f"got {g!r}, need [g] or [g_min, g_max] with numbers >= 0 "
                                                         "(frame-wise g_min -> g_max for video; e.g. [1.0, 3.0])")
        if not self.steps or any(not isinstance(s, int) or s < 1 for s in self.steps):
            raise ConfigError(f"{p}.steps", f"got {self.steps!r}, need a non-empty list of ints >= 1")
        if not self.seeds or any(not isinstance(s, int) for s in self.seeds):
            raise ConfigError(f"{p}.seeds", f"got {self.seeds!r}, need a non-empty list of ints")
        check_range(f"{p}.num_images", self.num_images, 1, 64)
        _choice(f"{p}.images", self.images, ("data", "heldout"))
        if self.images == "heldout":
            check_range(f"{p}.num_images", self.num_images, 1, 32)
        check_range(f"{p}.eta", self.eta, 0.0, 1.0, hi_open=True)
        check_range(f"{p}.guidance", self.guidance, 0.0, None)
        _choice(f"{p}.format", self.format, ("gif", "mp4"))
        check_range(f"{p}.fps", self.fps, 1, 240)


@dataclass
class ExportConfig:
    lora: bool = True                       # final LoRA in diffusers format (alpha preserved)
    fused_unet: bool = False                # also a plain diffusers UNet folder with the LoRA fused
    ema: float = 0.0                        # decay of an fp32 EMA of the student weights that is exported (and
                                            # measured by validation.metric_every) instead of the last weights; 0 = off

    def validate(self, p: str) -> None:
        check_range(f"{p}.ema", self.ema, 0.0, 1.0, hi_open=True)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    method: typing.Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    data: typing.Any = None
    method_name: str = "tdd"

    def to_dict(self) -> dict:
        out = {}
        for name in SECTIONS:
            v = getattr(self, name)
            if v is None:
                out[name] = None
            elif dataclasses.is_dataclass(v):
                out[name] = dataclasses.asdict(v)
            elif hasattr(v, "to_dict"):
                out[name] = v.to_dict()
            else:
                out[name] = v
        out["method"] = {"name": self.method_name, **(out["method"] or {})}
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)


# ---------------------------------------------------------------------------------------------
def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(key, f"got {value!r}, allowed values are {', '.join(map(repr, allowed))}")


def _build_data(values, family: str = "svd"):
    from tdd_video.data.config import VideoDataConfig
    data_cls = VideoDataConfig
    if family == "sdxl":   # image-text data (tdd_video.data.images) for the image family
        from tdd_video.data.images import ImageDataConfig as data_cls
    if values is None:
        values = {}
    try:
        cfg = data_cls.from_dict(values)
        cfg.validate()
    except ConfigError as e:
        key = e.key if e.key.startswith("data.") else f"data.{e.key}"
        raise ConfigError(key, str(e).split(": ", 1)[-1]) from None
    return cfg


def parse_overrides(overrides: list[str], sections: tuple[str, ...] | None = SECTIONS) -> dict:
    """['train.lr=1e-5', 'method.k_max=6'] -> nested dict; values parsed as YAML scalars/lists.
    `sections`: the allowed first parts of a key (None: any key, e.g. a flat recipe's `seed=1`)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "overrides look like section.key=value (e.g. train.lr=1e-5)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if sections is not None and (len(parts) < 2 or parts[0] not in sections):
            raise ConfigError(key, f"override keys start with a section: {', '.join(sections)}")
        value = yaml.safe_load(raw) if raw != "" else ""
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value.lower() for c in ".e") and value.lower() not in ("inf", "nan") \
                    else value
            except ValueError:
                pass
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The mapping of a YAML recipe file; ConfigError on key '--config' for a missing/invalid file.

    A recipe may start from another one: a top-level ``base: other.yaml`` (a path relative to the recipe's own
    folder) is read first, and this file's keys are merged over it (sections key by key, lists replaced), so a
    later training stage writes only what it changes. Bases may chain; a cycle is an error on key 'base'."""
    p = Path(path)
    if not p.is_file():
        key = "base" if _seen else "--config"
        raise ConfigError(key, f"file not found: {p}" + (f" (the base of {_seen[-1]})" if _seen else ""))
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError("--config", f"{p} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError("--config", f"{p}: a recipe is a mapping of sections, got {type(raw).__name__}")
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError("base", f"{p}: base is the path of another recipe (relative to {p.parent}), got {base!r}")
    base_path = (p.parent / base).resolve()
    chain = _seen + (p.resolve(),)
    if base_path in chain:
        raise ConfigError("base", f"{p}: the chain of bases loops back to {base_path}")
    return merge(read_yaml(base_path, chain), raw)


def load_dataclass_recipe(cls, path: str | Path | None, overrides: list[str] | None = None):
    """A recipe that is one (possibly nested) dataclass: YAML (None = defaults) + dotted overrides, built
    and validated by `build_section` (used by the toy-zoo build tools)."""
    raw = read_yaml(path) if path is not None else {}
    return build_section(cls, merge(raw, parse_overrides(overrides or [], sections=None)), "")


def merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge (extra wins)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_dict(raw: dict) -> Config:
    """Build and validate a Config from a nested mapping (YAML content + overrides)."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("<root>", "a recipe is a mapping of sections")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown section; allowed sections are: {', '.join(SECTIONS)}")
    from tdd_video.methods.configs import method_config_class
    method_raw = dict(raw.get("method") or {})
    method_name = method_raw.pop("name", "tdd")
    mcls = method_config_class(method_name)
    model = build_section(ModelConfig, raw.get("model"), "model")
    cfg = Config(
        run=build_section(RunConfig, raw.get("run"), "run"),
        model=model,
        trainable=build_section(TrainableConfig, raw.get("trainable"), "trainable"),
        method=build_section(mcls, method_raw, "method"),
        train=build_section(TrainConfig, raw.get("train"), "train"),
        validation=build_section(ValidationConfig, raw.get("validation"), "validation"),
        export=build_section(ExportConfig, raw.get("export"), "export"),
        data=_build_data(raw.get("data"), model.family),
        method_name=method_name,
    )
    _cross_checks(cfg)
    return cfg


def _cross_checks(cfg: Config) -> None:
    if cfg.train.mixed_precision == "fp16" and cfg.train.backend in ("plain", "auto"):
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("train.mixed_precision", "fp16 needs a CUDA GPU (it does not work on CPU); "
                                                       "use bf16 or no")
    if cfg.model.family == "sdxl" and cfg.validation.images == "heldout":
        raise ConfigError("validation.images", "'heldout' conditioning photos are for video families (svd); "
                                               "image families validate on the data's captions ('data')")
    if cfg.model.family == "sdxl" and cfg.trainable.kind in ("spatial", "temporal"):
        raise ConfigError("trainable.kind", "spatial/temporal partial fine-tuning needs a video UNet (family svd)")
    if getattr(cfg.method, "target_ema", 0.0) == 1.0 and not (cfg.trainable.init_lora or cfg.trainable.init_unet):
        raise ConfigError("method.target_ema", "1 freezes the target at the student's initial weights, which without "
                                               "trainable.init_lora / init_unet are the untrained base; start from an "
                                               "earlier student, or use a decay below 1 (docs/math.md §3.5)")


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_runnable(cfg: Config) -> None:
    """What a run will read exists on this machine (data, model folder, DeepSpeed JSON, stage-1 UNet):
    ConfigError naming the key, before anything heavy is imported or built. Separate from `load_config`
    so that recipes written for other machines still load (and `--dry-run` prints them)."""
    cfg.data.check_paths()
    if cfg.trainable.init_lora:
        src = Path(cfg.trainable.init_lora)
        if not (src.is_file() or (src / "pytorch_lora_weights.safetensors").is_file()):
            raise ConfigError("trainable.init_lora", f"not found: {cfg.trainable.init_lora!r} (a LoRA .safetensors "
                                                     "file, or a folder holding pytorch_lora_weights.safetensors "
                                                     "such as a run's export/lora)")
    if cfg.trainable.init_unet and not Path(cfg.trainable.init_unet).exists():
        raise ConfigError("trainable.init_unet", f"not found: {cfg.trainable.init_unet!r} (run the earlier stage "
                                                 "first; its trained UNet is <run>/export/unet)")
    m = cfg.model.path
    if m is not None and not Path(m).exists():
        from tdd_video import zoo
        if not zoo.is_zoo_name(m) and not HUB_ID.match(m):
            raise ConfigError("model.path", f"not found: {m!r} is not a folder, a zoo model "
                                            f"({', '.join(zoo.available()) or 'none installed'}) or a hub id "
                                            "(owner/name)")
    if cfg.train.deepspeed_config and not Path(cfg.train.deepspeed_config).is_file():
        raise ConfigError("train.deepspeed_config", f"file not found: {cfg.train.deepspeed_config}")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (None = all defaults), apply dotted overrides, build and validate."""
    raw = read_yaml(path) if path is not None else {}
    raw = merge(raw, parse_overrides(overrides or []))
    return config_from_dict(raw)
