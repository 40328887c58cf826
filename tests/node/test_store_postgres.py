"""The store contract against a real PostgreSQL on loopback, in a fresh schema per run.

The server is found at ASI_TEST_POSTGRES_URL, else at the local trust-auth defaults
(user postgres, then root, database `test`); the tests skip, saying why, when none answers.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from lease_contract import LeaseContract
from store_contract import Database, StoreContract, TickingClock, make_pre_alembic, raw_execute

from node.errors import SchemaVersionError
from node.store import Store
from node.store.migrations import MIGRATIONS

pytestmark = pytest.mark.integration

CANDIDATE_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)

# The store's tables, each before any table it refers to.
CHILDREN_FIRST = (
    "llm_exchange",
    "log_entry",
    "log_checkpoint",
    "metric",
    "insight",
    "event",
    "experiment",
    "candidate",
    "code_blob",
    "campaign",
)


@pytest.fixture(scope="module")
def server_url() -> str:
    configured = os.environ.get("ASI_TEST_POSTGRES_URL")
    failures = []
    for url in (configured,) if configured else CANDIDATE_URLS:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return url
        except sa.exc.OperationalError as exc:
            failures.append(f"{url}: {str(exc.orig).strip().splitlines()[0]}")
        finally:
            engine.dispose()
    pytest.skip("no PostgreSQL reachable (" + "; ".join(failures) + ")")


@pytest.fixture(scope="module")
def schema(server_url: str) -> Iterator[Database]:
    """A schema of our own for this run, dropped with everything in it afterwards."""
    name = "asi_test_" + secrets.token_hex(4)
    admin = sa.create_engine(server_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        # Durability is not under test; skipping the commit flush keeps the suite quick.
        options = f"-c search_path={name} -c synchronous_commit=off"
        yield Database(server_url, {"options": options})
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        admin.dispose()


@pytest.fixture
def db(schema: Database) -> Database:
    """The run's schema, emptied: migrating once per run keeps the suite quick."""
    engine = sa.create_engine(schema.url, connect_args=schema.connect_args)
    try:
        with engine.begin() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            if "alembic_version" in tables:
                conn.execute(
                    sa.text("UPDATE alembic_version SET version_num = :head"),
                    {"head": MIGRATIONS[-1]},
                )
            for table in CHILDREN_FIRST:
                if table in tables:
                    conn.exec_driver_sql(f"DELETE FROM {table}")
    finally:
        engine.dispose()
    return schema


@pytest.fixture
def store(db: Database) -> Iterator[Store]:
    with db.open(now=TickingClock()) as s:
        yield s


class TestPostgresStore(StoreContract, LeaseContract):
    def test_newer_schema_is_refused(self, store: Store, db: Database) -> None:
        with store._engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
        with pytest.raises(SchemaVersionError, match=r"revision 0099.*Upgrade asi-node"):
            db.open()
        assert raw_execute(store, "SELECT version_num FROM alembic_version") == [("0099",)]

    def test_timestamps_come_back_in_utc(self, store: Store) -> None:
        camp = store.create_campaign("alpha", {})
        assert camp.created_at.utcoffset() is not None
        assert store.get_campaign(camp.id).created_at == camp.created_at


@pytest.fixture
def fresh(server_url: str) -> Iterator[Database]:
    """An empty schema of its own, dropped afterwards."""
    name = "asi_fresh_" + secrets.token_hex(4)
    admin = sa.create_engine(server_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        yield Database(server_url, {"options": f"-c search_path={name}"})
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        admin.dispose()


@pytest.mark.parametrize("start", [0, 4], ids=["empty", "pre-alembic-4"])
def test_nodes_upgrading_at_once_apply_each_revision_once(fresh: Database, start: int) -> None:
    """Four nodes open one database at the same moment: the advisory lock makes them
    take turns, so the first applies every revision (and adopts a pre-alembic database)
    and the others find it at head."""
    if start:
        engine = sa.create_engine(fresh.url, connect_args=fresh.connect_args)
        make_pre_alembic(engine, start)
        engine.dispose()
    stores = [Store(fresh.url, connect_args=fresh.connect_args) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def open_at_once(store: Store) -> tuple[str, ...]:
        barrier.wait()
        return tuple(r.id for r in store.upgrade_schema())

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            applied = list(pool.map(open_at_once, stores))
        assert sorted(applied, key=len) == [(), (), (), MIGRATIONS[start:]]
        assert raw_execute(stores[0], "SELECT version_num FROM alembic_version") == [
            (MIGRATIONS[-1],)
        ]
        if start:
            steps = raw_execute(stores[0], "SELECT version FROM schema_version ORDER BY version")
            assert [v for (v,) in steps] == [*range(1, start + 1), 7]
    finally:
        for store in stores:
            store.close()


def test_the_log_appends_checkpoints_and_audits_on_postgres(store: Store) -> None:
    from logfix import run_logged_campaign

    from attestation.audit import verify_bundle
    from attestation.keys import NodeKey
    from node.errors import ConflictError
    from node.tlog.log import NodeLog

    key = NodeKey.generate()
    tlog, cid = run_logged_campaign(store, key, candidates=1)
    verified = verify_bundle(tlog.export().to_bytes(), key.public.fingerprint)
    assert verified.size == tlog.size and cid in verified.records.campaigns
    # A second writer with a stale view is refused by the primary key, not forked.
    stale = NodeLog(store, key)
    tlog.append("event", _event(tlog.node_id))
    with pytest.raises(ConflictError, match="another process"):
        stale.append("event", _event(tlog.node_id))


def _event(node_id: str) -> dict[str, object]:
    from attestation.schema import NodeEventKind
    from node.tlog.records import event_statement

    return event_statement(node_id, NodeEventKind.NODE_KEY_CREATED)
