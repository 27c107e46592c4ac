"""The preemption scenario every multi-process backend is tested with (imported by the backend tests).

``launch(out, steps, sleep=..., resume=...)`` starts a 2-rank run of tests/multiproc_driver.py and returns its
Popen. `stop_one_rank` lets it log two losses, sends SIGTERM to rank 1 only and checks that both ranks stopped
after the same step; `resume_and_reference` continues it with ``--resume auto`` and runs the same number of
steps uninterrupted, returning both runs' per-rank results."""
import json
import os
import signal
import time
from pathlib import Path


def results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("result_rank*.json"))]


def stop_one_rank(launch, run: Path, timeout: float) -> tuple[int, int]:
    """(step both ranks stopped after, the launcher's exit status)."""
    proc = launch(run, steps=60, sleep=0.15)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count('"loss"') >= 2):
        time.sleep(0.2)
    os.kill(int((run / "pid_rank1").read_text()), signal.SIGTERM)       # only rank 1 gets the signal
    _, err = proc.communicate(timeout=timeout)
    rows = results(run)
    assert [r["rank"] for r in rows] == [0, 1], err[-3000:]
    stopped = rows[0]["preempted"]
    assert stopped and rows[1]["preempted"] == stopped, rows
    assert (run / "checkpoints" / f"step_{stopped:06d}" / "state.json").is_file()
    return stopped, proc.returncode


def resume_and_reference(launch, run: Path, ref: Path, stopped: int, timeout: float) -> tuple[list, list]:
    """Per-rank results of the resumed run and of an uninterrupted reference run of the same length."""
    for f in run.glob("result_rank*.json"):
        f.unlink()
    final = stopped + 2
    resumed = launch(run, steps=final, resume="auto")
    _, err = resumed.communicate(timeout=timeout)
    assert resumed.returncode == 0, err[-3000:]
    reference = launch(ref, steps=final)
    _, err = reference.communicate(timeout=timeout)
    assert reference.returncode == 0, err[-3000:]
    got, want = results(run), results(ref)
    assert got[0]["losses"] == want[0]["losses"][stopped:]
    return got, want
