"""2-process DeepSpeed ZeRO-2 smoke run on CPU (gloo, OMP_NUM_THREADS=1, torch AdamW so nothing
is compiled for the optimizer): the real engine and DeepSpeed backend on the stand-in family.
Slow-ish (≈ 30–60 s on 2 busy cores; the first run on a machine also builds DeepSpeed's shm comm op
once, cached in TORCH_EXTENSIONS_DIR) but still part of CI."""
import json
import math
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from preemption_check import resume_and_reference, stop_one_rank

ROOT = Path(__file__).resolve().parents[1]


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_rank_zero2_smoke(tmp_path):
    pytest.importorskip("deepspeed")
    launcher = shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("deepspeed launcher not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    port = _port()
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(port), str(ROOT / "tests" / "multiproc_driver.py"),
           "--out", str(tmp_path / "run"), "--ds", str(ROOT / "configs" / "deepspeed" / "zero2.json"), "--steps", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=580, env=env, cwd=ROOT)
    # DeepSpeed's CPU all-reduce segments of this job are unlinked (engine/distributed.py: release_shm_name)
    leftover = list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert not leftover, leftover
    rows = [json.loads(p.read_text()) for p in sorted((tmp_path / "run").glob("result_rank*.json"))]
    assert proc.returncode == 0 and len(rows) == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {r["rank"] for r in rows} == {0, 1} and all(r["world_size"] == 2 and r["backend"] == "deepspeed"
                                                       for r in rows)
    assert rows[0]["losses"] == rows[1]["losses"] and all(math.isfinite(v) for v in rows[0]["losses"])
    shards = sorted((tmp_path / "run" / "checkpoints" / "step_000002" / "deepspeed").glob("*optim_states.pt"))
    assert [s.name.split("_mp_")[0] for s in shards] == ["bf16_zero_pp_rank_0", "bf16_zero_pp_rank_1"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_rank_zero2_adversarial_tdd(tmp_path):
    """Adversarial TDD under ZeRO-2 on 2 ranks: LoRA student on the tiny SVD, discriminator heads kept identical
    across ranks (their gradients are averaged), same losses on both ranks."""
    pytest.importorskip("deepspeed")
    launcher = shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("deepspeed launcher not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(_port()), str(ROOT / "tests" / "multiproc_driver.py"),
           "--out", str(tmp_path / "run"), "--ds", str(ROOT / "configs" / "deepspeed" / "zero2.json"), "--steps", "2",
           "--family", "tiny-svd", "--kind", "lora", "--adv", "0.3", "--grad-accum", "1", "--precision", "no"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=580, env=env, cwd=ROOT)
    rows = [json.loads(p.read_text()) for p in sorted((tmp_path / "run").glob("result_rank*.json"))]
    assert proc.returncode == 0 and len(rows) == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert rows[0]["losses"] == rows[1]["losses"] and all(math.isfinite(v) for v in rows[0]["losses"])
    assert rows[0]["d_sum"] is not None and rows[0]["d_sum"] == rows[1]["d_sum"]
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "adv/d_loss" in metrics and "adv/g_loss" in metrics


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_rank_zero3_shards_the_teacher_copy(tmp_path):
    """A full fine-tune keeps a frozen teacher copy; under ZeRO-3 it is partitioned like the student (each rank
    holds half of it on 2 ranks, where ZeRO-2 keeps it whole) and the training losses are those of ZeRO-2."""
    pytest.importorskip("deepspeed")
    launcher = shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("deepspeed launcher not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    rows = {}
    for stage in ("zero2", "zero3"):
        cmd = [launcher, "--num_gpus", "2", "--master_port", str(_port()), str(ROOT / "tests" / "multiproc_driver.py"),
               "--out", str(tmp_path / stage), "--ds", str(ROOT / "configs" / "deepspeed" / f"{stage}.json"),
               "--steps", "2", "--kind", "full", "--grad-accum", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env, cwd=ROOT)
        rows[stage] = [json.loads(p.read_text()) for p in sorted((tmp_path / stage).glob("result_rank*.json"))]
        assert proc.returncode == 0 and len(rows[stage]) == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    whole = rows["zero2"][0]["weights_bytes_held"]
    assert whole["teacher"] == whole["student"] > 0                  # bf16 copies, both whole on every rank
    for r in rows["zero3"]:
        assert r["weights_bytes_held"] == {"student": whole["student"] // 2, "teacher": whole["teacher"] // 2}
        assert r["losses"] == rows["zero2"][0]["losses"] and all(math.isfinite(v) for v in r["losses"])


def _ds_launch(out: Path, steps: int, sleep: float = 0.0, resume: str | None = None) -> subprocess.Popen:
    launcher = shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("deepspeed launcher not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(_port()), str(ROOT / "tests" / "multiproc_driver.py"),
           "--out", str(out), "--ds", str(ROOT / "configs" / "deepspeed" / "zero2.json"), "--steps", str(steps),
           "--sleep", str(sleep), "--grad-accum", "1", "--checkpoint-every", "100"]
    cmd += ["--resume", resume] if resume else []
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_zero2_preemption_of_one_rank_by_a_real_signal(tmp_path):
    """SIGTERM to ONE DeepSpeed rank: both ranks stop after the same step, write that step's checkpoint (ZeRO
    shards included) and exit with the preemption code; `--resume auto` then continues bit-exactly."""
    pytest.importorskip("deepspeed")
    from tdd_video.engine.preempt import PREEMPTED_EXIT_CODE
    run = tmp_path / "p"
    stopped, returncode = stop_one_rank(_ds_launch, run, timeout=300)
    assert len(list((run / "checkpoints" / f"step_{stopped:06d}" / "deepspeed").glob("*optim_states.pt"))) == 2
    assert returncode != 0 and PREEMPTED_EXIT_CODE == 75
    resume_and_reference(_ds_launch, run, tmp_path / "ref", stopped, timeout=300)
