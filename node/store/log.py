"""The transparency log's tables: entries (envelope bytes, leaf hash) and signed checkpoints.

Rows are only ever inserted. An entry's index is its primary key, so two writers cannot
both take the same slot; a crash mid-append rolls the one transaction back, and the log
is the entries that committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel, col, select

from node.errors import ConflictError
from node.store.database import translate
from node.store.migrations import WRITE_OPTION
from node.store.store import Store

_Tz = sa.DateTime(timezone=True)


class LogEntry(SQLModel, table=True):
    __tablename__ = "log_entry"

    idx: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    leaf_hash: bytes = Field(sa_type=sa.LargeBinary(32))
    kind: str = Field(sa_type=sa.String(32))
    subject: str | None = Field(default=None, sa_type=sa.String(64))
    envelope: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = Field(sa_type=_Tz)


class LogCheckpoint(SQLModel, table=True):
    __tablename__ = "log_checkpoint"

    tree_size: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    root_hash: bytes = Field(sa_type=sa.LargeBinary(32))
    origin: str = Field(sa_type=sa.Text)
    public_key: str = Field(sa_type=sa.Text)
    note: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(sa_type=_Tz)


_entry_table: sa.Table = LogEntry.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class EntryRow:
    index: int
    leaf_hash: bytes
    kind: str
    subject: str | None
    envelope: bytes
    created_at: datetime


@dataclass(frozen=True)
class CheckpointRow:
    """A signed checkpoint as published: `note` is the C2SP signed note text."""

    tree_size: int
    root_hash: bytes
    origin: str
    public_key: str
    note: str
    created_at: datetime


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _entry(r: LogEntry) -> EntryRow:
    return EntryRow(
        r.idx, bytes(r.leaf_hash), r.kind, r.subject, bytes(r.envelope), _utc(r.created_at)
    )


def _checkpoint(r: LogCheckpoint) -> CheckpointRow:
    return CheckpointRow(
        r.tree_size, bytes(r.root_hash), r.origin, r.public_key, r.note, _utc(r.created_at)
    )


class LogStore:
    """Reads and appends of the log tables, each in one transaction of the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def append(
        self, index: int, leaf: bytes, kind: str, subject: str | None, envelope: bytes
    ) -> None:
        """Insert entry `index`; ConflictError (from the primary key) if that slot is taken.

        A Core INSERT on a bare connection, not an ORM session: this runs once per record
        and a session's unit of work would cost more than signing it."""
        store = self._store
        try:
            with store._lock, store._engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    self._insert(conn, index, leaf, kind, subject, envelope)
        except SQLAlchemyError as exc:
            raise translate(exc, store._url) from exc

    @staticmethod
    def _insert(
        conn: Connection, index: int, leaf: bytes, kind: str, subject: str | None, envelope: bytes
    ) -> None:
        conn.execute(
            _entry_table.insert(),
            {
                "idx": index,
                "leaf_hash": leaf,
                "kind": kind,
                "subject": subject,
                "envelope": envelope,
                "created_at": datetime.now(UTC),
            },
        )

    def add_checkpoint(self, row: CheckpointRow) -> None:
        with self._store._session(write=True) as s:
            if s.get(LogCheckpoint, row.tree_size) is None:
                s.add(
                    LogCheckpoint(
                        tree_size=row.tree_size,
                        root_hash=row.root_hash,
                        origin=row.origin,
                        public_key=row.public_key,
                        note=row.note,
                        created_at=row.created_at,
                    )
                )

    def size(self) -> int:
        """One past the highest index (entries are dense from 0)."""
        with self._store._session() as s:
            top = s.exec(select(sa.func.max(LogEntry.idx))).one()
            return 0 if top is None else int(top) + 1

    def leaf_hashes(self, start: int = 0, batch: int = 50_000) -> Iterator[bytes]:
        """The leaf hashes from index `start` on, in order, read in batches."""
        while True:
            with self._store._session() as s:
                rows = s.exec(
                    select(LogEntry.idx, LogEntry.leaf_hash)
                    .where(col(LogEntry.idx) >= start)
                    .order_by(col(LogEntry.idx))
                    .limit(batch)
                ).all()
            for idx, leaf in rows:
                if idx != start:
                    raise ConflictError(f"log entry {start} is missing: the log table was edited")
                start += 1
                yield bytes(leaf)
            if len(rows) < batch:
                return

    def entries(self, start: int, end: int) -> list[EntryRow]:
        with self._store._session() as s:
            rows = s.exec(
                select(LogEntry)
                .where(col(LogEntry.idx) >= start, col(LogEntry.idx) < end)
                .order_by(col(LogEntry.idx))
            ).all()
            return [_entry(r) for r in rows]

    def subjects(self, kind: str) -> set[str]:
        """The subjects (experiment ids) already recorded under `kind`."""
        with self._store._session() as s:
            rows = s.exec(select(LogEntry.subject).where(col(LogEntry.kind) == kind)).all()
            return {r for r in rows if r is not None}

    def has_subject(self, kind: str, subject: str) -> bool:
        with self._store._session() as s:
            found = s.exec(
                select(LogEntry.idx)
                .where(col(LogEntry.kind) == kind, col(LogEntry.subject) == subject)
                .limit(1)
            ).first()
            return found is not None

    def entry_for(self, kind: str, subject: str) -> EntryRow | None:
        """The first entry of `kind` about `subject` (an idempotent append's earlier one)."""
        with self._store._session() as s:
            row = s.exec(
                select(LogEntry)
                .where(col(LogEntry.kind) == kind, col(LogEntry.subject) == subject)
                .order_by(col(LogEntry.idx))
                .limit(1)
            ).first()
            return _entry(row) if row is not None else None

    def checkpoints(self) -> list[CheckpointRow]:
        with self._store._session() as s:
            rows = s.exec(select(LogCheckpoint).order_by(col(LogCheckpoint.tree_size))).all()
            return [_checkpoint(r) for r in rows]

    def latest_checkpoint(self) -> CheckpointRow | None:
        with self._store._session() as s:
            row = s.exec(
                select(LogCheckpoint).order_by(col(LogCheckpoint.tree_size).desc()).limit(1)
            ).first()
            return _checkpoint(row) if row is not None else None
