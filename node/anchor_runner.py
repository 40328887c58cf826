"""The anchor publisher beside a running campaign: fed from the log, stepped in a thread.

The log's stored checkpoints are the publisher's only input (`AnchorPublisher.feed`), so
a crash between a checkpoint and its anchor loses nothing: the next run feeds it again.
At the end of a run the last checkpoint is fed and the outbox drained for a bounded
time; what does not confirm in that time stays queued for the next run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from node.anchor import AnchorPublisher
from node.store import Outbox

log = logging.getLogger(__name__)

Checkpoints = Callable[[], Iterable[tuple[bytes, int, bytes]]]


@dataclass(frozen=True)
class AnchorSummary:
    """What the outbox holds after a run: counts by status, and the chain it went to."""

    chain: str
    confirmed: int
    pending: int
    failed: int
    drained: bool


class AnchorRunner:
    """Feed `checkpoints()` to `publisher` and step it every `poll_s` in a thread."""

    def __init__(
        self, publisher: AnchorPublisher, checkpoints: Checkpoints, poll_s: float = 2.0
    ) -> None:
        self.publisher = publisher
        self.checkpoints = checkpoints
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _once(self) -> None:
        self.publisher.feed(self.checkpoints())
        self.publisher.step()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._once()
            except Exception:  # the campaign must not die with its anchor thread
                log.exception("anchor publisher step failed; retrying next poll")
            self._stop.wait(self.poll_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="anchor-publisher", daemon=True)
        self._thread.start()

    def finish(self, timeout_s: float = 60.0) -> AnchorSummary:
        """Stop the thread, feed the last checkpoints and drain for up to `timeout_s`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.publisher.feed(self.checkpoints())
        drained = self.publisher.drain(timeout_s, poll_s=0.1)
        return summarize(self.publisher.outbox, self.publisher.chain.label, drained)


def summarize(outbox: Outbox, chain: str, drained: bool) -> AnchorSummary:
    rows = outbox.rows()
    return AnchorSummary(
        chain=chain,
        confirmed=sum(r.status == "confirmed" for r in rows),
        pending=sum(r.status in ("pending", "sent") for r in rows),
        failed=sum(r.status == "failed" for r in rows),
        drained=drained,
    )
