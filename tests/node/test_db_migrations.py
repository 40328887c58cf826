"""The schema as alembic revisions: a real node home made before alembic is upgraded in
place, older databases go through the revisions they lack, a newer one is refused
untouched, and `asi-node db current | upgrade` say so in one line each.

`data/home-schema-v6` is the node.db and config.toml of a home made by asi-node before
alembic (`init`, a quick campaign of two candidates run to its budget, and the outbox,
governance and LLM tables filled through that code's store API), so every table has rows.
"""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from store_contract import make_pre_alembic

from node.cli.main import main
from node.errors import SchemaVersionError
from node.store import Store
from node.store.migrations import MIGRATIONS, SCRIPT_LOCATION, revisions, upgrade

REAL_HOME = Path(__file__).parent / "data" / "home-schema-v6"
HEAD = MIGRATIONS[-1]
HEAD_NAME = f"{HEAD} ({revisions()[-1].description})"
# The last revision asi-node made before alembic: the real home's schema.
LEGACY = "0006"
LEGACY_NAME = f"{LEGACY} (anchor targets)"
AFTER_LEGACY = MIGRATIONS[MIGRATIONS.index(LEGACY) + 1 :]


def _revisions(ids: tuple[str, ...]) -> str:
    return f"{len(ids)} revision{'s' if len(ids) > 1 else ''} to apply ({', '.join(ids)})"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _copy_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(REAL_HOME, home)
    return home


@contextmanager
def _connect(path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection, closed afterwards (the last one to close folds the
    write-ahead log into the file, so its bytes are final)."""
    uri = f"file:{path}" + ("?mode=ro" if read_only else "")
    with closing(sqlite3.connect(uri, uri=True)) as conn, conn:
        yield conn


def _counts(path: Path) -> dict[str, int]:
    with _connect(path, read_only=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def _schema(path: Path) -> list[tuple[str, str, list[str]]]:
    """Every table and index of the database as SQLite spells it (but the version
    tables), each statement's lines sorted: batch mode writes a recreated table's CHECK
    constraints in set order, which varies from process to process."""
    with _connect(path, read_only=True) as conn:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name NOT IN "
            "('schema_version', 'alembic_version') ORDER BY type, name"
        )
        return [
            (kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
            for kind, name, sql in rows
        ]


def test_revision_files_are_the_listed_migrations() -> None:
    assert [r.id for r in revisions()] == list(MIGRATIONS)
    files = sorted(p.name for p in (SCRIPT_LOCATION / "versions").glob("[0-9]*.py"))
    assert [f.split("_")[0] for f in files] == list(MIGRATIONS)
    assert all(r.description and "\n" not in r.description for r in revisions())


def test_real_home_from_before_alembic_is_upgraded_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _copy_home(tmp_path)
    db = home / "node.db"
    before = _counts(db)
    assert "alembic_version" not in before and before["schema_version"] == 6
    assert all(before.values()), before  # every table of the real home has rows

    with Store.open(f"sqlite:///{db}") as store:
        state = store.schema()
        assert state.current is not None and state.current.id == HEAD
        assert state.at_head and not state.legacy
        assert [c.name for c in store.list_campaigns()] == ["mig"]

    after = _counts(db)
    assert after.pop("alembic_version") == 1
    # schema_version is kept, with one row closing it to asi-node from before alembic.
    assert after == before | {"schema_version": 7}
    with _connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
        last = conn.execute("SELECT version, description FROM schema_version WHERE version = 7")
        assert last.fetchall() == [(7, "moved to alembic_version")]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    code, out, err = run(capsys, "--home", str(home), "db", "current")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"database: sqlite:///{db}",
        f"revision: {HEAD_NAME}",
        "at head: yes",
    ]


def test_revisions_make_the_schema_the_code_before_alembic_made(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    engine = sa.create_engine(f"sqlite:///{fresh}")
    upgrade(engine, LEGACY)
    engine.dispose()
    real = _copy_home(tmp_path) / "node.db"
    assert _schema(fresh) == _schema(real)


def test_db_commands_adopt_a_home_from_before_alembic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _copy_home(tmp_path)
    code, out, _ = run(capsys, "--home", str(home), "db", "current")
    assert code == 0
    assert out.splitlines()[1:] == [
        f"revision: {LEGACY_NAME}, from the pre-alembic schema_version table "
        "(the next upgrade adopts it)",
        f"at head: no, {_revisions(AFTER_LEGACY)}: asi-node db upgrade",
    ]
    assert "alembic_version" not in _counts(home / "node.db")  # `current` only reads

    code, out, _ = run(capsys, "--home", str(home), "db", "upgrade")
    assert code == 0
    assert out.splitlines()[1:] == [
        f"adopted the pre-alembic schema_version table as revision {LEGACY_NAME}",
        *(f"applied {r.id} ({r.description})" for r in revisions() if r.id in AFTER_LEGACY),
        f"at head: {HEAD_NAME}",
    ]
    code, out, _ = run(capsys, "--home", str(home), "db", "upgrade")
    assert (code, out.splitlines()[1:]) == (0, [f"already at head: {HEAD_NAME}"])


def test_intermediate_database_from_before_alembic_upgrades_through_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "node.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    make_pre_alembic(engine, 4)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO governance_directive (source, campaign_id, epoch, kind, ref, "
            "detail_json, applied_at) VALUES ('evm', '*', 1, 'pause', 'p1', '{}', "
            "'2025-06-01 00:00:00')"
        )
    engine.dispose()

    code, out, _ = run(capsys, "--home", str(tmp_path), "db", "current")
    assert code == 0
    assert out.splitlines()[1:] == [
        "revision: 0004 (governance directives), from the pre-alembic schema_version table "
        "(the next upgrade adopts it)",
        f"at head: no, {_revisions(MIGRATIONS[4:])}: asi-node db upgrade",
    ]
    code, out, _ = run(capsys, "--home", str(tmp_path), "db", "upgrade")
    assert code == 0
    assert out.splitlines()[1:] == [
        "adopted the pre-alembic schema_version table as revision 0004 (governance directives)",
        "applied 0005 (anchor outbox)",
        "applied 0006 (anchor targets)",
        *(f"applied {r.id} ({r.description})" for r in revisions()[6:]),
        f"at head: {HEAD_NAME}",
    ]
    counts = _counts(db)
    assert counts["governance_directive"] == 1 and counts["anchor_outbox"] == 0
    with _connect(db) as conn:
        steps = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [v for (v,) in steps] == [1, 2, 3, 4, 7]
    with Store.open(f"sqlite:///{db}") as store:
        assert store.upgrade_schema() == ()


def _stamped_newer(tmp_path: Path) -> Path:
    db = tmp_path / "node.db"
    with Store.open(f"sqlite:///{db}") as store:
        store.create_campaign("alpha", {})
    with _connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    return db


@pytest.mark.parametrize("action", ["current", "upgrade"])
def test_newer_database_is_refused_untouched_by_the_db_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    db = _stamped_newer(tmp_path)
    before = db.read_bytes()
    code, out, err = run(capsys, "--home", str(tmp_path), "db", action)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("asi-node: error: the database schema is at revision 0099")
    assert "Upgrade asi-node" in err
    with pytest.raises(SchemaVersionError, match="revision 0099"):
        Store.open(f"sqlite:///{db}")
    assert db.read_bytes() == before


def test_db_commands_name_an_unreachable_database_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, "--home", str(tmp_path / "absent"), "db", "current")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "no database at" in err and "asi-node init" in err
    assert not (tmp_path / "absent").exists()

    monkeypatch.setenv("ASI_NODE_DATABASE_URL", "postgresql+psycopg://asi:hunter2@127.0.0.1:1/x")
    code, out, err = run(capsys, "--home", str(tmp_path), "db", "upgrade")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "postgresql+psycopg://asi:***@127.0.0.1:1/x" in err and "hunter2" not in err


def _upgrade_at_once(
    url: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue[tuple[str, ...]]
) -> None:
    with Store(url) as store:
        start.wait()
        out.put(tuple(r.id for r in store.upgrade_schema()))


@pytest.mark.parametrize("step", [0, 4], ids=["empty", "pre-alembic-4"])
def test_processes_opening_at_once_apply_each_revision_once(tmp_path: Path, step: int) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    if step:
        engine = sa.create_engine(url)
        make_pre_alembic(engine, step)
        engine.dispose()
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    out: multiprocessing.Queue[tuple[str, ...]] = ctx.Queue()
    procs = [ctx.Process(target=_upgrade_at_once, args=(url, start, out)) for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    applied = sorted((out.get(timeout=60) for _ in procs), key=len)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert applied == [(), (), MIGRATIONS[step:]]
    with Store(url) as store:
        assert store.schema().current == revisions()[-1]
