"""The tables as SQLModel classes: what the code reads and writes today.

`node.store.migrations` owns the DDL (each alembic revision's columns frozen in its file); a test
checks that the migrated schema and these classes agree, so a change here needs a revision too.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

_Tz = sa.DateTime(timezone=True)


class Campaign(SQLModel, table=True):
    __tablename__ = "campaign"

    id: str = Field(primary_key=True, sa_type=sa.String(32))
    name: str = Field(sa_type=sa.Text)
    config_json: str = Field(sa_type=sa.Text)
    config_hash: str = Field(sa_type=sa.String(80))
    status: str = Field(sa_type=sa.String(16))
    created_at: datetime = Field(sa_type=_Tz)
    updated_at: datetime = Field(sa_type=_Tz)
    parent_campaign_id: str | None = Field(default=None, sa_type=sa.String(32))
    fork_tree_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    last_seq: int = 0


class CodeBlob(SQLModel, table=True):
    __tablename__ = "code_blob"

    digest: str = Field(primary_key=True, sa_type=sa.String(80))
    code: str = Field(sa_type=sa.Text)


class Candidate(SQLModel, table=True):
    __tablename__ = "candidate"

    id: str = Field(primary_key=True, sa_type=sa.String(32))
    campaign_id: str = Field(sa_type=sa.String(32))
    digest: str = Field(sa_type=sa.String(80))
    name: str = Field(sa_type=sa.Text)
    motivation: str = Field(sa_type=sa.Text)
    origin: str = Field(sa_type=sa.String(16))
    parent_ids_json: str = Field(sa_type=sa.Text)
    options_json: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(sa_type=_Tz)


class Experiment(SQLModel, table=True):
    __tablename__ = "experiment"

    id: str = Field(primary_key=True, sa_type=sa.String(32))
    campaign_id: str = Field(sa_type=sa.String(32))
    candidate_id: str = Field(sa_type=sa.String(32))
    seq: int
    role: str = Field(sa_type=sa.String(16))
    seed: int = Field(sa_type=sa.BigInteger)
    status: str = Field(sa_type=sa.String(16))
    failure_class: str | None = Field(default=None, sa_type=sa.String(32))
    attempts: int = 0
    screen_json: str | None = Field(default=None, sa_type=sa.Text)
    train_json: str | None = Field(default=None, sa_type=sa.Text)
    metrics_json: str | None = Field(default=None, sa_type=sa.Text)
    fitness: float | None = None
    fitness_version: str | None = Field(default=None, sa_type=sa.Text)
    timings_json: str | None = Field(default=None, sa_type=sa.Text)
    analysis: str = Field(default="", sa_type=sa.Text)
    created_at: datetime = Field(sa_type=_Tz)
    started_at: datetime | None = Field(default=None, sa_type=_Tz)
    finished_at: datetime | None = Field(default=None, sa_type=_Tz)
    llm_json: str | None = Field(default=None, sa_type=sa.Text)
    lease_owner: str | None = Field(default=None, sa_type=sa.String(96))
    lease_expires_at: datetime | None = Field(default=None, sa_type=_Tz)
    recorded_by: str | None = Field(default=None, sa_type=sa.String(96))


class Metric(SQLModel, table=True):
    __tablename__ = "metric"

    experiment_id: str = Field(primary_key=True, sa_type=sa.String(32))
    name: str = Field(primary_key=True, sa_type=sa.String(128))
    value: float


class Insight(SQLModel, table=True):
    __tablename__ = "insight"

    id: str = Field(primary_key=True, sa_type=sa.String(32))
    campaign_id: str = Field(sa_type=sa.String(32))
    experiment_id: str | None = Field(default=None, sa_type=sa.String(32))
    text: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(sa_type=_Tz)


class Event(SQLModel, table=True):
    __tablename__ = "event"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str | None = Field(default=None, sa_type=sa.String(32))
    kind: str = Field(sa_type=sa.String(64))
    payload_json: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(sa_type=_Tz)


class LLMExchange(SQLModel, table=True):
    __tablename__ = "llm_exchange"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(sa_type=sa.String(32))
    experiment_id: str | None = Field(default=None, sa_type=sa.String(32))
    role: str = Field(sa_type=sa.String(16))
    purpose: str = Field(sa_type=sa.String(16))
    model: str = Field(sa_type=sa.Text)
    status: str = Field(sa_type=sa.String(16))
    error: str = Field(sa_type=sa.Text)
    prompt: str = Field(sa_type=sa.Text)
    completion: str = Field(sa_type=sa.Text)
    prompt_sha256: str = Field(sa_type=sa.String(80))
    completion_sha256: str = Field(sa_type=sa.String(80))
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    structured: bool
    created_at: datetime = Field(sa_type=_Tz)
