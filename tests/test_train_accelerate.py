"""2-process training under `accelerate launch` with the shipped CPU config (it really starts 2 processes,
through torchrun), and preemption across ranks: SIGTERM to ONE rank makes both write the checkpoint of the
same step and exit with the preemption code; the resumed run continues bit-exactly."""
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from preemption_check import resume_and_reference, stop_one_rank

from tdd_video.engine.preempt import PREEMPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "accelerate" / "ddp_2proc_cpu.yaml"


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, steps: int, sleep: float = 0.0, resume: str | None = None) -> subprocess.Popen:
    launcher = shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate launcher not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [launcher, "launch", "--config_file", str(CONFIG), "--main_process_port", str(_port()),
           str(ROOT / "tests" / "multiproc_driver.py"), "--backend", "accelerate", "--out", str(out), "--steps",
           str(steps), "--sleep", str(sleep), "--grad-accum", "1", "--precision", "no", "--checkpoint-every", "100"]
    cmd += ["--resume", resume] if resume else []
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_and_preemption_of_one_rank(tmp_path):
    run = tmp_path / "p"
    stopped, _ = stop_one_rank(_launch, run, timeout=240)
    assert json.loads((run / "checkpoints" / f"step_{stopped:06d}" / "state.json").read_text())["world_size"] == 2
    got, want = resume_and_reference(_launch, run, tmp_path / "ref", stopped, timeout=300)
    assert all(r["world_size"] == 2 and r["backend"] == "accelerate" for r in got + want)
    assert PREEMPTED_EXIT_CODE == 75


def test_accelerate_backend_without_a_launcher_is_one_clear_error(tmp_path):
    """train.backend=accelerate in a process nobody launched: one `error:` line naming train.backend and the
    launch commands, exit 2, and no run directory is created."""
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    out = subprocess.run([sys.executable, str(ROOT / "train/distill_svd.py"), "--config",
                          str(ROOT / "configs/toy/tdd_svd_tiny.yaml"), "train.backend=accelerate",
                          f"run.output_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"})
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1 and "Traceback" not in out.stderr, out.stderr
    assert err[0].startswith("error: config key 'train.backend'") and "accelerate launch" in err[0]
    assert not (tmp_path / "run").exists()
