"""Contenders of the comparison harness and the quality bench: parsing `METHOD@STEPS[+refine]`,
resolving each to a network + sampler on one shared base family, and counting UNet passes.

* teacher — the base UNet (LoRA adapters disabled), Euler on diffusers' Karras σ grid (sampling.euler);
* base    — the same untrained base with the TDD sampler (what distillation starts from);
* tdd     — TDD LoRA (adapter on the base) or a full UNet; TDD sampler (tdd_video.sampling.sample),
            `+refine` = Distillation++ with the base as teacher;
* adv     — a second TDD student slot (the adversarially trained one), TDD sampler;
* animatelcm — a full UNet loaded strictly (tdd_video.unet_checkpoint; the released
            AnimateLCM-SVD-xt-1.1.safetensors) or a LoRA; AnimateLCM sampler;
* default — what `infer/img2vid.py --steps N` renders without --model: the student shipped next to the
            model for that step count at the strength measured for it (tdd_video.zoo.STEP_STUDENTS), TDD sampler.
Student weights come from the config's ``<method>_lora`` / ``<method>_unet`` attributes; `default` students from
``<cfg.model_dir>/students/``.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from tdd_video import lora, zoo
from tdd_video.errors import ConfigError
from tdd_video.families.base import using_unet
from tdd_video.sampling import RefineSettings, make_sampler, sample
from tdd_video.unet_checkpoint import load_unet_checkpoint

Tensor = torch.Tensor
METHODS = ("teacher", "base", "tdd", "adv", "animatelcm", "default")
STUDENTS = ("tdd", "adv", "animatelcm")          # methods with their own weights
TDD_SAMPLER = ("base", "tdd", "adv", "default")


@dataclass(frozen=True)
class Contender:
    label: str
    method: str
    steps: int
    refine: bool = False


def parse_contender(spec: str) -> Contender:
    """'tdd@4+refine' -> Contender('tdd@4+refine', 'tdd', 4, True); clear ConfigError otherwise."""
    m = re.fullmatch(r"\s*(teacher|base|tdd|adv|animatelcm|default)@(\d+)(\+refine)?\s*", spec)
    if not m:
        raise ConfigError("contender", f"got {spec!r}; write METHOD@STEPS[+refine] with METHOD in "
                                       f"{', '.join(METHODS)} (e.g. teacher@25, tdd@4+refine, animatelcm@8)")
    method, steps, refine = m.group(1), int(m.group(2)), bool(m.group(3))
    if steps < 1:
        raise ConfigError("contender", f"{spec!r}: steps must be >= 1")
    if refine and method not in ("tdd", "adv"):
        raise ConfigError("contender", f"{spec!r}: +refine (Distillation++) is defined for TDD students")
    if method == "animatelcm" and steps > 40:
        raise ConfigError("contender", f"{spec!r}: AnimateLCM samples on a 40-point grid, steps must be <= 40")
    return Contender(spec.strip(), method, steps, refine)


class PassCounter:
    """Counts UNet passes through forward pre-hooks: each call adds its batch rows / `videos`."""

    def __init__(self):
        self.rows, self.calls, self.videos, self._handles = 0, 0, 1, []

    def attach(self, module: torch.nn.Module) -> None:
        self._handles.append(module.register_forward_pre_hook(self._hook, with_kwargs=True))

    def _hook(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("sample")
        self.rows += int(x.shape[0])
        self.calls += 1

    def reset(self, videos: int = 1) -> None:
        self.rows, self.calls, self.videos = 0, 0, videos

    @property
    def passes(self) -> float:
        return self.rows / self.videos

    def close(self) -> None:
        for h in self._handles:
            h.remove()


class Contenders:
    """Resolves each contender to (UNet module, adapter, sampler) on one shared base family."""

    def __init__(self, family, cfg, contenders: list[Contender]):
        self.family, self.cfg, self.base = family, cfg, family.unet
        self.units: dict[str, torch.nn.Module] = {}
        self.adapters: dict[str, str] = {}
        methods = {c.method for c in contenders}
        for method in STUDENTS:
            if method not in methods:
                continue
            lora_file, unet_file = getattr(cfg, f"{method}_lora", None), getattr(cfg, f"{method}_unet", None)
            if bool(lora_file) == bool(unet_file):
                raise ConfigError(f"--{method}-lora", f"{method} contenders need exactly one of --{method}-lora FILE "
                                                      f"(a LoRA from a training run's export) or --{method}-unet FILE "
                                                      "(full UNet state dict, e.g. AnimateLCM-SVD-xt-1.1.safetensors)")
            if unet_file:
                self.units[method] = self._full_unet(unet_file)
            else:
                self.adapters[method] = self._load_adapter(method, lora_file)
        for c in (c for c in contenders if c.method == "default"):
            model_dir = getattr(cfg, "model_dir", None)
            if not model_dir:
                raise ConfigError("--contenders", f"{c.label}: the default render's students are looked up next to "
                                                  "the model, and no model folder was given")
            found = zoo.step_student_lora(c.steps, model_dir)
            if found is None:
                raise ConfigError("--contenders", f"{c.label}: the default render's student for {c.steps} steps "
                                                  f"({zoo.student_for_steps(c.steps)}) is not shipped next to this "
                                                  "model (MODEL/students/NAME/pytorch_lora_weights.safetensors)")
            self.adapters[c.label] = self._load_adapter("default", str(found[0]), found[1])
        self.counter = PassCounter()
        for m in {id(u): u for u in [self.base, *self.units.values()]}.values():
            self.counter.attach(m)

    def _load_adapter(self, method: str, path: str, scale: float | None = None) -> str:
        """Inject a LoRA file as adapter '<method>_<file hash>[_x<strength>]' (reused if this base already has it);
        strength `scale`, else the config's `<method>_lora_scale` (1 when it has none)."""
        p = Path(path)
        if p.is_dir():
            files = sorted(p.rglob("*.safetensors"))
            if not files:
                raise ConfigError(f"--{method}-lora", f"folder {str(p)!r} has no .safetensors LoRA file")
            p = files[0]
        if not p.is_file():
            raise ConfigError(f"--{method}-lora", f"file not found: {str(p)!r}")
        if scale is None:                                       # LoRA strength (quality bench option)
            scale = float(getattr(self.cfg, f"{method}_lora_scale", 1.0))
        name = f"{method}_{hashlib.sha1(p.read_bytes()).hexdigest()[:10]}"
        name += "" if scale == 1 else "_x" + f"{scale:g}".replace(".", "p")      # load_lora refuses scale < 0
        if name not in lora.adapter_names(self.base):
            lora.load_lora(self.base, p, name=name, scale=scale)
        return name

    def _full_unet(self, path: str) -> torch.nn.Module:
        """A UNet of the base's config with a full state dict loaded strictly (unet_checkpoint)."""
        unet = type(self.base).from_config(self.base.config)
        ref = next(self.base.parameters())
        unet.to(device=ref.device)
        if ref.dtype != torch.float32:
            unet.to(dtype=ref.dtype)
        unet.eval().requires_grad_(False)
        load_unet_checkpoint(unet, path, strict=True)
        return unet

    @contextlib.contextmanager
    def using(self, c: Contender):
        """family.unet set to the contender's network (adapter switched on, or the bare base)."""
        unet = self.units.get(c.method, self.base)
        adapter = self.adapters.get(c.label if c.method == "default" else c.method)
        with using_unet(self.family, unet):
            if unet is self.base and adapter is not None:
                with lora.use_adapter(unet, adapter):
                    yield unet
            elif lora.adapter_names(unet):
                with lora.adapters_disabled(unet):
                    yield unet
            else:
                yield unet

    def sample(self, c: Contender, cond, null, noise: Tensor, seed: int) -> Tensor:
        """Latents x0 [B, F, C, h, w] of contender `c` from unit noise `noise`."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(seed)
        if c.method == "teacher":
            return sample(self.family, cond, null, steps=c.steps, guidance=tuple(cfg.teacher_guidance),
                          latents=noise, progress=False, scheduler=make_sampler(self.family, "euler"))
        if c.method == "animatelcm":
            return sample(self.family, cond, null, steps=c.steps, guidance=tuple(cfg.animatelcm_guidance),
                          generator=gen, latents=noise, progress=False,
                          scheduler=make_sampler(self.family, "animatelcm"))
        refine = None
        if c.refine:
            refine = RefineSettings(strength=cfg.refine_strength,
                                    teacher=self.base if c.method in self.units else None)
        scheduler = make_sampler(self.family, "tdd", eta=cfg.tdd_eta)
        return sample(self.family, cond, null, steps=c.steps, eta=cfg.tdd_eta, guidance=float(cfg.tdd_guidance),
                      refine=refine, generator=gen, latents=noise, progress=False, scheduler=scheduler,
                      timesteps=self.tdd_timesteps(c, scheduler))

    def tdd_timesteps(self, c: Contender, scheduler) -> list | None:
        """Custom levels of `tdd_grid` (grid indices) for the tdd contender with that many steps, else None (S_K)."""
        grid = getattr(self.cfg, "tdd_grid", None)
        if c.method != "tdd" or not grid or len(grid) != c.steps:
            return None
        return scheduler.timesteps_of_grid(grid, key="tdd_grid").tolist()
