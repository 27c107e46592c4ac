"""Who owns a run directory, and what may be found in it when a run starts.

* `RunLock`: ``<run>/.lock`` holds {pid, host, started}. A second run into the same directory is
  refused while the owner is alive; a lock whose owner is dead (same host, pid gone) is taken over.
  A lock written on another host cannot be checked from here: it is refused, naming the host, and
  the message says how to clear it. Rank 0 holds the lock; it is removed when the run ends.
* `prepare_run_dir`: a directory that already holds a run (checkpoints, metrics or an export) is
  refused unless the run resumes (`--resume`) or `--overwrite` asks to delete that run's outputs.
* `truncate_metrics`: on resume, metrics.jsonl lines after the resumed step are dropped, so every
  step appears once.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from tdd_video.errors import ConfigError

LOCK = ".lock"
RUN_OUTPUTS = ("checkpoints", "export", "metrics.jsonl", "tensorboard", "validation")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive ownership of a run directory by one process (see the module docstring)."""

    def __init__(self, run_dir: Path, active: bool = True):
        self.path = Path(run_dir) / LOCK
        self.active = active
        self.note: str | None = None

    def __enter__(self) -> "RunLock":
        if not self.active:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_owner()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self

    def _check_owner(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            owner = {}
        pid, host = owner.get("pid"), owner.get("host")
        here = socket.gethostname()
        if isinstance(pid, int) and host == here and not _alive(pid):
            self.note = f"took over the lock of a run that is gone (pid {pid}, started {owner.get('started')})"
            self.path.unlink(missing_ok=True)
            return
        if host == here and pid == os.getpid():
            raise ConfigError("run.output_dir", f"{self.path.parent} is already locked by this process")
        who = f"pid {pid} on host {host}" if pid else "an unknown process"
        extra = "" if host == here else (f"; if that run is gone, delete {self.path}")
        raise ConfigError("run.output_dir", f"{self.path.parent} is in use by another run ({who}, started "
                                            f"{owner.get('started', '?')}): use another run.output_dir{extra}")

    def __exit__(self, *exc) -> None:
        if self.active:
            try:
                owner = json.loads(self.path.read_text())
                if owner.get("pid") == os.getpid():
                    self.path.unlink()
            except (OSError, ValueError):
                pass


def existing_outputs(run_dir: Path) -> list[str]:
    """The names of a previous run's outputs found in `run_dir`."""
    return [name for name in RUN_OUTPUTS if (Path(run_dir) / name).exists()]


def prepare_run_dir(run_dir: Path, resume: str | None, overwrite: bool) -> list[str]:
    """Refuse to start a new run over an existing one unless `overwrite` (which deletes its outputs)."""
    found = existing_outputs(run_dir)
    if not found or resume is not None:
        return []
    if not overwrite:
        raise ConfigError("run.output_dir", f"{run_dir} already holds a run ({', '.join(found)}): continue it with "
                                            "--resume auto, start over with --overwrite (deletes those outputs), "
                                            "or choose another run.output_dir")
    for name in found:
        p = Path(run_dir) / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return found


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop metrics.jsonl lines of steps after `step` (a resumed run rewrites them). Returns lines dropped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            s = json.loads(line).get("step", 0)
        except ValueError:
            dropped += 1
            continue
        if s <= step:
            keep.append(line)
        else:
            dropped += 1
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)
    return dropped
