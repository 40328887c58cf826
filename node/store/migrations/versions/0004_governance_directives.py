"""governance directives

Governance directives the node applied, awaiting their on-chain acknowledgement.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "governance_directive",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        # The node's campaign id, or "*" for a directive to every campaign: no foreign key.
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.Text, nullable=False),
        sa.Column("height", sa.BigInteger, nullable=True),
        sa.Column("config_hash", sa.String(80), nullable=True),
        sa.Column("detail_json", sa.Text, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ack_ref", sa.Text, nullable=True),
        sa.UniqueConstraint("source", "campaign_id", "epoch", name="uq_directive_epoch"),
        sa.CheckConstraint("kind IN ('pause', 'resume', 'stop', 'fork')", name="ck_directive_kind"),
    )
    op.create_index("ix_directive_campaign", "governance_directive", ["campaign_id", "id"])
