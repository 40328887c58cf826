"""The anchoring outbox: checkpoint roots waiting to go on-chain, and what became of them.

One row per (target, log id, tree size): each checkpoint is queued once for every
target it goes to, `evm` (the chain through `node.anchoring.evm`) and `icp` (the anchor
canister through `node.anchoring.icp`); an `Outbox` object sees one target. Enqueueing
the same checkpoint twice is a no-op and a different root for a size already queued is
refused. Every change is conditional on the row being as its writer last read it, so a
second publisher working the same rows fails loudly instead of signing an anchor twice.

An EVM row moves pending -> sent (signed transaction stored before it is broadcast, so a
crash can only lead to re-broadcasting the very same transaction) -> confirmed (mined
and buried under the confirmation depth); a reorg or a nonce taken by another
transaction moves it back. `failed` is for anchors the chain will never accept (the log
already anchored with a different root); it needs an operator. An ICP row goes pending
-> confirmed in one step (the canister's certified reply is final), keeping the log's
anchor count and the certificate's time as its receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from node.errors import ConflictError, NotFoundError
from node.store.store import Store


class OutboxStatus(StrEnum):
    PENDING = "pending"  # waiting to be signed (EVM) or sent (ICP)
    SENT = "sent"  # signed and broadcast, not yet buried deep enough
    CONFIRMED = "confirmed"
    FAILED = "failed"  # the target holds another root for this size: needs an operator


OUTBOX_STATUSES = tuple(OutboxStatus)
TARGETS = ("evm", "icp")
_Tz = sa.DateTime(timezone=True)


class AnchorOutbox(SQLModel, table=True):
    __tablename__ = "anchor_outbox"

    target: str = Field(default="evm", primary_key=True, sa_type=sa.String(16))
    log_id: str = Field(primary_key=True, sa_type=sa.String(66))
    tree_size: int = Field(primary_key=True, sa_type=sa.BigInteger)
    root: str = Field(sa_type=sa.String(66))
    status: str = Field(sa_type=sa.String(16))
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=_Tz)
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    sender: str | None = Field(default=None, sa_type=sa.String(42))
    nonce: int | None = Field(default=None, sa_type=sa.BigInteger)
    tx_hash: str | None = Field(default=None, sa_type=sa.String(66))
    raw_tx: str | None = Field(default=None, sa_type=sa.Text)
    block_number: int | None = Field(default=None, sa_type=sa.BigInteger)
    block_hash: str | None = Field(default=None, sa_type=sa.String(66))
    gas_used: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_at: datetime = Field(sa_type=_Tz)
    sent_at: datetime | None = Field(default=None, sa_type=_Tz)
    confirmed_at: datetime | None = Field(default=None, sa_type=_Tz)
    anchor_count: int | None = Field(default=None, sa_type=sa.BigInteger)
    certified_at_ns: int | None = Field(default=None, sa_type=sa.BigInteger)


@dataclass(frozen=True)
class OutboxRow:
    """One queued anchor. Byte fields are bytes here (hex in the database)."""

    log_id: bytes
    tree_size: int
    root: bytes
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    sender: str | None
    nonce: int | None
    tx_hash: bytes | None
    raw_tx: bytes | None
    block_number: int | None
    block_hash: bytes | None
    gas_used: int | None
    created_at: datetime
    sent_at: datetime | None
    confirmed_at: datetime | None
    target: str = "evm"
    anchor_count: int | None = None  # icp: the log's anchor count after this one
    certified_at_ns: int | None = None  # icp: the time of the certificate that vouched


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _unhex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value[2:])


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _row(r: AnchorOutbox) -> OutboxRow:
    return OutboxRow(
        log_id=bytes.fromhex(r.log_id[2:]),
        tree_size=r.tree_size,
        root=bytes.fromhex(r.root[2:]),
        status=OutboxStatus(r.status),
        attempts=r.attempts,
        next_attempt_at=_utc(r.next_attempt_at) or r.next_attempt_at,
        last_error=r.last_error,
        sender=r.sender,
        nonce=r.nonce,
        tx_hash=_unhex(r.tx_hash),
        raw_tx=_unhex(r.raw_tx),
        block_number=r.block_number,
        block_hash=_unhex(r.block_hash),
        gas_used=r.gas_used,
        created_at=_utc(r.created_at) or r.created_at,
        sent_at=_utc(r.sent_at),
        confirmed_at=_utc(r.confirmed_at),
        target=r.target,
        anchor_count=r.anchor_count,
        certified_at_ns=r.certified_at_ns,
    )


def _check32(value: bytes, what: str) -> None:
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(value)}")


def outbox_stats(store: Store) -> list[tuple[str, str, int, int]]:
    """(target, status, rows, highest tree size) for every pair the outbox holds."""
    query = select(
        AnchorOutbox.target,
        AnchorOutbox.status,
        sa.func.count(),
        sa.func.max(AnchorOutbox.tree_size),
    ).group_by(col(AnchorOutbox.target), col(AnchorOutbox.status))
    with store._session() as s:
        return [(t, status, int(n), int(size)) for t, status, n, size in s.exec(query)]


class Outbox:
    """One target's rows of the anchor outbox in a Store's database (`evm` unless told);
    every method is one transaction."""

    def __init__(self, store: Store, target: str = "evm") -> None:
        if target not in TARGETS:
            raise ValueError(f"unknown anchoring target {target!r}; known: {', '.join(TARGETS)}")
        self._store = store
        self.target = target

    def _key(self, log_id: bytes, tree_size: int) -> dict[str, object]:
        return {"target": self.target, "log_id": _hex(log_id), "tree_size": tree_size}

    def _now(self) -> datetime:
        return self._store._now()

    def enqueue(self, log_id: bytes, tree_size: int, root: bytes) -> OutboxRow:
        """Queue the checkpoint (log_id, tree_size, root); idempotent for the same root.

        Raises ConflictError if that size is already queued with a different root (the
        log forked: never anchor two histories).
        """
        _check32(log_id, "log id")
        _check32(root, "root")
        if tree_size <= 0:
            raise ValueError(f"tree size must be positive, got {tree_size}")
        now = self._now()
        with self._store._session(write=True) as s:
            existing = s.get(AnchorOutbox, self._key(log_id, tree_size))
            if existing is not None:
                if existing.root != _hex(root):
                    raise ConflictError(
                        f"log {_hex(log_id)} size {tree_size} is already queued for "
                        f"{self.target} with root "
                        f"{existing.root}, not {_hex(root)}: the log has two histories"
                    )
                return _row(existing)
            row = AnchorOutbox(
                target=self.target,
                log_id=_hex(log_id),
                tree_size=tree_size,
                root=_hex(root),
                status=OutboxStatus.PENDING,
                next_attempt_at=now,
                created_at=now,
            )
            s.add(row)
            s.flush()
            return _row(row)

    def get(self, log_id: bytes, tree_size: int) -> OutboxRow:
        with self._store._session() as s:
            return _row(self._get(s, log_id, tree_size))

    def rows(self, status: str | None = None, log_id: bytes | None = None) -> list[OutboxRow]:
        """Rows by log and tree size, optionally of one status or one log."""
        with self._store._session() as s:
            query = select(AnchorOutbox).where(col(AnchorOutbox.target) == self.target)
            if status is not None:
                query = query.where(col(AnchorOutbox.status) == status)
            if log_id is not None:
                query = query.where(col(AnchorOutbox.log_id) == _hex(log_id))
            query = query.order_by(col(AnchorOutbox.log_id), col(AnchorOutbox.tree_size))
            return [_row(r) for r in s.exec(query)]

    def signed(
        self, row: OutboxRow, *, sender: str, nonce: int, tx_hash: bytes, raw_tx: bytes
    ) -> OutboxRow:
        """Record the signed transaction (before broadcasting it): pending -> sent."""
        return self._update(
            row,
            status=OutboxStatus.SENT,
            sender=sender,
            nonce=nonce,
            tx_hash=_hex(tx_hash),
            raw_tx=_hex(raw_tx),
            sent_at=self._now(),
            attempts=row.attempts + 1,
            block_number=None,
            block_hash=None,
            gas_used=None,
        )

    def adopted(self, row: OutboxRow, *, tx_hash: bytes, sender: str) -> OutboxRow:
        """The anchor is already on-chain in `tx_hash` (found, not sent by us): track it."""
        return self._update(
            row,
            status=OutboxStatus.SENT,
            sender=sender,
            nonce=None,
            tx_hash=_hex(tx_hash),
            raw_tx=None,
            sent_at=row.sent_at or self._now(),
            block_number=None,
            block_hash=None,
            gas_used=None,
        )

    def mined(
        self, row: OutboxRow, *, block_number: int, block_hash: bytes, gas_used: int
    ) -> OutboxRow:
        return self._update(
            row, block_number=block_number, block_hash=_hex(block_hash), gas_used=gas_used
        )

    def unmined(self, row: OutboxRow, error: str) -> OutboxRow:
        """The block that held the transaction left the chain (a reorg): forget the block."""
        return self._update(
            row, block_number=None, block_hash=None, gas_used=None, last_error=error
        )

    def confirmed(self, row: OutboxRow) -> OutboxRow:
        return self._update(
            row, status=OutboxStatus.CONFIRMED, confirmed_at=self._now(), last_error=None
        )

    def retry(
        self, row: OutboxRow, error: str, at: datetime, *, drop_transaction: bool = False
    ) -> OutboxRow:
        """Try again at `at`; with `drop_transaction`, back to pending to be signed anew."""
        changes: dict[str, object] = {
            "next_attempt_at": at,
            "last_error": error,
            "attempts": row.attempts + (0 if drop_transaction else 1),
        }
        if drop_transaction:
            changes.update(
                status=OutboxStatus.PENDING,
                sender=None,
                nonce=None,
                tx_hash=None,
                raw_tx=None,
                block_number=None,
                block_hash=None,
                gas_used=None,
                sent_at=None,
            )
        return self._update(row, **changes)

    def failed(self, row: OutboxRow, error: str) -> OutboxRow:
        return self._update(row, status=OutboxStatus.FAILED, last_error=error)

    def published(
        self, row: OutboxRow, *, anchor_count: int | None, certified_at_ns: int
    ) -> OutboxRow:
        """An ICP anchor the canister took (or already held): pending -> confirmed."""
        now = self._now()
        return self._update(
            row,
            status=OutboxStatus.CONFIRMED,
            attempts=row.attempts + 1,
            anchor_count=anchor_count,
            certified_at_ns=certified_at_ns,
            sent_at=row.sent_at or now,
            confirmed_at=now,
            last_error=None,
        )

    def _get(self, s: Session, log_id: bytes, tree_size: int) -> AnchorOutbox:
        found = s.get(AnchorOutbox, self._key(log_id, tree_size), populate_existing=True)
        if found is None:
            raise NotFoundError(
                f"no queued {self.target} anchor for log {_hex(log_id)} size {tree_size}"
            )
        return found

    def _update(self, row: OutboxRow, **changes: object) -> OutboxRow:
        """Apply `changes` in one conditional UPDATE: only if the stored row is still as
        `row` was read (status, transaction, attempts); ConflictError if another writer
        moved it meanwhile."""
        tx_hash = col(AnchorOutbox.tx_hash)
        with self._store._session(write=True) as s:
            self._get(s, row.log_id, row.tree_size)  # NotFoundError for an unknown row
            moved = s.exec(
                sa.update(AnchorOutbox)
                .where(
                    col(AnchorOutbox.target) == self.target,
                    col(AnchorOutbox.log_id) == _hex(row.log_id),
                    col(AnchorOutbox.tree_size) == row.tree_size,
                    col(AnchorOutbox.status) == row.status,
                    col(AnchorOutbox.attempts) == row.attempts,
                    tx_hash.is_(None) if row.tx_hash is None else tx_hash == _hex(row.tx_hash),
                )
                .values(**changes)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:
                now = self._get(s, row.log_id, row.tree_size)
                raise ConflictError(
                    f"{self.target} anchor of log {_hex(row.log_id)} size {row.tree_size} "
                    f"changed since it was read ({row.status} -> {now.status}): another "
                    "publisher works this outbox, and only the node's one anchor follower may"
                )
            return _row(self._get(s, row.log_id, row.tree_size))
