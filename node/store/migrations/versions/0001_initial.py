"""initial schema

Campaigns, content-addressed code, candidates, experiments, metrics, insights, events.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("config_hash", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent_campaign_id", sa.String(32), nullable=True),
        sa.Column("fork_tree_size", sa.BigInteger, nullable=True),
        # The last experiment sequence number handed out: enqueueing bumps it with one
        # UPDATE, which serialises concurrent enqueuers on PostgreSQL's row lock.
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.UniqueConstraint("name", name="uq_campaign_name"),
        sa.ForeignKeyConstraint(["parent_campaign_id"], ["campaign.id"], name="fk_campaign_parent"),
        sa.CheckConstraint(
            "status IN ('created', 'running', 'paused', 'stopped', 'done')",
            name="ck_campaign_status",
        ),
    )
    op.create_table(
        "code_blob",
        sa.Column("digest", sa.String(80), primary_key=True),
        sa.Column("code", sa.Text, nullable=False),
    )
    op.create_table(
        "candidate",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("campaign_id", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("motivation", sa.Text, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("parent_ids_json", sa.Text, nullable=False),
        sa.Column("options_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("campaign_id", "digest", name="uq_candidate_campaign_digest"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_candidate_campaign"),
        sa.ForeignKeyConstraint(["digest"], ["code_blob.digest"], name="fk_candidate_code"),
    )
    op.create_table(
        "experiment",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("campaign_id", sa.String(32), nullable=False),
        sa.Column("candidate_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_class", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("screen_json", sa.Text, nullable=True),
        sa.Column("train_json", sa.Text, nullable=True),
        sa.Column("metrics_json", sa.Text, nullable=True),
        sa.Column("fitness", sa.Float, nullable=True),
        sa.Column("fitness_version", sa.Text, nullable=True),
        sa.Column("timings_json", sa.Text, nullable=True),
        sa.Column("analysis", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("campaign_id", "seq", name="uq_experiment_campaign_seq"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_experiment_campaign"),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidate.id"], name="fk_experiment_candidate"),
        sa.CheckConstraint("role IN ('baseline', 'candidate', 'rerun')", name="ck_experiment_role"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'interrupted')",
            name="ck_experiment_status",
        ),
        sa.CheckConstraint("attempts >= 0", name="ck_experiment_attempts"),
    )
    # The claim query: a campaign's queued experiments in sequence order.
    op.create_index("ix_experiment_claim", "experiment", ["campaign_id", "status", "seq"])
    op.create_index("ix_experiment_candidate", "experiment", ["candidate_id"])
    op.create_table(
        "metric",
        sa.Column("experiment_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiment.id"], name="fk_metric_experiment"),
    )
    op.create_index("ix_metric_name_value", "metric", ["name", "value"])
    op.create_table(
        "insight",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("campaign_id", sa.String(32), nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_insight_campaign"),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiment.id"], name="fk_insight_experiment"),
    )
    op.create_index("ix_insight_campaign_created", "insight", ["campaign_id", "created_at"])
    op.create_table(
        "event",
        # Plain INTEGER so SQLite makes it the rowid alias and numbers it; SERIAL on PostgreSQL.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_event_campaign"),
    )
    op.create_index("ix_event_campaign", "event", ["campaign_id", "id"])
