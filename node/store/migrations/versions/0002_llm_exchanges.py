"""llm exchanges

What the LLM agents saw and said (kept locally), and each experiment's LLM usage.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llm_exchange",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.String(32), nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("completion", sa.Text, nullable=False),
        sa.Column("prompt_sha256", sa.String(80), nullable=False),
        sa.Column("completion_sha256", sa.String(80), nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("structured", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_llm_campaign"),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiment.id"], name="fk_llm_experiment"),
    )
    op.create_index("ix_llm_exchange_campaign", "llm_exchange", ["campaign_id", "id"])
    op.create_index("ix_llm_exchange_experiment", "llm_exchange", ["experiment_id"])
    with op.batch_alter_table("experiment") as batch:
        # Counts and digests of the experiment's LLM exchanges; the text stays in llm_exchange.
        batch.add_column(sa.Column("llm_json", sa.Text, nullable=True))
