"""The heartbeat of a campaign run's leases: its running experiments stay its own.

A run claims experiments under a `Lease` (node id, a token new at every start, a length).
`LeaseKeeper` renews the ones it holds every `renew_s` seconds from a thread of its own,
so a scheduler busy scoring or proposing does not let them run out. One that another
process took over (this one stalled past the lease) is dropped from the set and reported
by `lost`; the store refuses that run's result anyway (`LeaseLostError`).
"""

from __future__ import annotations

import logging
import secrets
import threading
from types import TracebackType

from node.errors import StoreError
from node.store import Lease, Store

log = logging.getLogger(__name__)


def new_lease(node: str, seconds: float) -> Lease:
    """A lease for one run of `node`: a fresh token tells it from the node's earlier runs."""
    return Lease(node=node, run=secrets.token_hex(6), seconds=seconds)


class LeaseKeeper:
    """Renews `lease` on the experiments it `hold`s until `release`d or closed."""

    def __init__(self, store: Store, lease: Lease, renew_s: float) -> None:
        if not 0 < renew_s < lease.seconds:
            raise ValueError(
                f"renew every {renew_s} s is not within the lease of {lease.seconds} s"
            )
        self.store = store
        self.lease = lease
        self.renew_s = renew_s
        self._held: set[str] = set()
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._thread.join()

    def hold(self, experiment_id: str) -> None:
        with self._lock:
            self._held.add(experiment_id)

    def release(self, experiment_id: str) -> None:
        with self._lock:
            self._held.discard(experiment_id)
            self._lost.discard(experiment_id)

    def lost(self) -> set[str]:
        """The experiments held but taken over by another process since they were claimed."""
        with self._lock:
            return set(self._lost)

    def renew(self) -> None:
        """One heartbeat: extend the lease on every held experiment."""
        with self._lock:
            held = set(self._held) - self._lost
        if not held:
            return
        kept = self.store.renew_leases(self.lease, held)
        gone = held - kept
        if gone:
            with self._lock:
                self._lost |= gone & self._held
            log.warning(
                "leases lost to another runner",
                extra={"owner": self.lease.owner, "experiments": sorted(gone)},
            )

    def _beat(self) -> None:
        while not self._closed.wait(self.renew_s):
            try:
                self.renew()
            except StoreError as exc:  # the database is away: tried again next beat
                log.warning("lease renewal failed", extra={"error": str(exc)})
