"""LoRA adapters on one shared frozen base UNet (docs/math.md §9).

Student = base + adapter "student"; target = the student under no_grad, or with its fp32 EMA
(tdd_video.engine.ema) swapped in; teacher = the same base with all adapters disabled. One copy of the base
weights in memory. Works for UNetSpatioTemporalConditionModel (SVD, which has no ``add_adapter``)
and UNet2DConditionModel (SDXL) through ``peft.inject_adapter_in_model``.

Switching adapters here only flips peft's active/disabled flags; it never touches requires_grad
(peft's own ``set_adapter``/``enable_adapters`` do, which would unfreeze the EMA adapter or freeze
the student in the middle of a training step).

File format: safetensors with diffusers/PEFT keys ``unet.<module>.lora_A.weight`` /
``unet.<module>.lora_B.weight`` and metadata ``lora_adapter_metadata`` (the PEFT LoraConfig with
``r`` and ``lora_alpha``, prefixed ``unet.``) exactly as diffusers' ``save_lora_weights`` writes
it, so stock ``StableDiffusionXLPipeline.load_lora_weights(path)`` applies the right alpha/rank
scale; plus our ``tdd_video`` metadata (family, base UNet config fingerprint, adapter name).
"""
from __future__ import annotations

import copy
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from tdd_video.errors import ConfigError, check_range

_ATTN = r"(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)"
_FF = r"(ff|ff_in)\.net\.(0\.proj|2)"
_CONV = r"proj_in|proj_out|conv1|conv2|conv_shortcut|time_emb_proj|downsamplers\.0\.conv|upsamplers\.0\.conv"
# peft full-matches a string target against each module name. "(.*\.)?transformer_blocks" needs a dot
# (or the start) right before "transformer_blocks", so it does NOT match "temporal_transformer_blocks".
PRESETS: dict[str, str] = {
    "attn": rf".*\.{_ATTN}",
    "attn_ff": rf".*\.({_ATTN}|{_FF})",
    "attn_ff_conv": rf".*\.({_ATTN}|{_FF}|{_CONV})",
    "spatial": rf"(.*\.)?transformer_blocks\.\d+\.({_ATTN}|{_FF})",
    "temporal": rf"(.*\.)?temporal_transformer_blocks\.\d+\.({_ATTN}|{_FF})",
}
META_KEY = "tdd_video"
DIFFUSERS_META_KEY = "lora_adapter_metadata"
PREFIX = "unet."


def _lora_layers(unet: nn.Module):
    from peft.tuners.lora import LoraLayer
    return [m for m in unet.modules() if isinstance(m, LoraLayer)]


def adapter_names(unet: nn.Module) -> set[str]:
    """Names of the LoRA adapters injected into `unet`."""
    names: set[str] = set()
    for layer in _lora_layers(unet):
        names.update(layer.lora_A.keys())
    return names


def unet_fingerprint(unet: nn.Module) -> str:
    """sha256 (16 hex) of the base UNet's class and config (private/bookkeeping keys dropped)."""
    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    blob = json.dumps({"class": type(unet).__name__, "config": cfg}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def lora_config(rank: int = 64, alpha: float | None = None, preset: str = "attn"):
    """The peft LoraConfig of a preset (alpha defaults to rank, i.e. scale 1). Zero-init B."""
    from peft import LoraConfig
    check_range("lora.rank", rank, 1, None)
    if preset not in PRESETS:
        raise ConfigError("lora.preset", f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    return LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), target_modules=PRESETS[preset],
                      init_lora_weights=True, lora_dropout=0.0, bias="none")


def _inject(cfg, unet: nn.Module, name: str) -> None:
    """peft.inject_adapter_in_model, silencing its (expected) 'multiple adapters' warning."""
    import warnings

    from peft import inject_adapter_in_model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        try:
            inject_adapter_in_model(cfg, unet, adapter_name=name)
        except ValueError as e:   # peft's NoMatchingPeftModuleError
            if "not found in the base model" not in str(e):
                raise
            raise ConfigError("lora.preset", f"the LoRA targets matched no module of this {type(unet).__name__} "
                                             f"(target_modules={cfg.target_modules!r})") from None


def _adapter_params(unet: nn.Module, name: str) -> dict[str, nn.Parameter]:
    tag_a, tag_b = f".lora_A.{name}.", f".lora_B.{name}."
    return {n: p for n, p in unet.named_parameters() if tag_a in n or tag_b in n}


def add_lora(unet: nn.Module, name: str = "student", rank: int = 64, alpha: float | None = None,
             preset: str = "attn", init_from: str | Path | None = None, dtype: torch.dtype = torch.float32,
             trainable: bool = True) -> nn.Module:
    """Inject adapter `name` (in place) and freeze the base; returns `unet`.

    init_from: the name of an existing adapter to copy (e.g. the EMA from the student) or a LoRA
    file to load. The adapter's weights are kept in `dtype` (fp32 default, also over a bf16 base)."""
    if name in adapter_names(unet):
        raise ConfigError("lora.name", f"adapter {name!r} already exists in this UNet")
    before = set(adapter_names(unet))
    if isinstance(init_from, str) and init_from in before:
        src = next(layer for layer in _lora_layers(unet) if init_from in layer.lora_A)
        rank, alpha = src.r[init_from], src.lora_alpha[init_from]
    cfg = lora_config(rank, alpha, preset)
    from_file = init_from is not None and not (isinstance(init_from, str) and init_from in before)
    if from_file:   # refuse a file for another base / other modules before touching the UNet
        state, _, ours = read_lora(init_from)
        _check_base(unet, ours, init_from)
        _check_keys(unet, state, cfg, init_from)
    if isinstance(init_from, str) and init_from in before:
        cfg.target_modules = sorted(n for n, m in unet.named_modules()
                                    if hasattr(m, "lora_A") and init_from in m.lora_A)
    requires = {n: p.requires_grad for n, p in unet.named_parameters()}
    _inject(cfg, unet, name)
    new = _adapter_params(unet, name)
    for n, p in unet.named_parameters():       # base frozen; other adapters keep their state
        p.requires_grad_(requires.get(n, False) and "lora_" in n)
    for p in new.values():
        p.data = p.data.to(dtype)
        p.requires_grad_(trainable)
    _set_state(unet, _active(unet) or [name], False)
    if init_from is not None:
        if isinstance(init_from, str) and init_from in before:
            src = _adapter_params(unet, init_from)
            with torch.no_grad():
                for n, p in new.items():
                    p.copy_(src[n.replace(f".{name}.", f".{init_from}.")])
        else:
            _load_weights_into(unet, Path(init_from), name)
    return unet


# ------------------------------------------------------------------ switching (no requires_grad changes)
def _active(unet: nn.Module) -> list[str]:
    layers = _lora_layers(unet)
    return list(layers[0].active_adapters) if layers else []


def _disabled(unet: nn.Module) -> bool:
    layers = _lora_layers(unet)
    return bool(layers and layers[0].disable_adapters)


def _set_state(unet: nn.Module, active: list[str], disabled: bool) -> None:
    for layer in _lora_layers(unet):
        layer._active_adapter = list(active)
        layer._disable_adapters = disabled


def set_active_adapter(unet: nn.Module, name: str) -> None:
    """Make adapter `name` the only active one (and enable adapters)."""
    if name not in adapter_names(unet):
        raise ConfigError("lora.adapter", f"no adapter {name!r}; this UNet has {sorted(adapter_names(unet))}")
    _set_state(unet, [name], False)


@contextmanager
def use_adapter(unet: nn.Module, name: str):
    """Context: run `unet` with only adapter `name` active (e.g. the EMA target); restores afterwards."""
    prev = (_active(unet), _disabled(unet))
    set_active_adapter(unet, name)
    try:
        yield unet
    finally:
        _set_state(unet, *prev)


@contextmanager
def adapters_disabled(unet: nn.Module):
    """Context: the bare base UNet (= the teacher), without copying any weights."""
    prev = (_active(unet), _disabled(unet))
    _set_state(unet, prev[0], True)
    try:
        yield unet
    finally:
        _set_state(unet, *prev)


def trainable_parameters(unet: nn.Module, name: str = "student") -> list[nn.Parameter]:
    """The parameters of adapter `name` (what the optimizer should see)."""
    params = list(_adapter_params(unet, name).values())
    if not params:
        raise ConfigError("lora.adapter", f"no adapter {name!r}; this UNet has {sorted(adapter_names(unet))}")
    return params


# ------------------------------------------------------------------ save / load
def _family_of(unet: nn.Module) -> str:
    return {"UNetSpatioTemporalConditionModel": "svd", "UNet2DConditionModel": "sdxl"}.get(type(unet).__name__,
                                                                                          type(unet).__name__)


def _adapter_config_dict(unet: nn.Module, name: str) -> dict:
    """The PEFT LoraConfig of adapter `name` as diffusers stores it (explicit target module list)."""
    from peft import LoraConfig
    layers = [(n, m) for n, m in unet.named_modules() if hasattr(m, "lora_A") and name in getattr(m, "lora_A", {})]
    if not layers:
        raise ConfigError("lora.adapter", f"no adapter {name!r}; this UNet has {sorted(adapter_names(unet))}")
    ranks = {m.r[name] for _, m in layers}
    alphas = {m.lora_alpha[name] for _, m in layers}
    if len(ranks) != 1 or len(alphas) != 1:
        raise ConfigError("lora", f"adapter {name!r} mixes ranks {ranks} / alphas {alphas}; not supported by save_lora")
    cfg = LoraConfig(r=ranks.pop(), lora_alpha=alphas.pop(), target_modules=sorted(n for n, _ in layers),
                     init_lora_weights=True, lora_dropout=0.0, bias="none").to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}


def save_lora(unet: nn.Module, path, adapter: str = "student", base_fingerprint: str | None = None,
              family: str | None = None, extra: dict | None = None) -> Path:
    """Write adapter `adapter` to a diffusers-compatible .safetensors file (alpha/rank scale preserved)."""
    from safetensors.torch import save_file
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "pytorch_lora_weights.safetensors"
    params = _adapter_params(unet, adapter)
    state = {PREFIX + n.replace(f".lora_A.{adapter}.", ".lora_A.").replace(f".lora_B.{adapter}.", ".lora_B."):
             p.detach().to("cpu").contiguous() for n, p in params.items()}
    cfg = _adapter_config_dict(unet, adapter)
    ours = {"format": "tdd_video.lora/1", "family": family or _family_of(unet), "adapter": adapter,
            "base_class": type(unet).__name__, "base_fingerprint": base_fingerprint or unet_fingerprint(unet),
            "rank": cfg["r"], "alpha": cfg["lora_alpha"], **(extra or {})}
    meta = {"format": "pt",
            DIFFUSERS_META_KEY: json.dumps({PREFIX + k: v for k, v in cfg.items()}, indent=2, sort_keys=True,
                                           default=str),
            META_KEY: json.dumps(ours, sort_keys=True, default=str)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def lora_file(path) -> Path:
    """The .safetensors file of a LoRA given as the file itself or a folder holding it (a run's export/lora/)."""
    path = Path(path)
    return path / "pytorch_lora_weights.safetensors" if path.is_dir() else path


def rescale_lora_file(src, dst, strength: float) -> Path:
    """Write the LoRA `src` to `dst` with its strength folded into the weights: every lora_B (up) matrix × strength.
    ΔW = (α/r)·B·A is linear in B, so `dst` at scale 1 is `src` at scale `strength`. Our metadata records the
    product of all strengths folded in (key "strength"); everything else is kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    check_range("strength", strength, 0.0, None, lo_open=True)
    src, dst = lora_file(src), Path(dst)
    read_lora(src)                                           # a readable LoRA, or ConfigError
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}
    state = {k: (v * strength).to(v.dtype) if ".lora_B." in k or ".lora_up." in k else v for k, v in state.items()}
    if META_KEY in meta:
        ours = json.loads(meta[META_KEY])
        ours["strength"] = float(ours.get("strength", 1.0)) * strength
        meta[META_KEY] = json.dumps(ours, sort_keys=True, default=str)
    dst = dst / "pytorch_lora_weights.safetensors" if dst.suffix != ".safetensors" else dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst), metadata=meta)
    return dst


def read_lora(path) -> tuple[dict[str, torch.Tensor], dict | None, dict | None]:
    """(state dict with the 'unet.' prefix stripped, PEFT config kwargs or None, our metadata or None)."""
    from safetensors import safe_open
    path = lora_file(path)
    if not path.is_file():
        raise ConfigError("lora", f"LoRA file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - random bytes, a truncated download, a Git LFS pointer, a .bin file
        raise ConfigError("lora", f"cannot read LoRA file {str(path)!r} as .safetensors ({type(e).__name__}: {e}); "
                                  "is the file complete (not truncated / a Git LFS pointer)?") from None
    state = {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in state.items()}
    cfg = None
    try:
        if DIFFUSERS_META_KEY in meta:
            raw = json.loads(meta[DIFFUSERS_META_KEY])
            cfg = {k[len(PREFIX):]: v for k, v in raw.items() if k.startswith(PREFIX)} or None
        ours = json.loads(meta[META_KEY]) if META_KEY in meta else None
    except (ValueError, AttributeError) as e:
        raise ConfigError("lora", f"LoRA file {str(path)!r} has unreadable metadata "
                                  f"({type(e).__name__}: {e})") from None
    return state, cfg, ours


def _modules_in_file(state: dict) -> tuple[set[str], list[str]]:
    mods, bad = set(), []
    for k in state:
        for tag in (".lora_A.weight", ".lora_B.weight"):
            if k.endswith(tag):
                mods.add(k[: -len(tag)])
                break
        else:
            bad.append(k)
    return mods, bad


def _check_keys(unet: nn.Module, state: dict, cfg, path) -> None:
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import check_target_module_exists
    file_mods, bad = _modules_in_file(state)
    targets = {n for n, m in unet.named_modules()
               if ".lora_" not in n and "base_layer" not in n
               and isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d, LoraLayer)) and check_target_module_exists(cfg, n)}
    missing, unexpected = sorted(targets - file_mods), sorted((file_mods - targets)) + sorted(bad)
    if missing or unexpected:
        def few(xs):
            return ", ".join(xs[:4]) + (f", ... ({len(xs)} in all)" if len(xs) > 4 else "")
        raise ConfigError("lora", f"LoRA {str(path)!r} does not match this {type(unet).__name__}: "
                                  f"{len(missing)} missing module(s) [{few(missing)}]; "
                                  f"{len(unexpected)} unexpected key(s)/module(s) [{few(unexpected)}]")


def _check_base(unet: nn.Module, ours: dict | None, path) -> None:
    """Refuse a LoRA whose recorded base fingerprint is not this UNet's."""
    fp = unet_fingerprint(unet)
    if ours and ours.get("base_fingerprint") not in (None, fp):
        raise ConfigError("lora", f"LoRA {str(path)!r} was trained on another base ({ours.get('family')} "
                                  f"{ours.get('base_class')}, config fingerprint {ours.get('base_fingerprint')}); this "
                                  f"{type(unet).__name__} has fingerprint {fp}. Refusing to load it.")


def _load_weights_into(unet: nn.Module, path: Path, name: str) -> None:
    state, _, _ = read_lora(path)
    params = _adapter_params(unet, name)
    with torch.no_grad():
        for k, v in state.items():
            target = k.replace(".lora_A.", f".lora_A.{name}.").replace(".lora_B.", f".lora_B.{name}.")
            if target not in params:
                raise ConfigError("lora", f"LoRA {str(path)!r}: key {k!r} has no matching parameter "
                                          f"in adapter {name!r}")
            if params[target].shape != v.shape:
                raise ConfigError("lora", f"LoRA {str(path)!r}: {k!r} has shape {tuple(v.shape)}, this UNet expects "
                                          f"{tuple(params[target].shape)} (different rank or base?)")
            params[target].copy_(v)


def load_lora(unet: nn.Module, path, name: str = "student", scale: float = 1.0, trainable: bool = False,
              dtype: torch.dtype = torch.float32) -> nn.Module:
    """Inject adapter `name` from a LoRA file (in place); refuses a LoRA for another base or with other keys.

    scale multiplies the stored alpha/rank scale (1.0 = the strength it was trained with; 0 = off)."""
    from peft import LoraConfig
    check_range("lora_scale", scale, 0.0, None)
    path = Path(path)
    state, cfg_kwargs, ours = read_lora(path)
    _check_base(unet, ours, path)
    file_mods, _ = _modules_in_file(state)
    if cfg_kwargs is None:   # no PEFT metadata: rank from the weights, alpha = rank (scale 1)
        ranks = {v.shape[0] for k, v in state.items() if k.endswith(".lora_A.weight")}
        rank = max(ranks) if ranks else 1
        cfg_kwargs = {"r": rank, "lora_alpha": rank, "target_modules": sorted(file_mods)}
    cfg = LoraConfig(**{k: v for k, v in cfg_kwargs.items() if k in LoraConfig.__dataclass_fields__})
    _check_keys(unet, state, cfg, path)
    if name in adapter_names(unet):
        raise ConfigError("lora.name", f"adapter {name!r} already exists in this UNet")
    requires = {n: p.requires_grad for n, p in unet.named_parameters()}
    active = _active(unet)
    _inject(cfg, unet, name)
    for n, p in unet.named_parameters():
        p.requires_grad_(requires.get(n, False))
    new = _adapter_params(unet, name)
    for p in new.values():
        p.data = p.data.to(dtype)
        p.requires_grad_(trainable)
    _set_state(unet, active or [name], False)
    _load_weights_into(unet, path, name)
    for layer in _lora_layers(unet):
        layer.set_scale(name, scale)
    return unet


# ------------------------------------------------------------------ fuse / export
def fuse_lora(unet: nn.Module, name: str = "student", scale: float = 1.0) -> nn.Module:
    """Merge adapter `name` into the base weights and remove ALL peft wrappers (in place)."""
    if name not in adapter_names(unet):
        raise ConfigError("lora.adapter", f"no adapter {name!r}; this UNet has {sorted(adapter_names(unet))}")
    for layer in _lora_layers(unet):
        if name in layer.lora_A:
            layer.set_scale(name, scale)
            layer.merge(adapter_names=[name])
    return unwrap_peft(unet)


def unwrap_peft(unet: nn.Module) -> nn.Module:
    """Replace every peft LoRA wrapper by its base layer (merged weights stay; unmerged adapters are
    dropped) and forget the peft config, in place: the result is a plain diffusers module."""
    wrapped = [(n, m) for n, m in unet.named_modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]
    for n, m in wrapped:
        parent_name, _, child = n.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, m.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in unet.__dict__:
            delattr(unet, attr)
    return unet


def export_fused_unet(unet: nn.Module, folder, adapter: str = "student", scale: float = 1.0,
                      inplace: bool = False) -> Path:
    """Save a plain diffusers UNet folder (no peft modules) with `adapter` fused in.

    inplace=False fuses a deep copy (the training UNet keeps its adapters; needs one extra copy of the base)."""
    target = unet if inplace else copy.deepcopy(unet)
    fuse_lora(target, adapter, scale)
    leftover = [n for n in target.state_dict() if "lora_" in n or "base_layer" in n]
    if leftover:   # pragma: no cover - defensive
        raise RuntimeError(f"fused UNet still has peft weights: {leftover[:3]}")
    folder = Path(folder)
    target.save_pretrained(folder)
    return folder
