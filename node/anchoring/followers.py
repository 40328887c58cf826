"""The anchor publishers beside a running campaign: fed from the log, stepped in threads.

The log's stored checkpoints are each publisher's only input (`feed`), so a crash
between a checkpoint and its anchor loses nothing: the next run feeds it again. Each
target (the EVM chain, and the ICP anchor canister when configured) has its own outbox
rows and its own thread, so a slow or unreachable one never holds the other back. At
the end of a run the last checkpoint is fed and every outbox drained for one shared,
bounded time; what does not confirm in that time stays queued for the next run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.anchoring.evm import StepReport, settled
from node.store import Outbox

log = logging.getLogger(__name__)

Checkpoints = Callable[[], Iterable[tuple[bytes, int, bytes]]]


class Publisher(Protocol):
    """An anchoring target: `node.anchoring.evm.AnchorPublisher` or
    `node.anchoring.icp.IcpPublisher`."""

    @property
    def outbox(self) -> Outbox: ...

    @property
    def label(self) -> str: ...

    def feed(self, checkpoints: Iterable[tuple[bytes, int, bytes]]) -> int: ...

    def step(self) -> StepReport: ...


@dataclass(frozen=True)
class AnchorSummary:
    """What one target's outbox holds after a run: counts by status, and where it went."""

    chain: str
    confirmed: int
    pending: int
    failed: int
    drained: bool


class AnchorRunner:
    """Feed `checkpoints()` to `publisher` (and each of `also`) and step every one of
    them every `poll_s`, each in its own thread."""

    def __init__(
        self,
        publisher: Publisher,
        checkpoints: Checkpoints,
        poll_s: float = 2.0,
        *,
        also: Sequence[Publisher] = (),
    ) -> None:
        self.publishers: list[Publisher] = [publisher, *also]
        self.checkpoints = checkpoints
        self.poll_s = poll_s
        self.summaries: list[AnchorSummary] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _loop(self, publisher: Publisher) -> None:
        while not self._stop.is_set():
            try:
                publisher.feed(self.checkpoints())
                publisher.step()
            except Exception:  # the campaign must not die with its anchor thread
                log.exception(
                    "anchor publisher step failed; retrying next poll",
                    extra={"target": publisher.outbox.target},
                )
            self._stop.wait(self.poll_s)

    def start(self) -> None:
        for publisher in self.publishers:
            name = f"anchor-publisher-{publisher.outbox.target}"
            thread = threading.Thread(target=self._loop, args=(publisher,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def finish(self, timeout_s: float = 60.0) -> AnchorSummary:
        """Stop the threads, feed the last checkpoints and drain every target for up to
        `timeout_s` in all. Returns the first target's summary; `summaries` has each."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        checkpoints = list(self.checkpoints())
        for publisher in self.publishers:
            publisher.feed(checkpoints)
        drained = drain_all(self.publishers, timeout_s, poll_s=0.1)
        self.summaries = [summarize(p.outbox, p.label, p in drained) for p in self.publishers]
        return self.summaries[0]


def drain_all(
    publishers: Sequence[Publisher], timeout_s: float, poll_s: float = 0.2
) -> list[Publisher]:
    """Step the unsettled publishers until all settle or `timeout_s` passes; returns the
    ones that settled. One that raises is logged and counts as not settled."""
    deadline = time.monotonic() + timeout_s
    busy = list(publishers)
    while True:
        for publisher in list(busy):
            try:
                publisher.step()
                if settled(publisher.outbox):
                    busy.remove(publisher)
            except Exception:
                log.exception(
                    "anchor publisher step failed while draining",
                    extra={"target": publisher.outbox.target},
                )
        if not busy or time.monotonic() >= deadline:
            return [p for p in publishers if p not in busy]
        time.sleep(poll_s)


def summarize(outbox: Outbox, chain: str, drained: bool) -> AnchorSummary:
    rows = outbox.rows()
    return AnchorSummary(
        chain=chain,
        confirmed=sum(r.status == "confirmed" for r in rows),
        pending=sum(r.status in ("pending", "sent") for r in rows),
        failed=sum(r.status == "failed" for r in rows),
        drained=drained,
    )
