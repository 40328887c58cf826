"""The alembic environment of the node's schema.

`node.store.migrations` runs it on a connection it has already locked and begun a
transaction on (`config.attributes["connection"]`), so the revisions, the version
table's update and any adoption of a pre-alembic database commit together. It is never
run on its own, nor offline (as SQL scripts).
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "the node's migrations run through node.store.migrations.upgrade (asi-node db upgrade)"
    )
# Both backends run DDL inside the caller's transaction (SQLite too, whatever alembic
# assumes of it by default).
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
