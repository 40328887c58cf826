"""Engines for SQLite and PostgreSQL, and database errors translated into the node's own.

SQLite gets WAL mode, foreign keys and a busy timeout on every connection, and explicit
transactions: a reading one starts with BEGIN, a writing one with BEGIN IMMEDIATE (see
`node.store.migrations.WRITE_OPTION`), so concurrent writers queue for the lock instead of
failing. PostgreSQL needs nothing special beyond psycopg.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from node.errors import ConflictError, CorruptStoreError, StoreError
from node.store.migrations import WRITE_OPTION


def parse_url(url: str) -> URL:
    """The URL, with `postgresql://` meaning psycopg 3 (SQLAlchemy would pick psycopg2)."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        # The text may hold a password, so it is not repeated.
        raise StoreError(
            "the database URL is not a URL; expected sqlite:///path or "
            "postgresql+psycopg://user@host/db"
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: URL) -> str:
    """The URL as it may be shown or logged: without its password."""
    return url.render_as_string(hide_password=True)


def is_in_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(url: URL, connect_args: dict[str, Any], busy_timeout_s: float) -> Engine:
    """An engine for `url`. An in-memory SQLite database lives in one shared connection,
    which the caller must use one transaction at a time."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        connect_args.setdefault("timeout", busy_timeout_s)
        # The pool hands connections between threads; each is used by one at a time.
        connect_args.setdefault("check_same_thread", False)
        if is_in_memory(url):
            engine = sa.create_engine(url, connect_args=connect_args, poolclass=StaticPool)
        else:
            engine = sa.create_engine(url, connect_args=connect_args)
        on_connect = functools.partial(_sqlite_on_connect, busy_timeout_s=busy_timeout_s)
        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    raise StoreError(
        f"unsupported database URL {safe_url(url)}: use sqlite:/// or postgresql+psycopg://"
    )


def translate(exc: SQLAlchemyError, url: URL) -> StoreError | ConflictError:
    """A database error as one of ours, with a message that says what to do."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    if isinstance(orig, sqlite3.DatabaseError):
        name = getattr(orig, "sqlite_errorname", "")
        where = url.database or "the in-memory database"
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return CorruptStoreError(
                f"{where} is damaged or is not an asi-node database ({orig}). Stop the "
                "node, move the file aside or restore it from a backup, then start again."
            )
        if name.startswith("SQLITE_CANTOPEN"):
            return StoreError(
                f"cannot open the database file {where} ({orig}); check that its "
                "directory exists and is writable (asi-node init creates it)"
            )
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return StoreError(
                f"{where} stayed locked by another process for too long ({orig}); retry"
            )
    if isinstance(exc, IntegrityError):
        return ConflictError(f"the change conflicts with stored data: {_first_line(orig)}")
    if isinstance(exc, sa.exc.OperationalError) and url.get_backend_name() == "postgresql":
        return StoreError(
            f"cannot use the database at {safe_url(url)}: {_first_line(orig)}. Check that "
            "the server is running and reachable and that the URL and credentials are right."
        )
    return StoreError(f"database error at {safe_url(url)}: {_first_line(orig or exc)}")


def _sqlite_on_connect(
    dbapi_connection: sqlite3.Connection, _record: object, *, busy_timeout_s: float
) -> None:
    # The driver's own transaction handling starts transactions late and never for
    # reads; switch it off and let the `begin` hook below say exactly when they start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        _use_wal(cursor, busy_timeout_s)
        # In WAL mode NORMAL loses at most the last commits on power loss, never integrity.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _use_wal(cursor: sqlite3.Cursor, busy_timeout_s: float) -> None:
    """Switch the file to WAL (once: the mode is stored in the file). The switch needs the
    file to itself and SQLite answers "database is locked" at once, without waiting out
    the busy timeout, while another process opens it; so wait here, until the file is in
    WAL mode (another process switched it) or the busy timeout has passed."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(conn: Connection) -> None:
    write = bool(conn.get_execution_options().get(WRITE_OPTION))
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _first_line(error: object) -> str:
    # A DBAPI error's text can run on with the statement and its parameters (code,
    # payloads); the first line says what went wrong.
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
