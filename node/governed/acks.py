"""On-chain acknowledgements of the directives a governed node applied."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from node.errors import NotFoundError
from node.governed.records import DirectiveAcker, acknowledge_pending

if TYPE_CHECKING:
    from node.governed.obey import StepReport
    from node.store import DirectiveRow, Store

log = logging.getLogger(__name__)

SHUTDOWN_WAIT_S = 10.0  # how long a stopping node lets an acknowledgement in flight finish


class OnChainAcks:
    """Acknowledges on-chain the directives a GovernedNode applied from one EVM source.

    Called after each step (`GovernedNode.serve(after_step=...)`): unless a round is still
    in flight it starts one in a background thread, so a slow chain never delays the next
    poll. A round sends `acknowledge` for each applied, unacknowledged directive in order
    (`acknowledge_pending`) and stops at the first failure, which is logged and retried
    after the next step. A fork's child is known on chain by the name its proposal gave
    it, which the node keeps as the child's name (its id is the node's own).
    """

    def __init__(self, store: Store, acker: DirectiveAcker, source: str) -> None:
        self.store = store
        self.acker = acker
        self.source = source
        self._thread: threading.Thread | None = None

    def __call__(self, report: StepReport | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self.round, name="directive-acks", daemon=True)
        self._thread.start()

    def round(self) -> list[DirectiveRow]:
        """One pass over the pending acknowledgements; never raises."""
        try:
            return acknowledge_pending(self.store, self, self.source)
        except Exception as exc:  # a store or chain failure must not end the acknowledgements
            log.warning("acknowledgements not sent; retried later", extra={"error": str(exc)})
            return []

    def wait(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def acknowledge(self, campaign_key: bytes, epoch: int, entry_hash: bytes) -> str:
        return self.acker.acknowledge(self._on_chain(campaign_key), epoch, entry_hash)

    def _on_chain(self, key: bytes) -> bytes:
        from governance.directives import campaign_key, campaign_of_key

        try:
            camp = self.store.get_campaign(campaign_of_key(key))
            if camp.parent_campaign_id is not None:
                return campaign_key(camp.name)
        except (NotFoundError, ValueError):
            pass
        return key
