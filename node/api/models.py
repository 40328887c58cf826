"""What the node's HTTP API answers: response models, published in its OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from attestation.schema import CampaignStatus, CandidateOrigin, ExperimentRole, ExperimentStatus
from node.campaign.leaderboard import Standing


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class Health(_Out):
    """ "ok", or "degraded" with the problems; `node` is what the daemon's last
    governance poll found (absent under `serve`)."""

    status: Literal["ok", "degraded"]
    campaigns: int
    node: dict[str, Any] | None = None
    problems: list[str] | None = None


class Campaign(_Out):
    id: str
    name: str
    config: dict[str, Any]
    config_hash: str
    status: CampaignStatus
    created_at: datetime
    updated_at: datetime
    parent_campaign_id: str | None
    fork_tree_size: int | None


class CampaignDetail(Campaign):
    experiments: dict[ExperimentStatus, int]  # how many experiments are in each status


class Candidate(_Out):
    id: str
    campaign_id: str
    digest: str
    name: str
    motivation: str
    origin: CandidateOrigin
    parent_ids: list[str]
    options: dict[str, Any]
    created_at: datetime


class Experiment(_Out):
    id: str
    campaign_id: str
    candidate_id: str
    seq: int
    role: ExperimentRole
    seed: int
    status: ExperimentStatus
    failure_class: str | None
    attempts: int
    screen: dict[str, Any] | None
    train: dict[str, Any] | None
    metrics: dict[str, float] | None
    fitness: float | None
    fitness_version: str | None
    timings: dict[str, float] | None
    analysis: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    llm: dict[str, Any] | None


class ExperimentDetail(Experiment):
    code: str
    candidate: Candidate


class LeaderboardRow(_Out):
    candidate_id: str
    name: str
    origin: CandidateOrigin
    status: Standing
    failure_class: str | None
    accuracies: dict[str, float]
    score: float | None
    state_size: int | None
    params: int | None
    fitness: float | None
    seeds: int
    experiment_id: str | None
