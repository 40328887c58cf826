"""experiment leases

A running experiment's lease (its runner and when the lease runs out, renewed while it
runs) and the node whose log records it, so several nodes can share one campaign's
tables: recovery takes back only experiments whose lease ran out, a runner whose lease
was taken over cannot record a result, and each experiment goes into one node's log.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns are a plain ADD COLUMN on both backends: no table copy on SQLite.
    op.add_column("experiment", sa.Column("lease_owner", sa.String(96), nullable=True))
    op.add_column(
        "experiment", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("experiment", sa.Column("recorded_by", sa.String(96), nullable=True))
