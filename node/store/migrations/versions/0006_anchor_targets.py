"""anchor targets

A second anchoring target: the outbox is keyed by (target, log, size); existing rows are
the EVM chain's. ICP receipts: the log's anchor count and the certified time.

SQLite recreates the table (from the frozen 0005 definition, so its CHECK constraints and
index survive); PostgreSQL alters it in place, swapping the primary key.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def _v5_outbox_table(pk_name: str) -> sa.Table:
    """anchor_outbox as revision 0005 left it (for the table copy on SQLite; frozen)."""
    return sa.Table(
        "anchor_outbox",
        sa.MetaData(),
        sa.Column("log_id", sa.String(66), nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("root", sa.String(66), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("sender", sa.String(42), nullable=True),
        sa.Column("nonce", sa.BigInteger, nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("raw_tx", sa.Text, nullable=True),
        sa.Column("block_number", sa.BigInteger, nullable=True),
        sa.Column("block_hash", sa.String(66), nullable=True),
        sa.Column("gas_used", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        # Named, so that this revision can drop it by name on either backend.
        sa.PrimaryKeyConstraint("log_id", "tree_size", name=pk_name),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'confirmed', 'failed')", name="ck_anchor_outbox_status"
        ),
        sa.CheckConstraint("tree_size > 0", name="ck_anchor_outbox_tree_size"),
        sa.Index("ix_anchor_outbox_status", "status", "next_attempt_at"),
    )


def upgrade() -> None:
    # PostgreSQL named 0005's key anchor_outbox_pkey; SQLite's is unnamed and is dropped
    # from the copy the table is rebuilt from.
    pk = sa.inspect(op.get_bind()).get_pk_constraint("anchor_outbox").get("name")
    pk = pk or "anchor_outbox_pkey"
    with op.batch_alter_table("anchor_outbox", copy_from=_v5_outbox_table(pk)) as batch:
        batch.add_column(sa.Column("target", sa.String(16), nullable=False, server_default="evm"))
        batch.add_column(sa.Column("anchor_count", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("certified_at_ns", sa.BigInteger, nullable=True))
        batch.drop_constraint(pk, type_="primary")
        batch.create_primary_key("pk_anchor_outbox", ["target", "log_id", "tree_size"])
        batch.create_check_constraint("ck_anchor_outbox_target", "target IN ('evm', 'icp')")
