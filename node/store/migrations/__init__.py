"""Schema migrations: alembic revisions, run on the node's own connection under a lock.

`versions/` holds one revision per schema change, in one line and frozen: each spells out
its DDL with alembic's `op`, so the same revision runs on SQLite and PostgreSQL (steps
that alter a table use `op.batch_alter_table`, which recreates the table on SQLite and
is a plain ALTER on PostgreSQL). The SQLModel classes in `node.store` describe what the
code reads and writes today; when they change, a new revision brings old databases
along: write it by hand after the last one (the next number, `down_revision` the last),
its docstring's first line saying what it adds, and append its id to `MIGRATIONS`.

`upgrade` runs the alembic environment (`env.py`) programmatically, with no alembic.ini,
inside one write transaction that holds PostgreSQL's advisory lock or SQLite's write
lock: two processes opening one database at once apply each revision exactly once, and a
revision that fails leaves the database as it was. `alembic_version` records the
revision. A database at a revision this code does not know (a newer asi-node's) is
refused untouched; one holding our tables but no version is refused as not ours.

Databases made before alembic recorded their steps 1 to 6 in `schema_version`. An upgrade
adopts them in its locked transaction: it stamps `alembic_version` with the revision of
their highest step, then runs the later revisions. `schema_version` is kept as history
and never read again once `alembic_version` exists, with one last row added, version 7
"moved to alembic_version", so that an asi-node from before alembic refuses the database
as newer than itself instead of taking it for version 6.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from node.errors import SchemaVersionError, StoreError

log = logging.getLogger(__name__)

# Execution option read by the store's SQLite `begin` hook: a transaction that will
# write starts with BEGIN IMMEDIATE, taking the write lock up front, so two processes
# never both read and then both try to upgrade to writing (which SQLite answers with
# an immediate "database is locked" that no busy timeout can cure).
WRITE_OPTION = "asi_node_write"

# pg_advisory_xact_lock key ("asi-node" in ASCII): two nodes opening one PostgreSQL
# database at once apply each revision exactly once.
_PG_LOCK_KEY = 0x6173692D6E6F6465

# This package: env.py and versions/.
SCRIPT_LOCATION = Path(__file__).resolve().parent

# The revision ids, oldest first, one file each in versions/ (a test checks they agree).
MIGRATIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005", "0006", "0007")

VERSION_TABLE = "alembic_version"

# The pre-alembic record of applied steps: step n is revision _LEGACY_REVISIONS[n - 1].
LEGACY_TABLE = "schema_version"
_LEGACY_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")
_ADOPTED = len(_LEGACY_REVISIONS) + 1
_legacy_table = sa.Table(
    LEGACY_TABLE,
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

# Tables the revisions create; finding any of them in a database without a version
# table means it was made by something else, and migrating it would fail half-way.
_OWN_TABLES = frozenset(
    {
        "campaign",
        "code_blob",
        "candidate",
        "experiment",
        "metric",
        "insight",
        "event",
        "llm_exchange",
        "log_entry",
        "log_checkpoint",
        "governance_directive",
        "anchor_outbox",
    }
)


@dataclass(frozen=True)
class Revision:
    """One revision of the schema: its id and what it adds (its docstring's first line)."""

    id: str
    description: str


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against the revisions of this code.

    `current` is None for a database asi-node has never touched; `version` is its
    position among the revisions, counting from 1 (0 when empty); `legacy` says it is
    known only from the pre-alembic `schema_version` table (the next upgrade adopts it);
    `pending` are the revisions an upgrade to head applies, oldest first.
    """

    current: Revision | None
    version: int
    legacy: bool
    pending: tuple[Revision, ...]

    @property
    def at_head(self) -> bool:
        return not self.pending


@functools.cache
def revisions(script_location: Path = SCRIPT_LOCATION) -> tuple[Revision, ...]:
    """The revisions in `script_location`, oldest first (read once: they are code)."""
    script = ScriptDirectory.from_config(_config(script_location))
    heads = script.get_heads()
    if len(heads) != 1:
        raise StoreError(
            f"the migrations in {script_location} have {len(heads)} heads "
            f"({', '.join(heads)}); their revisions must form one line"
        )
    # walk_revisions goes from the head down.
    return tuple(Revision(s.revision, s.doc) for s in reversed(list(script.walk_revisions())))


def upgrade(
    engine: Engine, target: str | None = None, *, script_location: Path = SCRIPT_LOCATION
) -> tuple[Revision, ...]:
    """Bring the schema up to revision `target` (default: the head); return the
    revisions applied, oldest first (none when it was there already or beyond).

    One transaction under the lock holds the adoption of a pre-alembic database, every
    revision and the version update: a crash or a failed revision leaves the database as
    it was. Safe to call from several processes at once. Raises SchemaVersionError for a
    database at a revision this code does not know, StoreError for one holding our tables
    without a version; neither is changed.
    """
    chain = revisions(script_location)
    ids = [r.id for r in chain]
    if target is not None and target not in ids:
        raise ValueError(f"unknown revision {target!r}; known: {', '.join(ids)}")
    goal = ids.index(target) + 1 if target is not None else len(chain)
    with _migration_transaction(engine) as conn:
        state = _read_state(conn, chain)
        if state.version >= goal and not state.legacy:
            return ()
        config = _config(script_location)
        config.attributes["connection"] = conn
        if state.current is None:
            _refuse_foreign_tables(conn)
        elif state.legacy:
            _adopt(conn, config, state.current)
        if state.version < goal:
            command.upgrade(config, ids[goal - 1])
    applied = chain[state.version : goal]
    for rev in applied:
        log.info("schema migrated", extra={"revision": rev.id, "description": rev.description})
    return applied


def schema_state(engine: Engine, *, script_location: Path = SCRIPT_LOCATION) -> SchemaState:
    """The database's schema against the revisions, read without changing anything.

    Raises SchemaVersionError for a revision this code does not know.
    """
    chain = revisions(script_location)
    with engine.connect() as conn, conn.begin():
        return _read_state(conn, chain)


def current_version(engine: Engine) -> int:
    """The database's position in `MIGRATIONS`, counting from 1; 0 for a database
    asi-node has never touched. Raises SchemaVersionError for an unknown revision."""
    return schema_state(engine).version


def _config(script_location: Path) -> Config:
    config = Config()
    # The value goes through ConfigParser's interpolation, which would read a '%'.
    config.set_main_option("script_location", str(script_location).replace("%", "%%"))
    return config


def _read_state(conn: Connection, chain: tuple[Revision, ...]) -> SchemaState:
    ids = [r.id for r in chain]
    inspector = sa.inspect(conn)
    heads: list[str] = []
    if inspector.has_table(VERSION_TABLE):
        heads = [h for (h,) in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]
    legacy = False
    if heads:
        if len(heads) != 1 or heads[0] not in ids:
            raise _newer("revision " + ", ".join(heads))
        version = ids.index(heads[0]) + 1
    elif inspector.has_table(LEGACY_TABLE):
        found = conn.execute(sa.select(sa.func.max(_legacy_table.c.version))).scalar()
        step = int(found) if found is not None else 0
        if step > len(_LEGACY_REVISIONS) or (step and _LEGACY_REVISIONS[step - 1] not in ids):
            raise _newer(f"version {step} (of the {LEGACY_TABLE} table)")
        version = ids.index(_LEGACY_REVISIONS[step - 1]) + 1 if step else 0
        legacy = step > 0
    else:
        version = 0
    return SchemaState(
        current=chain[version - 1] if version else None,
        version=version,
        legacy=legacy,
        pending=chain[version:],
    )


def _newer(found: str) -> SchemaVersionError:
    return SchemaVersionError(
        f"the database schema is at {found}, which this asi-node does not know: it was "
        "written by a newer asi-node. Upgrade asi-node or use another database; nothing "
        "was changed."
    )


def _adopt(conn: Connection, config: Config, current: Revision) -> None:
    """Record a pre-alembic database's revision in alembic_version, and close its
    schema_version table to an asi-node from before alembic (see the module docstring)."""
    command.stamp(config, current.id)
    conn.execute(
        _legacy_table.insert().values(
            version=_ADOPTED, description="moved to alembic_version", applied_at=datetime.now(UTC)
        )
    )
    log.info("pre-alembic schema adopted", extra={"revision": current.id})


def _refuse_foreign_tables(conn: Connection) -> None:
    clash = sorted(_OWN_TABLES & set(sa.inspect(conn).get_table_names()))
    if clash:
        raise StoreError(
            f"the database already has tables {', '.join(clash)} but no {VERSION_TABLE} "
            "table: it was not created by asi-node. Use an empty database."
        )


@contextmanager
def _migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction fit for DDL on either backend.

    SQLite: foreign keys are switched off while the revisions run (a table recreated by
    batch mode would otherwise trip them, and the pragma is ignored inside a transaction)
    and checked with `foreign_key_check` before commit. PostgreSQL: an advisory lock makes
    concurrent upgrades take turns.
    """
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            _sqlite_pragma(conn, "PRAGMA foreign_keys = OFF")
        try:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY}
                    )
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(
                            f"a migration left {len(broken)} rows with dangling foreign keys "
                            f"(first: {tuple(broken[0])}); it was rolled back"
                        )
        finally:
            if sqlite:
                _sqlite_pragma(conn, "PRAGMA foreign_keys = ON")


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    # Straight to the driver: through SQLAlchemy the statement would open a transaction,
    # inside which SQLite ignores this pragma.
    driver = conn.connection.driver_connection
    if driver is None:
        raise StoreError("the SQLite connection was closed while migrating")
    driver.execute(pragma)
