"""The anchor publisher: moves the outbox's checkpoint roots onto the chain, and keeps them there.

Its input is the narrow interface the log offers: `submit(log_id, tree_size, root)` with
a 32-byte log id, a tree size and the 32-byte checkpoint root. Each `step` is one pass:

1. Track every sent anchor: mined and buried `confirmations` deep -> confirmed. Not
   mined: re-broadcast the very same signed transaction (so nothing is ever sent twice);
   after `replace_after` re-sign it at the same nonce with fees 12.5% higher (only one
   of the two can ever be mined). If its nonce was taken by another transaction, the
   chain is asked whether the anchor landed anyway, and if not it is signed again. A block that held
   an anchor and left the chain (a reorg) sends it back to be tracked again.
2. Sign the next pending anchor of each log (one in flight per log: tree sizes must only
   grow on-chain), after checking that the chain does not already hold it. Each anchor
   names the root it extends: the root the chain holds as this node's last anchor of the
   log (`logHead`), which must be the root of this node's own checkpoint of that size when
   the outbox holds one. The signed transaction is stored before it is broadcast.

The node anchors under an id the controller derives from its address (`chain_log_id`):
another account can neither write into its log nor block it; the chain's record of the
log is this node's own.

Failures are retried with exponential backoff; an unreachable RPC endpoint or an unfunded
account leaves everything queued. Only an anchor that the chain already holds with a
different root, or one whose predecessor on the chain is not this log's checkpoint, is
marked failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from governance.chain import Chain, Controller, address_of
from governance.errors import (
    ChainError,
    ChainUnavailableError,
    NonceError,
)
from node.store.outbox import Outbox, OutboxRow

log = logging.getLogger(__name__)

DEFAULT_CONFIRMATIONS = 2


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `attempts`: base * 2**(attempts-1), at most `max_s`."""

    base_s: float = 1.0
    max_s: float = 300.0

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.max_s, self.base_s * 2 ** max(0, attempts - 1)))


@dataclass
class StepReport:
    """What one pass did (counts), and whether the chain could be reached at all."""

    signed: int = 0
    rebroadcast: int = 0
    confirmed: int = 0
    retried: int = 0
    failed: int = 0
    reachable: bool = True
    errors: list[str] = field(default_factory=list)


def feed_outbox(outbox: Outbox, checkpoints: Iterable[tuple[bytes, int, bytes]]) -> int:
    """Queue in `outbox` the checkpoints past the largest size it holds for each log;
    returns how many were new (see `AnchorPublisher.feed`)."""
    queued: dict[bytes, int] = {}
    for row in outbox.rows():
        queued[row.log_id] = max(queued.get(row.log_id, 0), row.tree_size)
    new = 0
    for log_id, tree_size, root in sorted(checkpoints, key=lambda c: (c[0], c[1])):
        if tree_size > queued.get(log_id, 0):
            outbox.enqueue(log_id, tree_size, root)
            queued[log_id] = tree_size
            new += 1
    return new


def settled(outbox: Outbox) -> bool:
    """Nothing left to publish or to track: every row confirmed or failed."""
    return not outbox.rows("pending") and not outbox.rows("sent")


class AnchorPublisher:
    """Publishes queued checkpoint roots through `controller`, signing with `key`."""

    def __init__(
        self,
        outbox: Outbox,
        controller: Controller,
        key: bytes,
        *,
        confirmations: int = DEFAULT_CONFIRMATIONS,
        backoff: Backoff | None = None,
        replace_after: timedelta = timedelta(minutes=2),
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        self.outbox = outbox
        self.controller = controller
        self.chain: Chain = controller.chain
        self.key = key
        self.address = address_of(key)
        self.confirmations = confirmations
        self.backoff = backoff or Backoff()
        self.replace_after = replace_after
        self._now = now or (lambda: datetime.now(UTC))

    def submit(self, log_id: bytes, tree_size: int, root: bytes) -> OutboxRow:
        """Queue a checkpoint root; idempotent for a checkpoint already queued."""
        return self.outbox.enqueue(log_id, tree_size, root)

    @property
    def label(self) -> str:
        """Where the anchors go, for summaries: the chain's label."""
        return self.chain.label

    def feed(self, checkpoints: Iterable[tuple[bytes, int, bytes]]) -> int:
        """Queue the (log id, tree size, root) checkpoints past what each log has queued.

        The log's own checkpoints are the source of truth: feeding all of them again after
        a crash queues exactly the ones the outbox has not seen. Returns how many were new.
        """
        return feed_outbox(self.outbox, checkpoints)

    def step(self) -> StepReport:
        """One pass over the outbox (see the module docstring)."""
        report = StepReport()
        try:
            head = self.chain.head()
            for row in self.outbox.rows("sent"):
                self._track(row, head, report)
            busy = {r.log_id for r in self.outbox.rows("sent")}
            now = self._now()
            for row in self.outbox.rows("pending"):
                if row.log_id in busy:
                    continue
                busy.add(row.log_id)  # the lowest pending size of each log, one at a time
                if row.next_attempt_at <= now:
                    self._send(row, report)
        except ChainUnavailableError as exc:
            report.reachable = False
            report.errors.append(str(exc))
            log.warning("chain unreachable; anchors stay queued", extra={"error": str(exc)})
        return report

    def drain(self, timeout_s: float, poll_s: float = 0.2) -> bool:
        """Step until nothing is pending or sent, or `timeout_s` passes; True if drained."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.step()
            if settled(self.outbox):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)

    def run(self, stop: threading.Event, poll_s: float = 2.0) -> None:
        """Step every `poll_s` seconds until `stop` is set."""
        while not stop.is_set():
            self.step()
            stop.wait(poll_s)

    def _track(self, row: OutboxRow, head: int, report: StepReport) -> None:
        tx_hash = row.tx_hash
        assert tx_hash is not None
        receipt = self.chain.receipt(tx_hash)
        if receipt is None:
            if row.block_number is not None:
                row = self.outbox.unmined(
                    row, f"block {row.block_number} holding the anchor left the chain"
                )
                log.warning("anchor reorged out", extra={"tree_size": row.tree_size})
            self._not_mined(row, report)
            return
        if not receipt.succeeded:
            self._find_or_retry(row, report, f"transaction 0x{tx_hash.hex()} reverted")
            return
        if row.block_number != receipt.block_number or row.block_hash != receipt.block_hash:
            row = self.outbox.mined(
                row,
                block_number=receipt.block_number,
                block_hash=receipt.block_hash,
                gas_used=receipt.gas_used,
            )
        depth = head - receipt.block_number + 1
        if depth >= self.confirmations and (
            self.chain.block_hash(receipt.block_number) == receipt.block_hash
        ):
            self.outbox.confirmed(row)
            report.confirmed += 1
            log.info(
                "anchor confirmed",
                extra={"tree_size": row.tree_size, "block": receipt.block_number},
            )

    def _not_mined(self, row: OutboxRow, report: StepReport) -> None:
        if row.raw_tx is None or row.nonce is None or row.sender is None:
            # An adopted anchor (someone else's transaction) that is gone: look again.
            self._find_or_retry(row, report, "the adopted anchor transaction left the chain")
            return
        if self.chain.nonce(row.sender) > row.nonce:
            self._find_or_retry(row, report, f"nonce {row.nonce} was taken by another transaction")
            return
        waited = self._now() - (row.sent_at or self._now())
        if waited >= self.replace_after:
            self._replace(row, report)
            return
        try:
            self.chain.broadcast(row.raw_tx)
            report.rebroadcast += 1
        except NonceError:
            self._find_or_retry(row, report, f"nonce {row.nonce} was taken")
        except ChainUnavailableError:
            raise
        except ChainError as exc:
            self._retry(row, report, str(exc), drop_transaction=True)

    def _replace(self, row: OutboxRow, report: StepReport) -> None:
        """Re-sign a long-unmined anchor at the same nonce with fees raised (a stuck fee).

        If the old transaction is mined after all, its nonce is spent, the new one never
        lands, and tracking finds and adopts the old one's anchor.
        """
        assert row.raw_tx is not None and row.nonce is not None
        try:
            head = self.controller.log_head(row.log_id, self.address)
            if head.tree_size >= row.tree_size:
                return  # mined meanwhile (by the old one): tracking adopts it
            signed = self.controller.prepare_anchor(
                self.key,
                row.log_id,
                row.tree_size,
                row.root,
                head.root,
                nonce=row.nonce,
                replaces=row.raw_tx,
            )
        except ChainUnavailableError:
            raise
        except ChainError as exc:
            report.errors.append(str(exc))
            log.warning("anchor replacement not signed", extra={"error": str(exc)})
            return
        row = self.outbox.signed(
            row, sender=signed.sender, nonce=signed.nonce, tx_hash=signed.tx_hash, raw_tx=signed.raw
        )
        report.signed += 1
        log.info("anchor re-signed with higher fees", extra={"tree_size": row.tree_size})
        try:
            self.chain.broadcast(signed.raw)
        except ChainUnavailableError:
            raise
        except ChainError as exc:  # e.g. the old one was mined meanwhile: tracking sorts it out
            report.errors.append(str(exc))

    def _find_or_retry(self, row: OutboxRow, report: StepReport, why: str) -> None:
        """Adopt the anchor if the chain holds it; otherwise sign it again."""
        found = self.controller.find_anchor(row.log_id, row.tree_size, node=self.address)
        if found is None:
            self._retry(row, report, why, drop_transaction=True, immediately=True)
        elif found.root == row.root:
            self.outbox.adopted(row, tx_hash=found.tx_hash, sender=found.node)
        else:
            self._fail(row, report, found.root)

    def _send(self, row: OutboxRow, report: StepReport) -> None:
        head = self.controller.log_head(row.log_id, self.address)
        chain_size = head.tree_size
        if chain_size >= row.tree_size:
            found = self.controller.find_anchor(row.log_id, row.tree_size, node=self.address)
            if found is not None and found.root == row.root:
                self.outbox.adopted(row, tx_hash=found.tx_hash, sender=found.node)
                return
            if found is not None:
                self._fail(row, report, found.root)
                return
            self.outbox.failed(
                row,
                f"the chain's head for this log is at size {chain_size}, past {row.tree_size}, "
                "which was never anchored; anchors must be queued in tree-size order",
            )
            report.failed += 1
            return
        ours = [r for r in self.outbox.rows(log_id=row.log_id) if r.tree_size == chain_size]
        if ours and ours[0].root != head.root:
            self.outbox.failed(
                row,
                f"the chain's last anchor of this log (size {chain_size}) has root "
                f"0x{head.root.hex()}, not this node's checkpoint root 0x{ours[0].root.hex()}: "
                "the log has two histories",
            )
            report.failed += 1
            log.error("anchor would extend another history", extra={"tree_size": row.tree_size})
            return
        try:
            signed = self.controller.prepare_anchor(
                self.key,
                row.log_id,
                row.tree_size,
                row.root,
                head.root,
                nonce=self.chain.nonce(self.address, pending=True),
            )
        except ChainUnavailableError:
            raise
        except ChainError as exc:  # unfunded, unapproved, reverted: keep it, retry later
            self._retry(row, report, str(exc))
            return
        row = self.outbox.signed(
            row,
            sender=signed.sender,
            nonce=signed.nonce,
            tx_hash=signed.tx_hash,
            raw_tx=signed.raw,
        )
        report.signed += 1
        try:
            self.chain.broadcast(signed.raw)
        except NonceError as exc:
            self._retry(row, report, str(exc), drop_transaction=True, immediately=True)
        except ChainUnavailableError:
            raise  # stored as sent: re-broadcast when the endpoint is back
        except ChainError as exc:
            self._retry(row, report, str(exc), drop_transaction=True)

    def _retry(
        self,
        row: OutboxRow,
        report: StepReport,
        error: str,
        *,
        drop_transaction: bool = False,
        immediately: bool = False,
    ) -> None:
        at = self._now() if immediately else self._now() + self.backoff.delay(row.attempts + 1)
        self.outbox.retry(row, error, at, drop_transaction=drop_transaction)
        report.retried += 1
        report.errors.append(error)
        log.warning("anchor retry", extra={"tree_size": row.tree_size, "error": error})

    def _fail(self, row: OutboxRow, report: StepReport, other_root: bytes) -> None:
        self.outbox.failed(
            row,
            f"size {row.tree_size} is anchored on-chain with root 0x{other_root.hex()}, "
            f"not 0x{row.root.hex()}: the log has two histories",
        )
        report.failed += 1
        log.error("anchor conflicts with the chain", extra={"tree_size": row.tree_size})
