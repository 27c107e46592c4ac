"""Several machines, simulated on this host: 2 "nodes" x 1 process joined by a REAL multi-node rendezvous give
exactly the training of 2 processes on one node (same losses on every rank, same checkpoint, bit for bit).

* accelerate: two separate `torchrun --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d ...` (one per node; c10d
  numbers the nodes itself) against one `torchrun --nproc_per_node 2`; then SIGTERM to one node's torchrun, and
  `--resume auto` on 2 nodes ends with the checkpoint of the uninterrupted run.
* deepspeed: the DeepSpeed launcher with a hostfile of two hosts, started on each "node" as pdsh would start it
  (`deepspeed --hostfile H --no_ssh --node_rank R --master_addr ... --master_port ...`, static rendezvous) against
  one `torchrun --nproc_per_node 2` with the deepspeed backend (ZeRO-2).
* the shipped hostfile example parses with DeepSpeed's own parser; the SLURM script's control flow (rendezvous
  address, torchrun command, requeue after a preemption, no requeue without progress) runs against stand-in
  `srun` / `scontrol` / `torchrun` commands.
"""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "multiproc_driver.py"
MULTINODE = ROOT / "configs" / "multinode"
TRAIN_ARGS = ["--steps", "3", "--grad-accum", "2", "--precision", "no", "--checkpoint-every", "2"]
TIMEOUT = 150


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _run_all(cmds: list[list[str]], logs: Path, env: dict) -> list[int]:
    """Start every command at once (each in its own process group), wait for all; kill all on the timeout."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, cmd in enumerate(cmds):
        with open(logs / f"launcher{i}.log", "w") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                          start_new_session=True))
    deadline = time.time() + TIMEOUT
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [p.returncode for p in procs]


def _log_tail(logs: Path) -> str:
    return "\n".join(f"--- {f.name}\n{f.read_text()[-2500:]}" for f in sorted(logs.glob("*.log")))


def _results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("result_rank*.json"))]


def _flat(x, pre=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _flat(v, f"{pre}/{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _flat(v, f"{pre}[{i}]")
    else:
        yield pre, x


def _same(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if hasattr(a, "__dict__") and type(a) is type(b) and not isinstance(a, type):
        return vars(a) == vars(b)         # e.g. DeepSpeed's loss scaler: an object without __eq__
    try:
        return bool(a == b)
    except (RuntimeError, ValueError):
        return repr(a) == repr(b)


def _checkpoint_differences(a: Path, b: Path) -> list[str]:
    """Every file of two checkpoint trees: the same names; .pt files the same tensors (bitwise) and values."""
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    if files_a != files_b:
        return [f"files differ: {files_a} vs {files_b}"]
    diffs = []
    for rel in files_a:
        if rel.endswith(".pt"):
            x = dict(_flat(torch.load(a / rel, map_location="cpu", weights_only=False)))
            y = dict(_flat(torch.load(b / rel, map_location="cpu", weights_only=False)))
            if x.keys() != y.keys():
                diffs.append(f"{rel}: keys {sorted(set(x) ^ set(y))}")
            diffs += [f"{rel}: {k}" for k in x.keys() & y.keys() if not _same(x[k], y[k])]
        elif rel.endswith(".json"):
            if json.loads((a / rel).read_text()) != json.loads((b / rel).read_text()):
                diffs.append(rel)
        elif (a / rel).read_bytes() != (b / rel).read_bytes():
            diffs.append(rel)
    return diffs


def _assert_identical(multi: Path, single: Path, backend: str, zero_shards: bool = False) -> None:
    got, want = _results(multi), _results(single)
    assert [r["rank"] for r in got] == [0, 1] and [r["rank"] for r in want] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == backend for r in got + want), (got, want)
    assert got[0]["losses"] == got[1]["losses"] and len(got[0]["losses"]) == 3
    assert got == want                                   # losses per step on both ranks, optimizer state sizes
    ckpts = sorted(p.name for p in (multi / "checkpoints").iterdir())
    assert ckpts == ["step_000002", "step_000003"]
    for name in ckpts:
        state = json.loads((multi / "checkpoints" / name / "state.json").read_text())
        assert state["world_size"] == 2 and state["step"] == int(name[5:])
    if zero_shards:
        shards = sorted((multi / "checkpoints" / "step_000003" / "deepspeed").glob("*optim_states.pt"))
        assert [s.name.split("_mp_")[0] for s in shards] == ["zero_pp_rank_0", "zero_pp_rank_1"]
    assert _checkpoint_differences(multi / "checkpoints", single / "checkpoints") == []


def _one_node(out: Path, driver_args: list[str]) -> list[str]:
    return _torchrun() + ["--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                          str(_port()), str(DRIVER), "--out", str(out), *driver_args, *TRAIN_ARGS]


def _c10d_node(out: Path, endpoint: str, job: str, *extra: str) -> list[str]:
    """The command every "machine" runs (the same on all of them): c10d numbers the nodes itself."""
    return _torchrun() + ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint",
                          endpoint, "--rdzv_id", job, "--rdzv_conf", "join_timeout=90", str(DRIVER), "--out", str(out),
                          "--backend", "accelerate", *TRAIN_ARGS, *extra]


@pytest.fixture(scope="module")
def accelerate_one_node(tmp_path_factory) -> Path:
    """The reference: the same training as 2 processes of one `torchrun --nproc_per_node 2`."""
    out = tmp_path_factory.mktemp("accelerate_one_node")
    rcs = _run_all([_one_node(out / "run", ["--backend", "accelerate"])], out / "logs", _env())
    assert rcs == [0], _log_tail(out / "logs")
    return out / "run"


@pytest.mark.slow
@pytest.mark.timeout(2 * TIMEOUT + 60)
def test_two_nodes_c10d_rendezvous_equal_one_node_accelerate(tmp_path, accelerate_one_node):
    node = _c10d_node(tmp_path / "multi", f"127.0.0.1:{_port()}", f"tdd-mn-{os.getpid()}")
    rcs = _run_all([node, node], tmp_path / "logs", _env())        # the same command on both "machines"
    assert rcs == [0, 0], _log_tail(tmp_path / "logs")
    _assert_identical(tmp_path / "multi", accelerate_one_node, "accelerate")


@pytest.mark.slow
@pytest.mark.timeout(3 * TIMEOUT)
def test_two_nodes_preempted_on_one_node_resume_bit_exactly(tmp_path, accelerate_one_node):
    """What a SLURM preemption does: SIGTERM reaches ONE machine's torchrun; it forwards the signal to its process,
    both machines write the checkpoint of the same step, the processes exit 75 (torchrun reports 1); the job started
    again with --resume auto on 2 machines ends exactly where the uninterrupted run ends."""
    run, endpoint = tmp_path / "multi", f"127.0.0.1:{_port()}"
    node = _c10d_node(run, endpoint, f"tdd-mn-pre-{os.getpid()}", "--sleep", "0.75")
    logs = [open(tmp_path / f"node{i}.log", "w") for i in (0, 1)]
    procs = [subprocess.Popen(node, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT, start_new_session=True)
             for log in logs]
    try:
        metrics, deadline = run / "metrics.jsonl", time.time() + TIMEOUT
        while time.time() < deadline and not (metrics.is_file() and '"loss"' in metrics.read_text()):
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGTERM)                  # only the second machine's torchrun is signalled
        rcs = [p.wait(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in logs:
            log.close()
    rows = _results(run)
    assert [r.get("preempted") for r in rows] == [2, 2], _log_tail(tmp_path)   # stopped after step 2, both ranks
    assert all(rc != 0 for rc in rcs)
    assert not (run / ".lock").exists()
    for f in run.glob("result_rank*.json"):
        f.unlink()
    node = _c10d_node(run, f"127.0.0.1:{_port()}", f"tdd-mn-res-{os.getpid()}", "--resume", "auto")
    rcs = _run_all([node, node], tmp_path / "logs_resumed", _env())
    assert rcs == [0, 0], _log_tail(tmp_path / "logs_resumed")
    got, want = _results(run), _results(accelerate_one_node)
    assert [r["losses"] for r in got] == [w["losses"][2:] for w in want] and all(r["world_size"] == 2 for r in got)
    assert _checkpoint_differences(run / "checkpoints", accelerate_one_node / "checkpoints") == []


@pytest.mark.slow
@pytest.mark.timeout(2 * TIMEOUT + 60)
def test_two_nodes_deepspeed_hostfile_equal_one_node(tmp_path):
    pytest.importorskip("deepspeed")
    launcher = shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("deepspeed launcher not on PATH")
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two machines, one process each\nnode-a slots=1\nnode-b slots=1\n")
    port = _port()
    driver = ["--backend", "deepspeed", "--ds", str(ROOT / "configs" / "deepspeed" / "zero2.json")]
    nodes = [[launcher, "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(r), "--master_addr", "127.0.0.1",
              "--master_port", str(port), str(DRIVER), "--out", str(tmp_path / "multi"), *driver, *TRAIN_ARGS]
             for r in (0, 1)]
    env = _env(DS_ACCELERATOR="cpu")
    rcs = _run_all(nodes, tmp_path / "logs_multi", env)
    assert rcs == [0, 0], _log_tail(tmp_path / "logs_multi")
    launched = (tmp_path / "logs_multi" / "launcher1.log").read_text()
    assert "nnodes=2, num_local_procs=1, node_rank=1" in launched, launched[-3000:]
    rcs = _run_all([_one_node(tmp_path / "single", driver)], tmp_path / "logs_single", env)
    assert rcs == [0], _log_tail(tmp_path / "logs_single")
    _assert_identical(tmp_path / "multi", tmp_path / "single", "deepspeed", zero_shards=True)


def test_hostfile_example_parses_with_deepspeed():
    runner = pytest.importorskip("deepspeed.launcher.runner")
    pool = runner.fetch_hostfile(str(MULTINODE / "hostfile.example"))
    assert dict(pool) == {"worker-1": 8, "worker-2": 8}


FAKE_SCONTROL = """#!/bin/sh
case "$1" in
  show) printf 'gpu-node-17\\ngpu-node-18\\n' ;;
  requeue) echo "$2" >> "$FAKE_LOG/requeued" ;;
esac
"""
FAKE_SRUN = """#!/bin/sh
echo "$@" > "$FAKE_LOG/srun"
echo "$MASTER_ADDR:$MASTER_PORT" > "$FAKE_LOG/master"
while [ "${1#-}" != "$1" ]; do shift; done
exec "$@"
"""
FAKE_TORCHRUN = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_LOG/torchrun"
if [ -n "$FAKE_STEP" ]; then
  d="$RUN_DIR/checkpoints/step_$(printf %06d "$FAKE_STEP")"; mkdir -p "$d"; echo '{}' > "$d/state.json"
fi
exit "$FAKE_RC"
"""


def _sbatch(tmp_path, *, rc: int, step: int | None, restart: int = 0, extra=()) -> tuple[int, str, Path]:
    """The SLURM script with stand-in srun / scontrol / torchrun: what it launches and what it decides."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir(exist_ok=True)
    shutil.rmtree(log, ignore_errors=True)
    log.mkdir()
    for name, text in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN), ("torchrun", FAKE_TORCHRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log),
           "FAKE_RC": str(rc), "FAKE_STEP": "" if step is None else str(step), "RUN_DIR": str(tmp_path / "run"),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-node-[17-18]", "SLURM_NNODES": "2",
           "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_RESTART_COUNT": str(restart), "SLURM_CPUS_PER_TASK": "64"}
    p = subprocess.run(["bash", str(MULTINODE / "slurm_tdd_svd.sbatch"), *extra], env=env, capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr, log


def test_slurm_script_launch_and_requeue(tmp_path):
    assert subprocess.run(["bash", "-n", str(MULTINODE / "slurm_tdd_svd.sbatch")]).returncode == 0
    # preempted: the trainer wrote the checkpoint of step 120 and exited 75 (torchrun reports 1) -> requeue
    rc, out, log = _sbatch(tmp_path, rc=1, step=120, extra=["train.lr=1e-5"])
    assert rc == 0 and (log / "requeued").read_text().split() == ["4242"], out
    assert (log / "master").read_text().strip() == f"gpu-node-17:{29500 + 4242 % 1000}"
    assert "--kill-on-bad-exit=1 --ntasks-per-node=1 --cpus-per-task=64" in (log / "srun").read_text()
    argv = (log / "torchrun").read_text().splitlines()
    joined = " ".join(argv)
    for part in ("--nnodes 2 --nproc_per_node gpu --rdzv_backend c10d --rdzv_endpoint gpu-node-17:",
                 "--rdzv_id 4242", "--signals-to-handle SIGTERM,SIGINT,SIGUSR1",
                 "train/distill_svd.py --config configs/svd/tdd_svd_xt_1_1.yaml --resume auto",
                 f"run.output_dir={tmp_path / 'run'} train.backend=deepspeed",
                 "train.preempt_signals=[SIGTERM,SIGUSR1] train.deepspeed_config=configs/deepspeed/zero2.json "
                 "train.lr=1e-5"):
        assert part in joined, joined
    # requeued start: the lock a killed attempt left behind is removed; it fails without a new checkpoint
    (tmp_path / "run" / ".lock").write_text('{"pid": 1, "host": "gpu-node-18"}')
    rc, out, log = _sbatch(tmp_path, rc=1, step=None, restart=1)
    assert rc == 1 and not (log / "requeued").exists() and "not requeued" in out, out
    assert not (tmp_path / "run" / ".lock").exists()
    # the last attempt finishes
    rc, out, log = _sbatch(tmp_path, rc=0, step=200, restart=2)
    assert rc == 0 and not (log / "requeued").exists() and "finished (checkpoint step 200)" in out, out
