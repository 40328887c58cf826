"""What the node's HTTP API answers, published in its OpenAPI schema: the store's rows
and the leaderboard's as they are, and the few shapes only the API has."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from attestation.schema import ExperimentStatus
from node.campaign.discovery import Discovery
from node.store import CampaignRow, CandidateRow, ExperimentRow


class Health(BaseModel):
    """ "ok", or "degraded" with the problems; `node` is what the daemon's last
    governance poll found (absent under `serve`)."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "degraded"]
    campaigns: int
    node: dict[str, Any] | None = None
    problems: list[str] | None = None


@dataclass(frozen=True)
class CampaignDetail(CampaignRow):
    """A campaign, how many of its experiments are in each status, and its discovery
    rate (promoted candidates per compute-hour, node.campaign.discovery)."""

    experiments: dict[ExperimentStatus, int] = field(default_factory=dict)
    discovery: Discovery | None = None


@dataclass(frozen=True)
class ExperimentDetail(ExperimentRow):
    """An experiment with its candidate and the candidate's code."""

    code: str = ""
    candidate: CandidateRow | None = None
