"""The anchor outbox: idempotent by (log id, tree size), refuses a second history, persists."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.errors import ConflictError
from node.store import Outbox, Store

LOG = bytes(range(32))


def _root(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_enqueueing_a_checkpoint_twice_keeps_one_row() -> None:
    outbox = Outbox(Store.open("sqlite://"))
    first = outbox.enqueue(LOG, 64, _root(1))
    again = outbox.enqueue(LOG, 64, _root(1))
    assert first == again
    assert [(r.tree_size, r.status) for r in outbox.rows()] == [(64, "pending")]


def test_a_second_root_for_a_queued_size_is_refused() -> None:
    outbox = Outbox(Store.open("sqlite://"))
    outbox.enqueue(LOG, 64, _root(1))
    with pytest.raises(ConflictError, match="two histories"):
        outbox.enqueue(LOG, 64, _root(2))


def test_a_publisher_holding_a_stale_row_is_refused_and_changes_nothing() -> None:
    # Two publishers read the same pending row; the first signs it, the second must not
    # overwrite that transaction with its own (the row would then name a transaction
    # that may never be mined, while the first one is).
    outbox = Outbox(Store.open("sqlite://"))
    pending = outbox.enqueue(LOG, 64, _root(1))
    sent = outbox.signed(pending, sender="0x" + "11" * 20, nonce=7, tx_hash=_root(7), raw_tx=b"a")
    with pytest.raises(ConflictError, match="another publisher works this outbox"):
        outbox.signed(pending, sender="0x" + "11" * 20, nonce=8, tx_hash=_root(8), raw_tx=b"b")
    with pytest.raises(ConflictError, match=r"changed since it was read \(pending -> sent\)"):
        outbox.failed(pending, "stale")
    assert outbox.get(LOG, 64) == sent
    assert outbox.confirmed(sent).status == "confirmed"  # the fresh row moves on


@pytest.mark.parametrize(
    ("log_id", "size", "root", "message"),
    [
        (b"short", 1, _root(1), "log id must be 32 bytes"),
        (LOG, 0, _root(1), "tree size must be positive"),
        (LOG, 1, b"\x00", "root must be 32 bytes"),
    ],
)
def test_malformed_checkpoints_are_refused(
    log_id: bytes, size: int, root: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Outbox(Store.open("sqlite://")).enqueue(log_id, size, root)


def test_signed_transaction_survives_a_restart_and_a_retry_drops_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    with Store.open(url) as store:
        outbox = Outbox(store)
        row = outbox.enqueue(LOG, 10, _root(10))
        outbox.signed(row, sender="0x" + "ab" * 20, nonce=3, tx_hash=_root(7), raw_tx=b"\x02raw")
    with Store.open(url) as store:
        outbox = Outbox(store)
        (sent,) = outbox.rows("sent")
        assert (sent.nonce, sent.tx_hash, sent.raw_tx, sent.attempts) == (
            3,
            _root(7),
            b"\x02raw",
            1,
        )
        later = datetime(2030, 1, 1, tzinfo=UTC)
        retried = outbox.retry(sent, "nonce 3 was taken", later, drop_transaction=True)
        assert (retried.status, retried.tx_hash, retried.raw_tx) == ("pending", None, None)
        assert retried.next_attempt_at == later
        assert retried.last_error == "nonce 3 was taken"
