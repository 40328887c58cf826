"""The daemon's peer syncs: every `[network] sync_seconds`, one sync of each peer to follow
(`node.network.follow`), in a thread of its own beside the campaigns and the API.

A sync's imports are queued experiments of the campaigns that share the peer's config, so
a running campaign claims them like any proposal. A sync that fails (a peer unreachable,
quarantined or flagged) is one printed line; the thread goes on with the next peer and
the next round, and an exception of the store or the follower never stops the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping

from node.errors import AsiNodeError
from node.network.follow import Follower, LogPin, SyncResult
from node.network.peers import PeerState

log = logging.getLogger(__name__)


Peers = Callable[[], Mapping[str, LogPin | None]]  # the peers to follow now, by URL


class PeerSyncs:
    """Syncs `peers()` (each with the log it is pinned to, if any) with `follower` every
    `every_s` seconds until stopped; each result that imported something or is not OK
    goes to `show`."""

    def __init__(
        self,
        follower: Follower,
        peers: Peers,
        every_s: float,
        show: Callable[[str], None],
    ) -> None:
        self.follower = follower
        self.peers = peers
        self.every_s = every_s
        self.show = show
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-syncs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the sync in progress (a peer's request times out at `timeout_s`)."""
        self._stop.set()
        self._thread.join(timeout_s)

    def sync_round(self) -> list[SyncResult]:
        """One sync of every peer, in turn; a peer whose sync raised is logged and skipped."""
        results = []
        for url, pin in self.peers().items():
            if self._stop.is_set():
                break
            try:
                result = self.follower.sync(url, pin=pin)
            except (AsiNodeError, OSError) as exc:
                log.warning("peer sync failed", extra={"peer": url, "error": str(exc)})
                self.show(f"network: {url}: sync failed: {exc}")
                continue
            results.append(result)
            if result.state is not PeerState.OK or result.imported:
                self.show(f"network: {result.line()}")
        self.rounds += 1
        return results

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sync_round()
            self._stop.wait(self.every_s)


@contextlib.contextmanager
def peer_syncs(
    follower: Follower, peers: Peers, every_s: float, show: Callable[[str], None]
) -> Iterator[PeerSyncs]:
    """Peer syncs for as long as the block runs."""
    syncs = PeerSyncs(follower, peers, every_s, show)
    syncs.start()
    try:
        yield syncs
    finally:
        syncs.stop(follower.settings.timeout_s)
