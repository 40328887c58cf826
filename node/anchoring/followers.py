"""The log's anchor followers: one thread per target, for as long as the node process runs.

The node owns one log and one follower per anchoring target (the EVM chain, and the ICP
anchor canister when configured), started with the process (`asi-node daemon`, `gov
run`, `campaign run`, the demo) and drained when it ends; campaign runs only append to
the log. A follower is the only one stepping its publisher, so a checkpoint is signed
and sent once however many campaigns the process runs. The log's stored checkpoints are
each publisher's only input (`feed`), so a crash between a checkpoint and its anchor
loses nothing: the next start feeds it again. Each target has its own outbox rows and
its own thread, so a slow or unreachable one never holds the other back. At the end the
last checkpoint is fed and every outbox drained for one shared, bounded time; what does
not confirm in that time stays queued for the next start.
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
from node.store.outbox import OutboxStatus

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


class AnchorFollowers:
    """Feed `checkpoints()` to each of `publishers` and step each one every `poll_s`,
    each in its own thread, from `start` until `drain`."""

    def __init__(
        self, publishers: Sequence[Publisher], checkpoints: Checkpoints, poll_s: float = 2.0
    ) -> None:
        if not publishers:
            raise ValueError("anchor followers need at least one publisher")
        self.publishers = list(publishers)
        self.checkpoints = checkpoints
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _loop(self, publisher: Publisher) -> None:
        while not self._stop.is_set():
            try:
                publisher.feed(self.checkpoints())
                publisher.step()
            except Exception:  # the node must not lose its follower to one bad step
                log.exception(
                    "anchor publisher step failed; retrying next poll",
                    extra={"target": publisher.outbox.target},
                )
            self._stop.wait(self.poll_s)

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("the anchor followers are already running")
        for publisher in self.publishers:
            name = f"anchor-follower-{publisher.outbox.target}"
            thread = threading.Thread(target=self._loop, args=(publisher,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def drain(self, timeout_s: float = 60.0) -> list[AnchorSummary]:
        """Stop the threads, feed the last checkpoints and drain every target for up to
        `timeout_s` in all; one summary per target, in the order of `publishers`."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        checkpoints = list(self.checkpoints())
        for publisher in self.publishers:
            publisher.feed(checkpoints)
        drained = drain_all(self.publishers, timeout_s, poll_s=0.1)
        return [summarize(p.outbox, p.label, p in drained) for p in self.publishers]


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
        confirmed=sum(r.status is OutboxStatus.CONFIRMED for r in rows),
        pending=sum(r.status in (OutboxStatus.PENDING, OutboxStatus.SENT) for r in rows),
        failed=sum(r.status is OutboxStatus.FAILED for r in rows),
        drained=drained,
    )
