"""What the node's HTTP API answers, published in its OpenAPI schema: the store's rows
and the leaderboard's as they are, and the few shapes only the API has."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from attestation.schema import ExperimentStatus
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
    """A campaign and how many of its experiments are in each status."""

    experiments: dict[ExperimentStatus, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentDetail(ExperimentRow):
    """An experiment with its candidate and the candidate's code."""

    code: str = ""
    candidate: CandidateRow | None = None
