"""Revision 0006 upgrades a revision-0005 anchor outbox in place: its rows become the EVM
target's, and each checkpoint can then be queued once per target. On SQLite and on a
real PostgreSQL (a schema of its own, dropped afterwards; skipped when none answers)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from node.errors import ConflictError
from node.store import Outbox, Store
from node.store.migrations import MIGRATIONS, current_version, upgrade

LOG = bytes(range(32))
POSTGRES_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)
V5 = "0005"  # the anchor outbox as its first revision made it


def _hex(n: int) -> str:
    return "0x" + n.to_bytes(32, "big").hex()


def _v5_rows(engine: sa.Engine) -> None:
    """A revision-0005 database holding a confirmed and a sent EVM anchor."""
    assert [r.id for r in upgrade(engine, V5)] == list(MIGRATIONS[: MIGRATIONS.index(V5) + 1])
    when = datetime(2025, 6, 1, tzinfo=UTC)
    rows = [
        {"size": 4, "status": "confirmed", "tx": _hex(44), "block": 7},
        {"size": 8, "status": "sent", "tx": _hex(88), "block": None},
    ]
    with engine.begin() as conn:
        for r in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO anchor_outbox (log_id, tree_size, root, status, attempts, "
                    "next_attempt_at, tx_hash, block_number, created_at) VALUES (:log, :size, "
                    ":root, :status, 1, :when, :tx, :block, :when)"
                ),
                {"log": "0x" + LOG.hex(), "root": _hex(r["size"]), "when": when, **r},
            )


def _check_upgraded(store: Store, engine: sa.Engine) -> None:
    assert current_version(engine) == len(MIGRATIONS)
    inspector = sa.inspect(engine)
    pk = inspector.get_pk_constraint("anchor_outbox")
    assert pk["constrained_columns"] == ["target", "log_id", "tree_size"]
    checks = {c["name"] for c in inspector.get_check_constraints("anchor_outbox")}
    assert {"ck_anchor_outbox_status", "ck_anchor_outbox_tree_size"} <= checks
    assert "ck_anchor_outbox_target" in checks
    assert "ix_anchor_outbox_status" in {i["name"] for i in inspector.get_indexes("anchor_outbox")}

    evm, icp = Outbox(store), Outbox(store, "icp")
    kept = [(r.target, r.tree_size, r.status, r.tx_hash, r.block_number) for r in evm.rows()]
    assert kept == [
        ("evm", 4, "confirmed", bytes.fromhex(_hex(44)[2:]), 7),
        ("evm", 8, "sent", bytes.fromhex(_hex(88)[2:]), None),
    ]
    assert icp.rows() == []
    root4 = bytes.fromhex(_hex(4)[2:])
    queued = icp.enqueue(LOG, 4, root4)  # the same checkpoint, now for the second target
    assert (queued.target, queued.status, queued.anchor_count) == ("icp", "pending", None)
    done = icp.published(queued, anchor_count=1, certified_at_ns=1_764_000_000 * 10**9)
    assert (done.status, done.anchor_count, done.certified_at_ns) == (
        "confirmed",
        1,
        1_764_000_000 * 10**9,
    )
    with pytest.raises(ConflictError, match="two histories"):
        evm.enqueue(LOG, 4, bytes(32))
    assert len(evm.rows()) == 2 and len(icp.rows()) == 1
    with pytest.raises(IntegrityError), engine.begin() as conn:  # the new CHECK holds
        conn.execute(sa.text("UPDATE anchor_outbox SET target = 'sol' WHERE tree_size = 8"))


def test_sqlite_outbox_is_upgraded_in_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = sa.create_engine(url)
    _v5_rows(engine)
    with Store.open(url) as store:
        _check_upgraded(store, engine)
    engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[tuple[str, dict[str, str]]]:
    configured = os.environ.get("ASI_TEST_POSTGRES_URL")
    for server in (configured,) if configured else POSTGRES_URLS:
        admin = sa.create_engine(server, connect_args={"connect_timeout": 3})
        try:
            with admin.begin() as conn:
                name = "asi_v6_" + secrets.token_hex(4)
                conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        except sa.exc.OperationalError:
            admin.dispose()
            continue
        try:
            yield server, {"options": f"-c search_path={name}"}
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
            admin.dispose()
        return
    pytest.skip("no PostgreSQL reachable on 127.0.0.1:5432")


@pytest.mark.integration
def test_postgresql_outbox_is_upgraded_in_place(pg_url: tuple[str, dict[str, str]]) -> None:
    url, connect_args = pg_url
    engine = sa.create_engine(url, connect_args=connect_args)
    _v5_rows(engine)
    with Store.open(url, connect_args=connect_args) as store:
        _check_upgraded(store, engine)
    engine.dispose()
