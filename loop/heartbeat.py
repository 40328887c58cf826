"""Training progress while a sandbox runs: the loop writes a heartbeat, the Engineer reads it.

The training loop (inside the sandbox, beside the candidate's code) replaces
`heartbeat.json` in its workspace at most every `BEAT_INTERVAL_S`: step, total steps,
the step's loss, tokens per second and elapsed seconds. The file is candidate-side text:
`read_progress` opens only a plain file, reads at most `MAX_HEARTBEAT_BYTES`, and keeps
finite numbers in range; anything else reads as no progress. `watch` polls it from a
thread of the Engineer's while the sandbox runs and hands each new reading on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

HEARTBEAT_FILE = "heartbeat.json"
MAX_HEARTBEAT_BYTES = 1024
BEAT_INTERVAL_S = 2.0
POLL_INTERVAL_S = 1.0  # the Engineer starts the next standby from the last step's beat
MAX_STEPS = 10**9


@dataclass(frozen=True)
class Progress:
    """One heartbeat: `step` of `steps` done, the loss at that step (None when it was not
    finite), input tokens per second so far, and the seconds training has run."""

    step: int
    steps: int
    loss: float | None
    tok_s: float
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        """Seconds to the last step at the pace so far; None before the first step."""
        if self.step <= 0:
            return None
        return self.elapsed_s * (self.steps - self.step) / self.step


OnProgress = Callable[[Progress], None]


class Heartbeat:
    """Writes `Progress` to `path` (atomically) at most every `interval_s`; never raises
    for a write that fails (a full workspace must not stop training)."""

    def __init__(
        self,
        path: Path,
        interval_s: float = BEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self.clock = clock
        self._last: float | None = None

    def beat(self, step: int, steps: int, loss: float, tokens_seen: int, elapsed_s: float) -> None:
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s and step < steps:
            return
        self._last = now
        body = {
            "step": step,
            "steps": steps,
            "loss": loss if math.isfinite(loss) else None,
            "tok_s": tokens_seen / elapsed_s if elapsed_s > 0 else 0.0,
            "elapsed_s": elapsed_s,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(body), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.debug("heartbeat not written", extra={"error": str(exc)})


def read_progress(path: Path) -> Progress | None:
    """The heartbeat at `path`, or None when there is none or it is not well formed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = os.read(fd, MAX_HEARTBEAT_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) > MAX_HEARTBEAT_BYTES:
        return None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return parse_progress(body)


def parse_progress(body: object) -> Progress | None:
    """`body` as Progress when every field is a finite number in range, else None."""
    if not isinstance(body, dict):
        return None
    step, steps = _integer(body.get("step")), _integer(body.get("steps"))
    tok_s, elapsed = _number(body.get("tok_s")), _number(body.get("elapsed_s"))
    loss = _number(body.get("loss"))
    if step is None or steps is None or tok_s is None or elapsed is None:
        return None
    if loss is None and body.get("loss") is not None:
        return None
    if not (0 <= step <= steps <= MAX_STEPS) or steps < 1 or tok_s < 0 or elapsed < 0:
        return None
    return Progress(step=step, steps=steps, loss=loss, tok_s=tok_s, elapsed_s=elapsed)


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    """A finite int or float as a float; None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@contextlib.contextmanager
def watch(
    path: Path, on_progress: OnProgress | None, interval_s: float | None = None
) -> Iterator[None]:
    """While the block runs, read `path` every `interval_s` (default `POLL_INTERVAL_S`)
    and pass each new reading to `on_progress` (from a thread of its own); nothing at all
    when `on_progress` is None."""
    if on_progress is None:
        yield
        return
    interval_s = POLL_INTERVAL_S if interval_s is None else interval_s
    done = threading.Event()

    def poll() -> None:
        last: Progress | None = None
        while not done.wait(interval_s):
            now = read_progress(path)
            if now is None or now == last:
                continue
            last = now
            try:
                on_progress(now)
            except Exception:  # a display's fault must not end the watch, nor the run
                logger.exception("progress callback failed", extra={"path": str(path)})

    thread = threading.Thread(target=poll, name="heartbeat-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
