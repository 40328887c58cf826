"""The evaluator's sandbox started while training ends, so its start-up costs no wall time.

Before it reads a byte of the artifact the evaluator spends seconds starting: the jail,
the interpreter, torch and torch.export's deserialiser (about 3 s of CPU on one core).
The Engineer starts it a little before training's last step, from the training
heartbeat's estimate (`due`), with a job that waits for the artifact folder to appear in
a hand-off folder only the Engineer writes. Once the training sandbox has ended and
copied its artifacts out, the Engineer moves them there with one rename (`hand_over`):
the evaluator sees all of them or none, after nothing of the candidate's runs any more.
When training fails the run is stopped. Isolation is unchanged: the evaluator is shown the
hand-off folder instead of the artifact folder itself, and nothing of the candidate's.

The heartbeat is the candidate's own text: an estimate that lies only starts the
evaluator early. A run that has waited longer than `MAX_WAIT_S` is not used (its
wall-clock limit would no longer be the evaluation's own); the Engineer stops it and
evaluates in a fresh sandbox.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from loop.heartbeat import Progress
from loop.sandbox import Limits, SandboxOutcome, run_sandboxed

LEAD_S = 12.0  # start when training's estimate says this many seconds are left
MAX_WAIT_S = 120.0  # the longest a started run may wait for its artifacts and still count
JOIN_POLL_S = 0.1


def due(progress: Progress) -> bool:
    """Whether training is close enough to its end to start the evaluator now."""
    eta = progress.eta_s
    return eta is not None and eta <= LEAD_S


def hand_over(artifacts: Path, target: Path) -> None:
    """Move the training sandbox's artifact folder to `target` in one rename; an empty
    folder when there is none (the evaluator then reports the missing manifest)."""
    if artifacts.is_dir() and not artifacts.is_symlink():
        os.rename(artifacts, target)
    else:
        target.mkdir(mode=0o755)


class HeadStart:
    """One sandboxed run of `job`, started at most once from any thread, waited for or
    stopped from the Engineer's; leaving its `with` block stops it. Its wall-clock limit
    is `limits.wall_s` plus MAX_WAIT_S, so a run handed its artifacts within MAX_WAIT_S
    has the whole limit to evaluate."""

    def __init__(self, job: Mapping[str, Any], workspace: Path, limits: Limits) -> None:
        self._job = job
        self._workspace = workspace
        self._limits = replace(limits, wall_s=limits.wall_s + MAX_WAIT_S)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._outcome: SandboxOutcome | None = None
        self._error: BaseException | None = None
        self.started_at: float | None = None  # time.perf_counter() at the start

    def __enter__(self) -> HeadStart:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self.started_at = time.perf_counter()
            self._thread = threading.Thread(target=self._run, name="eval-head-start", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome = run_sandboxed(self._job, self._workspace, self._limits, stop=self._stop)
        except BaseException as exc:  # handed to the waiting thread by `result`
            self._error = exc

    def usable(self) -> bool:
        """Started, still running (one that ended before its artifacts came evaluated
        nothing) and not waiting so long that its wall-clock limit is shortened."""
        if self.started_at is None or self._thread is None or not self._thread.is_alive():
            return False
        return time.perf_counter() - self.started_at <= MAX_WAIT_S

    def result(self, cancel: threading.Event | None) -> SandboxOutcome:
        """Wait for the run (stopped as INTERRUPTED when `cancel` is set); raises what
        `run_sandboxed` raised (SandboxError)."""
        if self._thread is None:
            raise RuntimeError("the head start was never started")
        while self._thread.is_alive():
            if cancel is not None and cancel.is_set():
                self._stop.set()
            self._thread.join(JOIN_POLL_S)
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome

    def stop(self) -> None:
        """Stop the run if it is going (or keep it from starting) and wait for its end."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join()
