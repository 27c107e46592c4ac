"""Load a full diffusers-named UNet state dict (e.g. AnimateLCM-SVD-xt-1.1.safetensors) into a base's UNet.

The released AnimateLCM-SVD-xt-1.1 checkpoint is a complete UNetSpatioTemporalConditionModel state
dict (fp32, ~6.1 GB) with diffusers parameter names (docs/math.md §8). It is loaded *strictly* into the UNet
built from the base model's `unet` config (VAE and image encoder stay the base's):

    family = load_family("svd", "stabilityai/stable-video-diffusion-img2vid-xt-1-1")
    load_unet_checkpoint(family.unet, "AnimateLCM-SVD-xt-1.1.safetensors")

Keys and shapes are checked *before* any tensor is read (for .safetensors, from the file header), so a
wrong file is refused quickly with counts and the first few missing / unexpected keys and shape
mismatches. A file whose keys all carry one of the prefixes "unet.", "model.", "module." is accepted
with the prefix removed. .bin/.pt/.pth files are read with torch.load(weights_only=True). A diffusers
UNet folder (what `save_pretrained` / the engine's full fine-tune export writes) is accepted too: its
diffusion_pytorch_model(.fp16).safetensors / .bin is used (single-file weights only).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:            # torch is imported where tensors are read: the file checks stay light
    import torch
    from torch import nn

SHOW = 5
STRIP_PREFIXES = ("unet.", "model.", "module.")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not match the model."""


@dataclass
class LoadReport:
    """What `load_unet_checkpoint` found: loaded tensor count and the mismatches (non-strict loads)."""

    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)   # (key, file shape, model shape)
    stripped_prefix: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """Human-readable summary: counts and the first few offending keys of each kind."""
        def few(items):
            shown = ", ".join(items[:SHOW])
            return shown + (f", … (+{len(items) - SHOW} more)" if len(items) > SHOW else "")
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s) (in the model, not in the file): {few(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s) (in the file, not in the model): "
                         f"{few(self.unexpected)}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shape mismatch(es): "
                         + few([f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]))
        return "; ".join(parts) if parts else f"all {self.loaded} tensors match"


def _read_shapes(path: Path) -> tuple[dict[str, tuple], dict[str, torch.Tensor] | None]:
    """(key -> shape, tensors or None). Safetensors: header only (tensors are read later)."""
    import torch
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, None
        if suffix in (".bin", ".pt", ".pth", ".ckpt"):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
                obj = obj["state_dict"]
            if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise CheckpointError(f"{path} does not contain a state dict of tensors")
            return {k: tuple(v.shape) for k, v in obj.items()}, obj
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure becomes one clear message
        raise CheckpointError(f"could not read checkpoint {path} ({type(e).__name__}: {e}); "
                              "is the file complete (not truncated / a Git LFS pointer)?") from None
    raise CheckpointError(f"unsupported checkpoint suffix {suffix!r} for {path}; "
                          "expected .safetensors, .bin, .pt or .pth")


WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin")


def resolve_checkpoint_file(path: str | Path) -> Path:
    """The weights file of `path`: the file itself, or the single-file weights inside a diffusers UNet folder."""
    path = Path(path)
    if path.is_dir():
        for name in WEIGHT_NAMES:
            if (path / name).is_file():
                return path / name
        if any(path.glob("*.index.json")):
            raise CheckpointError(f"{path} holds sharded weights; pass a single-file state dict "
                                  "(or load the folder with UNetSpatioTemporalConditionModel.from_pretrained)")
        raise CheckpointError(f"{path} is a folder without {' / '.join(WEIGHT_NAMES)}")
    if not path.is_file():
        raise CheckpointError(f"UNet checkpoint not found: {path}")
    return path


TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def check_weights_file(path: str | Path, what: str = "checkpoint") -> Path:
    """Cheap check (no torch, no tensor data read) that `path` is a readable weights file: a .safetensors
    header that parses and fits the file, or a torch.save file (zip archive or pickle). CheckpointError
    naming the file otherwise (random bytes, a truncated download, a Git LFS pointer, an HTML error page)."""
    path = Path(path)
    hint = "is the file complete (not truncated / a Git LFS pointer)?"
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), framework="numpy") as f:
                f.keys()
        elif path.suffix.lower() in TORCH_SUFFIXES:
            with open(path, "rb") as f:
                head = f.read(2)
            if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):
                raise CheckpointError(f"{path} is not a PyTorch {what} (neither a zip archive nor a pickle); {hint}")
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure becomes one clear message
        raise CheckpointError(f"cannot read {what} {path} ({type(e).__name__}: {e}); {hint}") from None
    return path


def _strip_prefix(keys) -> str:
    keys = list(keys)
    for p in STRIP_PREFIXES:
        if keys and all(k.startswith(p) for k in keys):
            return p
    return ""


def check_unet_checkpoint(unet: nn.Module, path: str | Path) -> LoadReport:
    """Compare a checkpoint's keys/shapes with `unet.state_dict()` without loading it."""
    path = resolve_checkpoint_file(path)
    shapes, _ = _read_shapes(path)
    return _compare(unet, path, shapes)


def _compare(unet: nn.Module, path: Path, shapes: dict[str, tuple]) -> LoadReport:
    prefix = _strip_prefix(shapes)
    file_shapes = {k[len(prefix):]: v for k, v in shapes.items()}
    model_shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    missing = sorted(set(model_shapes) - set(file_shapes))
    unexpected = sorted(set(file_shapes) - set(model_shapes))
    mismatched = [(k, file_shapes[k], model_shapes[k]) for k in sorted(set(file_shapes) & set(model_shapes))
                  if file_shapes[k] != model_shapes[k]]
    loaded = len(set(file_shapes) & set(model_shapes)) - len(mismatched)
    return LoadReport(str(path), loaded, missing, unexpected, mismatched, prefix)


def load_unet_checkpoint(unet: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a full UNet state dict from `path` into `unet` in place (kept on its device and dtype).

    strict=True (default) refuses any missing/unexpected key or shape mismatch with CheckpointError
    listing them (counts + first few); strict=False loads the matching tensors and returns the report."""
    import torch
    path = resolve_checkpoint_file(path)
    shapes, tensors = _read_shapes(path)
    report = _compare(unet, path, shapes)
    if strict and not report.ok:
        hint = ""
        if any("lora" in k.lower() for k in report.unexpected):
            hint = " It looks like a LoRA file, not a full UNet: load it as a LoRA adapter instead."
        raise CheckpointError(f"{path} is not a full state dict of this UNet ({type(unet).__name__}): "
                              f"{report.describe()}.{hint}")
    wanted = {k: v for k, v in shapes.items() if k[len(report.stripped_prefix):] in unet.state_dict()}
    if tensors is None:
        from safetensors import safe_open
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            for k in wanted:
                tensors[k] = f.get_tensor(k)
    bad = {m[0] for m in report.mismatched}
    state = {k[len(report.stripped_prefix):]: v for k, v in tensors.items()
             if k in wanted and k[len(report.stripped_prefix):] not in bad}
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise CheckpointError(f"{path} has non-finite values in {len(nonfinite)} tensor(s), e.g. {nonfinite[:SHOW]}")
    own = unet.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].dtype))
    return report
