"""Preemption: clusters send a signal shortly before they kill a job (SIGTERM; SLURM can also send
SIGUSR1 with ``--signal=USR1@90``). While a run trains, those signals only raise a flag; after the
current optimizer step every rank checks the flags of all ranks (one all-reduce), all of them write
the checkpoint of that step together, and the run exits with PREEMPTED_EXIT_CODE. ``--resume auto``
then continues bit-exactly. Signals received outside the training loop behave as usual.
"""
from __future__ import annotations

import signal

PREEMPTED_EXIT_CODE = 75          # EX_TEMPFAIL: "try again" — the job can be requeued and resumed


class Preempted(RuntimeError):
    """Raised after the checkpoint of `step` was written because a preemption signal arrived."""

    def __init__(self, step: int, signame: str, checkpoint):
        self.step, self.signame, self.checkpoint = step, signame, checkpoint
        super().__init__(f"{signame} received: stopped after step {step} with checkpoint {checkpoint}; "
                         f"continue with --resume auto (exit code {PREEMPTED_EXIT_CODE})")


class PreemptionFlag:
    """Context manager: installs handlers for `signals` (names like "SIGTERM") that set `.received`."""

    def __init__(self, signals: list[str]):
        self.signals = [getattr(signal, name) for name in signals]
        self.received: str | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> "PreemptionFlag":
        for sig in self.signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:          # not the main thread (e.g. a test harness): signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
