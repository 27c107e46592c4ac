"""Runs that cannot be corrupted: run-directory ownership, refusing to mix runs, keep_last, finished runs,
exact logs and counters on resume, and preemption by a real signal."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from standin_family import ToyFamily
from test_engine_train import IndexLoader, _cfg

from tdd_video.engine.checkpoint import list_checkpoints
from tdd_video.engine.rundir import RunLock
from tdd_video.engine.trainer import train
from tdd_video.errors import ConfigError

TESTS = Path(__file__).resolve().parent


def _run(tmp_path, name, **kw):
    resume = kw.pop("resume", None)
    overwrite = kw.pop("overwrite", False)
    cfg = _cfg(tmp_path, name, **kw)
    cfg.run.resume, cfg.run.overwrite = resume, overwrite
    return train(cfg, family=ToyFamily("edm"), loader=IndexLoader())


def _steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line]


def test_a_live_lock_refuses_a_second_run_and_a_dead_one_is_taken_over(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    import socket
    (run / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "x"}))
    with pytest.raises(ConfigError, match="in use by another run"):
        _run(tmp_path, "r", max_steps=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    out = _run(tmp_path, "r", max_steps=1)
    assert any("took over" in n for n in out["notes"]) and not (run / ".lock").exists()
    (run / ".lock").write_text(json.dumps({"pid": 1, "host": "another-host", "started": "x"}))
    with pytest.raises(ConfigError, match="another-host"):
        _run(tmp_path, "r", max_steps=2, resume="auto")


def test_lock_is_exclusive_inside_one_process(tmp_path):
    with RunLock(tmp_path / "x"):
        with pytest.raises(ConfigError, match="already locked by this process"):
            with RunLock(tmp_path / "x"):
                pass
    assert not (tmp_path / "x" / ".lock").exists()


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    _run(tmp_path, "r", max_steps=2)
    with pytest.raises(ConfigError, match="already holds a run"):
        _run(tmp_path, "r", max_steps=4)
    out = _run(tmp_path, "r", max_steps=3, overwrite=True)
    assert _steps(tmp_path / "r") == [1, 2, 3] and any("--overwrite" in n for n in out["notes"])


def test_finished_run_is_left_untouched(tmp_path):
    _run(tmp_path, "r", max_steps=3)
    run = tmp_path / "r"
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    out = _run(tmp_path, "r", max_steps=3, resume="auto")
    assert out["already_finished"] and out["step"] == 3
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_keep_last_never_removes_the_checkpoint_just_written(tmp_path):
    _run(tmp_path, "r", max_steps=4, checkpoint_every=2, keep_last=5)
    ck = tmp_path / "r" / "checkpoints"
    import shutil
    shutil.copytree(ck / "step_000004", ck / "step_000010")          # a higher step left by another run
    _run(tmp_path, "r", max_steps=4, checkpoint_every=2, keep_last=1, resume=str(ck / "step_000002"))
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step_000004"]


class CrashLoader(IndexLoader):
    def __init__(self, crash_at, **kw):
        super().__init__(**kw)
        self.crash_at = crash_at

    def infinite(self):
        for batch in super().infinite():
            if self.pos - 1 == self.crash_at:
                raise KeyboardInterrupt("killed")
            yield batch


def test_resume_drops_the_metrics_after_the_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, "r", max_steps=6, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, family=ToyFamily("edm"), loader=CrashLoader(crash_at=5))
    assert _steps(tmp_path / "r") == [1, 2, 3, 4, 5]                 # step 5 logged, last checkpoint at 4
    full = _run(tmp_path, "full", max_steps=6, checkpoint_every=2)
    again = _run(tmp_path, "r", max_steps=6, checkpoint_every=2, resume="auto")
    assert _steps(tmp_path / "r") == [1, 2, 3, 4, 5, 6]
    assert again["losses"] == full["losses"][4:]


def test_loader_state_carries_the_data_counters():
    from tdd_video.data.sampler import ShardedBatchSampler, VideoLoader
    sampler = ShardedBatchSampler(8, batch_size=2, seed=0)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"x": torch.tensor(float(getattr(i, "index", i)))}

    def collate(items):
        return {"x": torch.stack([it["x"] for it in items])}

    loader = VideoLoader(DS(), sampler, collate)
    loader._worker_stats = {-1: {"attempts": 7, "skipped": 2}}
    state = json.loads(json.dumps(loader.state_dict()))             # what a checkpoint stores
    fresh = VideoLoader(DS(), ShardedBatchSampler(8, batch_size=2, seed=0), collate)
    fresh.load_state_dict(state)
    assert fresh.data_stats() == {"attempts": 7, "skipped": 2}


DRIVER = """
import sys, time, torch
sys.path.insert(0, {tests!r})
from standin_family import ToyFamily
from test_engine_train import IndexLoader, _cfg
from tdd_video.engine.preempt import PREEMPTED_EXIT_CODE, Preempted
from tdd_video.engine.trainer import train
import pathlib

class Slow(IndexLoader):
    def infinite(self):
        for b in super().infinite():
            time.sleep(0.1)
            yield b

cfg = _cfg(pathlib.Path({tmp!r}), {name!r}, max_steps={steps}, checkpoint_every=100, keep_last=3)
cfg.run.resume = {resume!r}
try:
    out = train(cfg, family=ToyFamily("edm"), loader=Slow())
    print("LOSSES", out["losses"])
except Preempted as e:
    print("PREEMPTED", e.step)
    sys.exit(PREEMPTED_EXIT_CODE)
"""


def _driver(tmp_path, name, steps, resume=None):
    code = DRIVER.format(tests=str(TESTS), tmp=str(tmp_path), name=name, steps=steps, resume=resume)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=TESTS.parent)


def test_sigterm_checkpoints_the_current_step_and_resume_is_exact(tmp_path):
    proc = _driver(tmp_path, "p", 40)
    metrics = tmp_path / "p" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count('"loss"') >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    stopped = int(out.split("PREEMPTED")[1].split()[0])
    assert 3 <= stopped < 40
    assert [p.name for p in list_checkpoints(tmp_path / "p")] == [f"step_{stopped:06d}"]
    final = stopped + 2
    resumed = _driver(tmp_path, "p", final, resume="auto")
    out_r, err_r = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err_r[-2000:]
    ref = _driver(tmp_path, "ref", final)
    out_ref, err_ref = ref.communicate(timeout=300)
    assert ref.returncode == 0, err_ref[-2000:]
    tail = eval(out_r.split("LOSSES")[1].strip())
    assert tail == eval(out_ref.split("LOSSES")[1].strip())[stopped:]
    assert _steps(tmp_path / "p") == list(range(1, final + 1))


def test_a_finished_run_whose_export_was_interrupted_is_exported_on_resume(tmp_path):
    _run(tmp_path, "r", max_steps=2)
    exp = tmp_path / "r" / "export"
    assert (exp / ".complete").is_file()
    (exp / ".complete").unlink()                       # as if killed after the last checkpoint, during export
    out = _run(tmp_path, "r", max_steps=2, resume="auto")
    assert not out["already_finished"] and out["steps"] == 0 and (exp / ".complete").is_file()
    again = _run(tmp_path, "r", max_steps=2, resume="auto")
    assert again["already_finished"]
