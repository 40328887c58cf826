"""The node's transparency log: sign, append, checkpoint, prove, export.

`LogView` reads (the HTTP API, export): it rebuilds the Merkle tree from the stored leaf
hashes and follows the table as it grows. `NodeLog` also writes, holding the node key:
every append is one transaction (envelope + leaf hash at the next index), and a
checkpoint is signed every `checkpoint_every` entries or `checkpoint_interval_s`
seconds, and whenever asked (node stop). One process appends to a log at a time; a
second one trying is refused by the primary key, not silently forked.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from attestation.bundle import (
    Bundle,
    BundleEntry,
    BundleHeader,
    ConsistencyItem,
    InclusionItem,
    b64,
    entry_line,
)
from attestation.dsse import sign_statement
from attestation.keys import NodeKey
from attestation.merkle import Tree, leaf_hash
from attestation.note import Checkpoint
from node.errors import ConflictError, CorruptStoreError, NotFoundError
from node.store import CheckpointRow, EntryRow, LogStore, Store

log = logging.getLogger(__name__)


def origin_for(key_fingerprint: str) -> str:
    """The log's origin line (C2SP): names this node's log, stable for its key."""
    return f"asi-node.log/{key_fingerprint.removeprefix('sha256:')[:32]}"


def log_id(origin: str) -> bytes:
    """32-byte log id for on-chain anchors: SHA-256 of the origin line."""
    return hashlib.sha256(origin.encode()).digest()


@dataclass(frozen=True)
class SignedCheckpoint:
    """What an anchor publishes: the log id, tree size, root, and the signed note."""

    origin: str
    log_id: bytes
    tree_size: int
    root_hash: bytes
    note: str

    @classmethod
    def of(cls, row: CheckpointRow) -> SignedCheckpoint:
        return cls(row.origin, log_id(row.origin), row.tree_size, row.root_hash, row.note)


def _consistency(tree: Tree, rows: Sequence[CheckpointRow]) -> list[ConsistencyItem]:
    """A consistency proof between each pair of successive checkpoints (`rows`, by size)."""
    return [
        ConsistencyItem(
            first=a.tree_size,
            second=b.tree_size,
            proof=[b64(h) for h in tree.consistency_proof(a.tree_size, b.tree_size)],
        )
        for a, b in itertools.pairwise(rows)
        if 0 < a.tree_size < b.tree_size
    ]


class LogView:
    """Read access to the log in a store: checkpoints, entries, proofs, bundles."""

    def __init__(self, store: Store) -> None:
        self.db = LogStore(store)
        self._tree = Tree()
        self._lock = threading.RLock()

    def _sync(self) -> Tree:
        """The tree, caught up with entries other writers committed since the last look."""
        with self._lock:
            if self.db.size() > self._tree.size:
                for h in self.db.leaf_hashes(start=self._tree.size):
                    self._tree.append(h)
            return self._tree

    @property
    def size(self) -> int:
        return self._sync().size

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        row = self.db.latest_checkpoint()
        return SignedCheckpoint.of(row) if row is not None else None

    def checkpoints(self) -> list[SignedCheckpoint]:
        return [SignedCheckpoint.of(r) for r in self.db.checkpoints()]

    def entries(self, start: int, end: int) -> list[EntryRow]:
        if not 0 <= start <= end:
            raise ValueError(f"bad entry range [{start}, {end})")
        return self.db.entries(start, end)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        tree = self._sync()
        if not 0 <= index < tree_size <= tree.size:
            raise NotFoundError(
                f"no inclusion proof of entry {index} in size {tree_size} (log size {tree.size})"
            )
        return tree.inclusion_proof(index, tree_size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        tree = self._sync()
        if not 0 <= first <= second <= tree.size:
            raise NotFoundError(
                f"no consistency proof from size {first} to {second} (log size {tree.size})"
            )
        return tree.consistency_proof(first, second)

    def root(self, tree_size: int) -> bytes:
        return self._sync().root(tree_size)

    def export(self) -> Bundle:
        """Everything up to the latest checkpoint, with the proofs an auditor needs."""
        rows = self.db.checkpoints()
        if not rows:
            raise NotFoundError("the log has no checkpoint yet: run the node (or init) first")
        tree = self._sync()
        latest = rows[-1]
        entries = self.db.entries(0, latest.tree_size)
        consistency = _consistency(tree, rows)
        inclusion = [
            InclusionItem(
                index=i,
                tree_size=latest.tree_size,
                proof=[b64(h) for h in tree.inclusion_proof(i, latest.tree_size)],
            )
            for i in range(latest.tree_size)
        ]
        return Bundle(
            origin=latest.origin,
            public_key=latest.public_key,
            entries=[BundleEntry(index=e.index, envelope=b64(e.envelope)) for e in entries],
            checkpoints=[r.note for r in rows],
            consistency=consistency,
            inclusion=inclusion,
        )

    def export_lines(self, batch: int = 1000) -> Iterator[bytes]:
        """The version 3 bundle (line-delimited) up to the latest checkpoint, read from the
        store in batches: its memory does not grow with the log."""
        rows = self.db.checkpoints()
        if not rows:
            raise NotFoundError("the log has no checkpoint yet: run the node (or init) first")
        tree = self._sync()
        latest = rows[-1]
        header = BundleHeader(
            origin=latest.origin,
            public_key=latest.public_key,
            size=latest.tree_size,
            checkpoints=[r.note for r in rows],
            consistency=_consistency(tree, rows),
        )
        yield header.to_line()
        for start in range(0, latest.tree_size, batch):
            for e in self.db.entries(start, min(start + batch, latest.tree_size)):
                yield entry_line(e.index, e.envelope)


class NodeLog(LogView):
    """The log this node appends to, signing with its key."""

    def __init__(
        self,
        store: Store,
        key: NodeKey,
        *,
        checkpoint_every: int = 100,
        checkpoint_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store)
        self.key = key
        self.node_id = key.public.fingerprint
        self.origin = origin_for(self.node_id)
        self.vkey = key.public.vkey(self.origin)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self._clock = clock
        tree = self._sync()
        last = self.db.latest_checkpoint()
        if last is not None:
            if last.public_key != self.vkey:
                raise CorruptStoreError(
                    "the log in this database was signed by another node key; a node keeps "
                    "one key for its whole log. Restore the key or use another database."
                )
            if last.tree_size > tree.size or tree.root(last.tree_size) != last.root_hash:
                raise CorruptStoreError(
                    f"the stored log does not match its checkpoint at size {last.tree_size}: "
                    "entries were removed or edited. Restore the database from a backup."
                )
        self._since = self._clock()
        self._last_size = last.tree_size if last is not None else 0

    def append(self, kind: str, statement: dict[str, Any], subject: str | None = None) -> int:
        """Sign `statement`, append it, checkpoint if one is due; return its index."""
        envelope = sign_statement(statement, self.key).to_bytes()
        leaf = leaf_hash(envelope)
        with self._lock:
            # This process is the log's one writer: its tree is current without a read.
            tree = self._tree
            index = tree.size
            try:
                self.db.append(index, leaf, kind, subject, envelope)
            except ConflictError:
                raise ConflictError(
                    "another process appended to this node's log; only one node process "
                    "may write it. Stop the other one and start again."
                ) from None
            tree.append(leaf)
            due = tree.size - self._last_size >= self.checkpoint_every or (
                self._clock() - self._since >= self.checkpoint_interval_s
            )
        if due:
            self.checkpoint()
        return index

    def checkpoint(self) -> SignedCheckpoint:
        """Sign and store a checkpoint of the current tree (a no-op if nothing changed)."""
        with self._lock:
            tree = self._sync()
            last = self.db.latest_checkpoint()
            if last is not None and last.tree_size == tree.size:
                return SignedCheckpoint.of(last)
            cp = Checkpoint(self.origin, tree.size, tree.root())
            row = CheckpointRow(
                tree_size=cp.size,
                root_hash=cp.root_hash,
                origin=self.origin,
                public_key=self.vkey,
                note=cp.sign(self.origin, self.key),
                created_at=datetime.now(UTC),
            )
            self.db.add_checkpoint(row)
            self._since = self._clock()
            self._last_size = cp.size
            log.info("log checkpoint", extra={"tree_size": cp.size})
            return SignedCheckpoint.of(row)
