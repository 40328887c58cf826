"""Training sandboxes started before their job, so that the next experiment skips start-up.

A training run spends about two seconds of CPU before the candidate's code loads: the
jail, the interpreter, and the imports of torch, torch.export and the training code. The
Engineer starts a standby under an experiment's limits when that experiment's training
heartbeat says its last step is done (exporting, single-threaded, then leaves a core
idle), or else when its training sandbox has ended (`NextStart`). A standby
is a sandboxed run of a `standby` job (loop.worker.standby_job) that does those imports
and then waits for a job file in a hand-in folder that only the Engineer writes, shown
read-only in its jail. The next experiment with the same limits takes it
(`Standbys.take`) and hands its training job in with one rename (`Standby.run`). From
then on the run is that experiment's training run, with the isolation, limits and
results of a fresh one; its workspace is the standby's.

A standby serves one job. One that has waited longer than `MAX_IDLE_S` is not taken (its
wall-clock limit, extended by the wait as the evaluator's head start's is, would no
longer be the job's own): it is stopped. The runner itself gives up after `WAIT_S`, well
after the last moment it can be taken. `Standbys.close` stops the idle ones; the campaign
runner calls it when its run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from loop.head_start import HeadStart
from loop.sandbox import Limits, SandboxOutcome
from loop.worker import JOB_FILE, STANDBY_IDLE, standby_job

MAX_IDLE_S = 40.0  # a standby that has waited longer is not taken
WAIT_S = 90.0  # how long the runner waits for its job after its imports


class Standby:
    """One started training sandbox waiting for its job; see the module docstring."""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        self.limits = limits  # the job's limits: the hand-in folder is added below
        self.workspace = root / "train"
        self._handin = root / "handin"
        self._handin.mkdir(mode=0o755, parents=True)
        shown = replace(limits, readable_paths=(*limits.readable_paths, self._handin))
        spec = standby_job(self._handin / JOB_FILE, WAIT_S)
        self._run = HeadStart(spec, self.workspace, shown)
        self.waited_s = 0.0  # how long it had waited when its job came

    def start(self) -> None:
        self._run.start()

    def usable(self) -> bool:
        started = self._run.started_at
        return (
            started is not None
            and self._run.usable()
            and time.perf_counter() - started <= MAX_IDLE_S
        )

    def run(self, job: Mapping[str, Any], cancel: threading.Event | None) -> SandboxOutcome | None:
        """Hand `job` in and wait for the run to end; None when the runner had given up
        waiting before it came (the caller then runs the job in a fresh sandbox)."""
        assert self._run.started_at is not None
        part = self._handin / f"{JOB_FILE}.part"
        part.write_text(json.dumps(dict(job)), encoding="utf-8")
        part.chmod(0o644)
        os.rename(part, self._handin / JOB_FILE)
        self.waited_s = time.perf_counter() - self._run.started_at
        outcome = self._run.result(cancel)
        if outcome.message == STANDBY_IDLE and not (outcome.result or {}).get("payload"):
            return None
        return outcome

    def stop(self) -> None:
        self._run.stop()


class NextStart:
    """Starts one standby for the next experiment, once: when training's heartbeat says
    its last step is done (`now`, from the Engineer's watch), so that its imports take the
    core that exporting, single-threaded, leaves idle; else when the training run has
    ended. `cancel` settles it without a start (a run stopped or failed)."""

    def __init__(self, standbys: Standbys, limits: Limits, cap: Callable[[], int]) -> None:
        self._standbys = standbys
        self._limits = limits
        self._cap = cap
        self._lock = threading.Lock()
        self._settled = False

    def now(self) -> None:
        if self._settle():
            self._standbys.start(self._limits, self._cap())

    def cancel(self) -> None:
        self._settle()

    def _settle(self) -> bool:
        """Whether this call is the first to settle it."""
        with self._lock:
            first, self._settled = not self._settled, True
            return first


class Standbys:
    """The idle standbys of one Engineer, at most `cap` at a time (`start`'s argument)."""

    def __init__(self, root: Path, keep: bool = False) -> None:
        self._root = root
        self._keep = keep
        self._idle: list[Standby] = []
        self._lock = threading.Lock()

    def start(self, limits: Limits, cap: int) -> None:
        """Start a standby under `limits` unless `cap` idle ones are already waiting."""
        with self._lock:
            stale = self._stale()
            if len(self._idle) < cap:
                standby = Standby(self._root / f".standby-{uuid.uuid4().hex[:12]}", limits)
                standby.start()  # under the lock: a standby not yet started counts as stale
                self._idle.append(standby)
        self._discard(stale)

    def waiting(self, limits: Limits) -> bool:
        """Whether an idle standby started under `limits` waits (a hint: another
        experiment may take it first)."""
        with self._lock:
            return any(s.limits == limits and s.usable() for s in self._idle)

    def take(self, limits: Limits) -> Standby | None:
        """An idle standby started under `limits`, no longer idle; None when none waits."""
        with self._lock:
            stale = self._stale()
            found = next((s for s in self._idle if s.limits == limits), None)
            if found is not None:
                self._idle.remove(found)
        self._discard(stale)
        return found

    def close(self) -> None:
        """Stop every idle standby."""
        with self._lock:
            idle, self._idle = self._idle, []
        self._discard(idle)

    def remove(self, standby: Standby) -> None:
        """Remove a used standby's folder (kept with `keep`)."""
        if not self._keep:
            shutil.rmtree(standby.root, ignore_errors=True)

    def _stale(self) -> list[Standby]:
        stale = [s for s in self._idle if not s.usable()]
        self._idle = [s for s in self._idle if s not in stale]
        return stale

    def _discard(self, standbys: list[Standby]) -> None:
        for standby in standbys:
            standby.stop()
            shutil.rmtree(standby.root, ignore_errors=True)
