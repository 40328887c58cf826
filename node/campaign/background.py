"""The Researcher's and the Analyst's LLM calls, made off the scheduler's thread.

The scheduler thread reads what a call needs from the store and submits it here; a pool
thread makes the call (through the run's `CallScope`, so a stop can cancel it) and hands
back the value in its future; the scheduler thread collects the futures that are done
and records them. Nothing here touches the store.

How many proposals to keep coming follows Little's law: the workers use one proposal per
experiment, so `workers * call_s / experiment_s` Researcher calls must be in flight to
keep up, plus one ready proposal per worker for the moments when several finish at once.
Both durations are measured as the run goes (`Pace`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

PACE_WEIGHT = 0.3  # of the newest sample in the running means


@dataclass(frozen=True)
class Timings:
    call_s: float | None  # a Researcher call, from asking to a usable reply (send-backs in)
    experiment_s: float | None  # an experiment on a worker


class Pace:
    """Running means of how long a Researcher call and an experiment take; thread-safe."""

    def __init__(self) -> None:
        self._call_s: float | None = None
        self._experiment_s: float | None = None
        self._lock = threading.Lock()

    def note_call(self, seconds: float) -> None:
        with self._lock:
            self._call_s = _mean(self._call_s, seconds)

    def note_experiment(self, seconds: float) -> None:
        with self._lock:
            self._experiment_s = _mean(self._experiment_s, seconds)

    @property
    def timings(self) -> Timings:
        with self._lock:
            return Timings(self._call_s, self._experiment_s)


def _mean(old: float | None, new: float) -> float:
    return new if old is None else (1 - PACE_WEIGHT) * old + PACE_WEIGHT * new


def proposals_wanted(
    workers: int, idle: int, timings: Timings, parallel: int, ahead: int | None = None
) -> int:
    """Proposals to have coming, ready in the queue or asked for: one per idle worker at
    least; `ahead` when given; else one ready per worker plus the Researcher calls that
    keep up with the workers (as long as an experiment until both were measured), at most
    `parallel` of them."""
    if ahead is not None:
        return max(ahead, idle)
    t = timings
    ratio = 1.0 if t.call_s is None or t.experiment_s is None else t.call_s / t.experiment_s
    return max(idle, workers + min(parallel, math.ceil(workers * ratio)))


class Calls(Generic[K, V]):
    """One agent's calls in flight: a pool of threads, each future with its key."""

    def __init__(self, threads: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._futures: dict[Future[V], K] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def submit(self, key: K, fn: Callable[[], V]) -> Future[V]:
        future = self._pool.submit(fn)
        self._futures[future] = key
        return future

    def __contains__(self, key: object) -> bool:
        return key in self._futures.values()

    def futures(self) -> set[Future[V]]:
        return set(self._futures)

    def done(self) -> list[tuple[K, V | None]]:
        """The calls that ended, taken out: their values, None for a cancelled one. A call
        that raised re-raises here, on the scheduler's thread (a broken invariant)."""
        out: list[tuple[K, V | None]] = []
        for future in [f for f in self._futures if f.done()]:
            key = self._futures.pop(future)
            out.append((key, None if future.cancelled() else future.result()))
        return out

    def shutdown(self) -> None:
        """Drop the calls not started and join the threads (cancel the scope first)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def timed(pace: Pace, fn: Callable[[], V], keep: Callable[[V], bool]) -> Callable[[], V]:
    """`fn`, its duration noted as a Researcher call's when `keep` says it counts."""

    def run() -> V:
        started = time.monotonic()
        value = fn()
        if keep(value):
            pace.note_call(time.monotonic() - started)
        return value

    return run
