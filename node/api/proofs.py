"""Read routes over what the node can prove: an experiment's log record with its
inclusion proof, the anchors of its checkpoints per target, and the audit of its own log.

The audit runs the offline auditor (`attestation.audit`) over the node's log read as a
line-delimited bundle, so its memory does not grow with the log. It is computed when
asked and kept for the checkpoint it covered: a reload costs nothing until the log
publishes a new checkpoint, and two readers that ask at once share one run. After an
audit that passed, the next one checks only the entries since, from its kept state.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Query

from attestation.audit import (
    AuditReport,
    LogState,
    StepSink,
    VerifiedLog,
    audit_with,
    verify_entries,
    verify_stream,
)
from node.errors import NotFoundError
from node.store import Store
from node.store.outbox import TARGETS, Outbox, OutboxRow
from node.tlog.audit_source import ViewLog, increment_from
from node.tlog.log import LogView

MAX_ANCHORS = 1000


class _ChunkReader(io.RawIOBase):
    """A read-only byte stream over an iterator of chunks (the bundle's lines)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def _anchor(row: OutboxRow) -> dict[str, Any]:
    return {
        "target": row.target,
        "log_id": row.log_id.hex(),
        "tree_size": row.tree_size,
        "root": row.root.hex(),
        "status": str(row.status),
        "attempts": row.attempts,
        "tx_hash": row.tx_hash.hex() if row.tx_hash is not None else None,
        "block_number": row.block_number,
        "anchor_count": row.anchor_count,
        "last_error": row.last_error,
        "created_at": row.created_at.isoformat(),
        "confirmed_at": row.confirmed_at.isoformat() if row.confirmed_at else None,
    }


def _audit_own(view: LogView, upto: int, kept: LogState | None) -> tuple[AuditReport, int]:
    """The audit of the node's log up to size `upto`, from `kept` on when given (the
    entries since, a consistency proof from it), else whole, streamed; and the size it
    started from."""
    if kept is not None and kept.checkpoint.size <= upto:
        state = kept

        def verify(passed: StepSink) -> VerifiedLog:
            head, entries = increment_from(ViewLog(view), state, upto)
            return verify_entries(head, entries, on_step=passed, resume=state)

        return audit_with("this node's log", verify), state.checkpoint.size
    stream = io.BufferedReader(_ChunkReader(view.export_lines()))
    return audit_with("this node's log", lambda p: verify_stream(stream, on_step=p)), 0


def proofs_router(view: LogView, log_store: Store) -> APIRouter:
    """Records with proofs, anchors and the log's audit, over the node's log."""
    router = APIRouter(tags=["transparency log"])
    audit_lock = threading.Lock()
    audited: dict[int, dict[str, Any]] = {}  # tree size of the checkpoint -> report
    kept: dict[str, LogState] = {}  # "state": where the last audit that passed ended

    @router.get("/experiments/{experiment_id}/record")
    def record(experiment_id: str) -> dict[str, Any]:
        """The experiment's entry in the node's log: its index, the signed envelope
        (base64) and the statement it carries, and its inclusion proof in the latest
        checkpoint (`proof` is null while no checkpoint covers the entry yet)."""
        entry = view.db.entry_for("experiment", experiment_id)
        if entry is None:
            raise NotFoundError(f"the node's log has no record of experiment {experiment_id}")
        envelope = json.loads(entry.envelope)
        statement = json.loads(base64.b64decode(envelope["payload"]))
        cp = view.latest_checkpoint()
        covered = cp is not None and entry.index < cp.tree_size
        proof = view.inclusion_proof(entry.index, cp.tree_size) if covered and cp else None
        return {
            "index": entry.index,
            "kind": entry.kind,
            "subject": entry.subject,
            "envelope": base64.b64encode(entry.envelope).decode(),
            "statement": statement,
            "leaf_hash": base64.b64encode(entry.leaf_hash).decode(),
            "tree_size": cp.tree_size if covered and cp else None,
            "root_hash": base64.b64encode(cp.root_hash).decode() if covered and cp else None,
            "proof": None if proof is None else [base64.b64encode(h).decode() for h in proof],
        }

    @router.get("/anchors")
    def anchors(
        target: str | None = Query(default=None, description=f"one of {', '.join(TARGETS)}"),
        limit: int = Query(default=100, ge=1, le=MAX_ANCHORS),
    ) -> dict[str, list[dict[str, Any]]]:
        """The newest anchors of the log's checkpoints per target (evm, icp), newest
        first: status, transaction, block, and the last error of one still waiting."""
        if target is not None and target not in TARGETS:
            raise NotFoundError(f"no anchoring target {target!r}; known: {', '.join(TARGETS)}")
        chosen = (target,) if target is not None else TARGETS
        return {
            t: [_anchor(r) for r in reversed(Outbox(log_store, t).rows())][:limit] for t in chosen
        }

    @router.get("/log/audit")
    def log_audit() -> dict[str, Any]:
        """The auditor's report on this node's own log up to its latest checkpoint: each
        step passed or the one that failed, and the attestation verdict (the TEE
        evidence's status); computed once per checkpoint, and after a first audit that
        passed only over the entries since (`from_size`), as `audit URL --state` does."""
        cp = view.latest_checkpoint()
        if cp is None:
            raise NotFoundError("the log has no checkpoint yet: nothing to audit")
        with audit_lock:
            if cp.tree_size not in audited:
                report, from_size = _audit_own(view, cp.tree_size, kept.get("state"))
                if report.ok and report.log is not None and report.log.state is not None:
                    kept["state"] = report.log.state
                audited.clear()
                audited[cp.tree_size] = report.as_json() | {"from_size": from_size}
            return audited[cp.tree_size]

    return router
