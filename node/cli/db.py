"""`asi-node db current | upgrade`: the database's schema revision, and bringing it to head.

Every command that opens the node upgrades its database by itself; these two let an
operator look first and upgrade on purpose (before a rollout, or a database shared by
several nodes). `current` only reads. `upgrade` applies the missing revisions in one
locked transaction, adopting a database made before the schema moved to alembic. A
database written by a newer asi-node is refused by both, untouched.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.errors import StoreError

if TYPE_CHECKING:
    from node.store.migrations import Revision, SchemaState


def cmd_db(args: argparse.Namespace) -> int:
    from node.settings import load_settings
    from node.store import Store

    url = load_settings(args.home).database_url
    _require_file(url)
    with Store(url) as store:
        state = store.schema()
        print(f"database: {store.url}")
        if args.action == "current":
            print(f"revision: {_revision_line(state)}")
            print(f"at head: {_head_line(state)}")
            return 0
        applied = store.upgrade_schema()
        if state.legacy and state.current is not None:
            print(
                f"adopted the pre-alembic schema_version table as revision {_named(state.current)}"
            )
        for rev in applied:
            print(f"applied {_named(rev)}")
        head = store.schema().current
        head_name = _named(head) if head is not None else "none"
        print(f"at head: {head_name}" if applied else f"already at head: {head_name}")
    return 0


def _require_file(url: str) -> None:
    """A SQLite file must exist: connecting would create an empty one."""
    from node.store.database import is_in_memory, parse_url

    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and not is_in_memory(parsed):
        path = Path(parsed.database or "")
        if not path.exists():
            raise StoreError(
                f"there is no database at {path}: `asi-node init` creates it "
                "(or set database_url to the node's database)"
            )


def _named(rev: Revision) -> str:
    return f"{rev.id} ({rev.description})"


def _revision_line(state: SchemaState) -> str:
    if state.current is None:
        return "none (an empty database)"
    if state.legacy:
        return (
            f"{_named(state.current)}, from the pre-alembic schema_version table "
            "(the next upgrade adopts it)"
        )
    return _named(state.current)


def _head_line(state: SchemaState) -> str:
    if state.at_head:
        return "yes"
    ids = ", ".join(rev.id for rev in state.pending)
    count = len(state.pending)
    return f"no, {count} revision{'s' if count > 1 else ''} to apply ({ids}): asi-node db upgrade"


def add_parsers(sub: Any) -> None:
    """The `db` command (sub is the top-level subparsers)."""
    p = sub.add_parser("db", help="the database schema: its revision, upgrading it")
    dsub = p.add_subparsers(dest="action", required=True)
    dsub.add_parser("current", help="the database's schema revision and whether it is at head")
    dsub.add_parser("upgrade", help="apply the revisions the database lacks (up to head)")
    p.set_defaults(func=cmd_db)
