"""The toy model zoo: tiny but *trained* models committed with the package, loaded by name.

Each entry is a folder under ``tdd_video/zoo/<name>/`` holding a complete diffusers pipeline
(``model_index.json`` + component subfolders, safetensors) and a ``MODEL_CARD.md`` that says how
it was trained and the exact command that rebuilds it (``tools/zoo/build_svd.py``). Students
(LoRA adapters distilled from a zoo teacher) live next to their teacher as
``tdd_video/zoo/<teacher>/students/<student>/``.

    >>> from tdd_video.zoo import resolve_model, available
    >>> available()                      # e.g. ['toy-svd']
    >>> resolve_model("toy-svd")         # Path to the diffusers folder
    >>> resolve_model("/my/svd_folder")  # a local folder passes through

``resolve_model`` raises ``ZooModelNotFound`` (a ``ConfigError`` on key ``model``) listing the
available names when a name is neither a zoo entry nor an existing path (nor, with ``allow_hub``, a
plausible hub id ``owner/name``); a path-like name (``/x``, ``./x``, ``~/x``, ``a/b/c``) that does not
exist is reported as a missing folder.
"""
from __future__ import annotations

import re
from pathlib import Path

from tdd_video.errors import ConfigError

ZOO_DIR = Path(__file__).resolve().parent
DEFAULT_SVD = "toy-svd"


class ZooModelNotFound(ConfigError):
    """A model name is not in the zoo and not a local path."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__("model", message)


def available() -> list[str]:
    """Names of the zoo entries whose weights are present (folders with a model_index.json)."""
    return sorted(p.name for p in ZOO_DIR.iterdir() if p.is_dir() and (p / "model_index.json").is_file())


def zoo_path(name: str) -> Path:
    """Folder of zoo entry `name` (it may not exist yet: see `available`)."""
    return ZOO_DIR / name


def is_zoo_name(name) -> bool:
    return (isinstance(name, str) and "/" not in name and "\\" not in name
            and (ZOO_DIR / name / "model_index.json").is_file())


# A hub repo id: "owner/name", letters, digits, "-", "_", "." (no "--" or "..", at most 96 characters per part).
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"{_HUB_PART}/{_HUB_PART}")


def is_hub_id(name) -> bool:
    """True if `name` is a plausible Hugging Face hub repo id ``owner/name`` (exactly one "/", allowed characters)."""
    return (isinstance(name, str) and _HUB_ID.fullmatch(name) is not None
            and "--" not in name and ".." not in name)


def looks_like_path(name: str) -> bool:
    """A name that can only mean a local path: absolute, ./ ../ ~ prefixed, backslashes, or several "/"."""
    return (name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or name in (".", "..") or "\\" in name
            or name.count("/") > 1)


def zoo_listing() -> str:
    """The available zoo names, comma separated (or how to build them when there are none)."""
    names = available()
    return ", ".join(names) if names else "none — rebuild with `python -m tools.zoo.build_svd " \
                                          "--config configs/toy/pretrain_svd.yaml`"


def resolve_model(name_or_path, allow_hub: bool = False) -> Path | str:
    """Zoo name -> its folder; existing local path -> that Path; plausible hub id -> itself if `allow_hub`.

    Raises ZooModelNotFound otherwise (also for None): "folder ... does not exist" for a path-like name,
    else "not found", naming the available zoo entries."""
    listing = zoo_listing()
    if name_or_path is None or str(name_or_path).strip() == "":
        raise ZooModelNotFound("", f"no model given; zoo models available: {listing}")
    if isinstance(name_or_path, Path) or not isinstance(name_or_path, str):
        path = Path(name_or_path)
        if path.exists():
            return path
        raise ZooModelNotFound(str(name_or_path), f"path {str(path)!r} does not exist; zoo models available: {listing}")
    if is_zoo_name(name_or_path):
        return ZOO_DIR / name_or_path
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if looks_like_path(name_or_path):
        raise ZooModelNotFound(name_or_path, f"folder {str(path)!r} does not exist")
    if allow_hub and is_hub_id(name_or_path):
        return name_or_path
    hub = ", nor a hub id (owner/name)" if allow_hub else ""
    raise ZooModelNotFound(name_or_path, f"{name_or_path!r} not found: it is not a zoo model, nor an existing "
                                         f"folder{hub}; zoo models available: {listing}")


DEFAULT_STUDENT = "tdd-4step"
# (fewest steps, student, LoRA strength): with no --model, the zoo student distilled for the step count is applied,
# at the strength measured best for it. Each TDD student is a specialist (docs/quality.md §1: trained with one K it
# is best at about K/2 steps), so the default render gets closer to the teacher as --steps grows (README "Toy SVD"):
# 1 to 3 steps apply the student trained on the hops of 1- and 2-step sampling, 4 to 7 the 4-step one, 8 and more
# the one trained on 4..8 steps (docs/quality.md §6). The 1-3 step student is soft at its trained strength at 1 and 2
# steps (0.66x / 0.72x the teacher's sharpness) and over-sharp at 3 (1.14x); the strength per step count is the
# lowest-distance one that keeps sharpness at 0.85x or more (docs/quality.md §2): 1.3 at 1 step (0.91x), 1.2 at 2
# (0.86x), 0.8 at 3 (0.89x).
STEP_STUDENTS = ((8, "tdd-8step", 1.0), (4, DEFAULT_STUDENT, 1.0), (3, "tdd-2step", 0.8), (2, "tdd-2step", 1.2),
                 (1, "tdd-2step", 1.3))


def _step_entry(steps: int | None) -> tuple[int, str, float]:
    """The STEP_STUDENTS row for `steps` (the default student at its trained strength when steps is None)."""
    return next((e for e in STEP_STUDENTS if steps is not None and int(steps) >= e[0]), (0, DEFAULT_STUDENT, 1.0))


def student_for_steps(steps: int | None) -> str:
    """The zoo student made for `steps` sampling steps (DEFAULT_STUDENT when steps is None)."""
    return _step_entry(steps)[1]


def strength_for_steps(steps: int | None) -> float:
    """The LoRA strength the default render applies that student with at `steps` steps (1 = as trained)."""
    return _step_entry(steps)[2]


def default_student_lora(teacher: str = DEFAULT_SVD, student: str = DEFAULT_STUDENT) -> Path | None:
    """The shipped TDD student LoRA of a zoo teacher (``<teacher>/students/<student>/*.safetensors``), or None."""
    return _shipped_lora(ZOO_DIR / teacher, student)


def _shipped_lora(teacher_dir: Path, student: str) -> Path | None:
    """``<teacher_dir>/students/<student>/pytorch_lora_weights.safetensors`` if that file exists, else None."""
    path = teacher_dir / "students" / student / "pytorch_lora_weights.safetensors"
    return path if path.is_file() else None


def step_student_lora(steps: int | None, teacher_dir: str | Path | None = None) -> tuple[Path, float] | None:
    """What the default render applies at `steps` sampling steps: (the LoRA file of the student made for that step
    count, its strength) from ``<teacher_dir>/students/<name>/`` (default: the zoo's default SVD teacher), or None
    when that student is not shipped there. `steps` None or < 1 is the default student at strength 1."""
    _, name, strength = _step_entry(steps)
    path = _shipped_lora(Path(teacher_dir) if teacher_dir is not None else ZOO_DIR / DEFAULT_SVD, name)
    return None if path is None else (path, strength)


def model_card(name: str) -> str:
    """Text of a zoo entry's MODEL_CARD.md."""
    path = resolve_model(name)
    card = Path(path) / "MODEL_CARD.md"
    if not card.is_file():
        raise ZooModelNotFound(name, f"zoo entry {name!r} has no MODEL_CARD.md")
    return card.read_text()


__all__ = ["DEFAULT_SVD", "ZOO_DIR", "ZooModelNotFound", "available", "is_hub_id", "is_zoo_name", "looks_like_path",
           "model_card", "resolve_model", "zoo_listing", "zoo_path"]
