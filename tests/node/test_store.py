"""The store on SQLite: the shared contract, plus files, processes, corruption, migrations."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from lease_contract import LeaseContract
from store_contract import (
    Database,
    StoreContract,
    TickingClock,
    make_pre_alembic,
    proposal,
    raw_execute,
)

from node.errors import CorruptStoreError, SchemaVersionError, StoreError
from node.store import Store
from node.store.migrations import (
    MIGRATIONS,
    SCRIPT_LOCATION,
    Revision,
    current_version,
    revisions,
    upgrade,
)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'node.db'}")


@pytest.fixture
def store(db: Database) -> Iterator[Store]:
    with db.open(now=TickingClock()) as s:
        yield s


class TestSqliteStore(StoreContract, LeaseContract):
    pass


def test_in_memory_store_works_for_tests() -> None:
    with Store.open("sqlite://") as s:
        camp = s.create_campaign("alpha", {"x": 1})
        cand = s.add_candidate(camp.id, proposal())
        s.enqueue_experiment(camp.id, cand.id, "baseline", 0)
        claimed = s.claim_next_experiment(camp.id)
        assert claimed is not None and claimed.status == "running"
        assert s.get_campaign("alpha") == camp


def test_sqlite_runs_in_wal_mode_with_foreign_keys(store: Store, tmp_path: Path) -> None:
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert (tmp_path / "node.db-wal").exists()


def _claim_all(
    url: str,
    campaign_id: str,
    start: multiprocessing.synchronize.Event,
    out: multiprocessing.Queue[list[str]],
) -> None:
    with Store.open(url) as s:
        start.wait()
        ids = []
        while (exp := s.claim_next_experiment(campaign_id)) is not None:
            ids.append(exp.id)
        out.put(ids)


def test_worker_processes_never_claim_the_same_experiment(store: Store, db: Database) -> None:
    camp = store.create_campaign("alpha", {})
    cand = store.add_candidate(camp.id, proposal())
    for seed in range(60):
        store.enqueue_experiment(camp.id, cand.id, "candidate", seed)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    out: multiprocessing.Queue[list[str]] = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(db.url, camp.id, start, out)) for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    claimed = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    every = [e for ids in claimed for e in ids]
    assert len(every) == len(set(every)) == 60
    assert all(e.status == "running" and e.attempts == 1 for e in store.list_experiments(camp.id))


def test_random_bytes_are_a_corrupt_store_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    path.write_bytes(os.urandom(16384))
    with pytest.raises(CorruptStoreError) as info:
        Store.open(f"sqlite:///{path}")
    message = str(info.value)
    assert str(path) in message
    assert "not an asi-node database" in message
    assert "move the file aside or restore it from a backup" in message


def test_damaged_pages_are_a_corrupt_store(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    with Store.open(f"sqlite:///{path}") as s:
        s.create_campaign("alpha", {})
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xab" * (len(data) - 4096)  # keep the header, wreck every other page
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="malformed"), Store.open(f"sqlite:///{path}") as s:
        s.list_campaigns()


def test_missing_directory_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory exists"):
        Store.open(f"sqlite:///{tmp_path / 'absent' / 'node.db'}")


def test_unreachable_postgres_is_named_without_its_password() -> None:
    url = "postgresql+psycopg://asi:hunter2@127.0.0.1:1/asi"
    with pytest.raises(StoreError) as info:
        Store.open(url, connect_args={"connect_timeout": 5})
    message = str(info.value)
    assert "hunter2" not in message
    assert "postgresql+psycopg://asi:***@127.0.0.1:1/asi" in message
    assert "server is running" in message


def test_plain_postgresql_url_uses_psycopg() -> None:
    assert Store("postgresql://u:pw@localhost/x").url == "postgresql+psycopg://u:***@localhost/x"


@pytest.mark.parametrize("url", ["not a url", "mysql://root:pw@db/asi"])
def test_unusable_url_is_a_store_error_without_secrets(url: str) -> None:
    with pytest.raises(StoreError, match="sqlite:///") as info:
        Store(url)
    assert "pw" not in str(info.value)


def _with_revision(tmp_path: Path, description: str, body: str) -> Path:
    """The node's migrations plus a revision "extra" after the head, whose upgrade() runs
    `body`: what a later asi-node brings."""
    where = tmp_path / "migrations"
    shutil.copytree(SCRIPT_LOCATION, where, ignore=shutil.ignore_patterns("__pycache__"))
    (where / "versions" / "extra.py").write_text(
        f'"""{description}"""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "extra"\ndown_revision = "{MIGRATIONS[-1]}"\n\n\n'
        "def upgrade() -> None:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return where


ADD_COLUMN = """
with op.batch_alter_table("candidate") as batch:
    batch.add_column(sa.Column("family", sa.Text, nullable=True))
"""

BROKEN = """
op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
raise RuntimeError("revision failed half-way")
"""


def test_empty_database_is_migrated_to_head(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'node.db'}")
    assert current_version(engine) == 0
    with Store.open(f"sqlite:///{tmp_path / 'node.db'}") as store:
        assert store.schema().current == revisions()[-1]
    assert current_version(engine) == len(MIGRATIONS)


def test_older_database_is_upgraded_keeping_its_data(store: Store, tmp_path: Path) -> None:
    camp = store.create_campaign("alpha", {})
    cand = store.add_candidate(camp.id, proposal())
    later = _with_revision(tmp_path, "candidate family", ADD_COLUMN)
    applied = upgrade(store._engine, script_location=later)
    assert applied == (Revision("extra", "candidate family"),)
    columns = {c["name"] for c in sa.inspect(store._engine).get_columns("candidate")}
    assert "family" in columns
    assert store.get_candidate(cand.id) == cand
    assert upgrade(store._engine, script_location=later) == ()


def test_failed_revision_leaves_the_database_as_it_was(store: Store, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="half-way"):
        upgrade(store._engine, script_location=_with_revision(tmp_path, "broken", BROKEN))
    assert current_version(store._engine) == len(MIGRATIONS)
    assert "half_done" not in sa.inspect(store._engine).get_table_names()


def test_newer_database_is_refused_untouched(store: Store, db: Database) -> None:
    store.create_campaign("alpha", {})
    with store._engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(SchemaVersionError, match=r"revision 0099.*Upgrade asi-node"):
        db.open()
    with pytest.raises(SchemaVersionError, match="revision 0099"):
        current_version(store._engine)
    assert raw_execute(store, "SELECT version_num FROM alembic_version") == [("0099",)]
    assert [c.name for c in store.list_campaigns()] == ["alpha"]


def test_pre_alembic_database_newer_than_its_last_step_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = sa.create_engine(url)
    make_pre_alembic(engine, len(MIGRATIONS))
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO schema_version VALUES (9, 'future', '2030-01-01')")
    with pytest.raises(SchemaVersionError, match=r"version 9 .*Upgrade asi-node"):
        Store.open(url)
    assert "alembic_version" not in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_database_made_by_something_else_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE campaign (id TEXT)")
    with pytest.raises(StoreError, match="not created by asi-node"):
        Store.open(url)
