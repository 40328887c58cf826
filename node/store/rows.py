"""What the store hands back: frozen copies of rows, never live ORM objects.

JSON columns come back parsed (a row's `config`, `metrics`, `screen` ... are values, not
text) and statuses, roles and origins as the schema's enums (`attestation.schema`), so
no caller decodes a column or compares a status as a string literal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from attestation.schema import CampaignStatus, CandidateOrigin, ExperimentRole, ExperimentStatus
from node.errors import CorruptStoreError, StoreError
from node.store.tables import Campaign, Candidate, Event, Experiment, Insight, LLMExchange


@dataclass(frozen=True)
class CampaignRow:
    """A campaign: its config (as created), the hash that names it, its status."""

    id: str
    name: str
    config: dict[str, Any]
    config_hash: str
    status: CampaignStatus
    created_at: datetime
    updated_at: datetime
    parent_campaign_id: str | None
    fork_tree_size: int | None


@dataclass(frozen=True)
class CandidateRow:
    """A proposed mixer in one campaign; its code is `Store.get_code(digest)`."""

    id: str
    campaign_id: str
    digest: str
    name: str
    motivation: str
    origin: CandidateOrigin
    parent_ids: tuple[str, ...]
    options: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ExperimentRow:
    """One run of a candidate on one seed; screen, train, metrics and timings are None
    until it finished."""

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
    llm: dict[str, Any] | None = None  # LLM calls, tokens, seconds, cost and exchange digests
    # The runner's lease ("<node>/<run token>"; kept after it finished: who ran it last)
    # and when it runs out (None once finished or requeued).
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    recorded_by: str | None = None  # the node whose log records it


@dataclass(frozen=True)
class Lease:
    """A runner's hold on the experiments it claims: they stay its own while it renews
    them within `seconds`. `node` is the node's id (one process per node home); `run`
    is new at every start, so a restarted node tells its own earlier claims (taken back
    at once) from the live ones of the process it is now."""

    node: str
    run: str
    seconds: float

    def __post_init__(self) -> None:
        if not self.node or "/" in self.node or not self.run:
            raise ValueError(f"a lease needs a node id without '/' and a run ({self!r})")
        if not self.seconds > 0:
            raise ValueError(f"a lease lasts a positive number of seconds, not {self.seconds}")

    @property
    def owner(self) -> str:
        """What the experiment row stores: `<node>/<run>`."""
        return f"{self.node}/{self.run}"


@dataclass(frozen=True)
class InsightRow:
    """A lesson the Analyst wrote down, fed back to the Researcher."""

    id: str
    campaign_id: str
    experiment_id: str | None
    text: str
    created_at: datetime


@dataclass(frozen=True)
class EventRow:
    """An audit-trail entry: a lifecycle event of the node or a campaign."""

    id: int
    campaign_id: str | None
    kind: str
    payload: dict[str, Any]
    created_at: datetime


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return _utc(value) if value is not None else None


def _parsed(raw: str | None, what: str) -> Any:
    """A JSON column's value (None for NULL); CorruptStoreError if it is not JSON."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise CorruptStoreError(
            f"{what} is not JSON: the database was changed outside asi-node. "
            "Restore it from a backup."
        ) from None


def campaign_row(r: Campaign) -> CampaignRow:
    return CampaignRow(
        id=r.id,
        name=r.name,
        config=_parsed(r.config_json, f"campaign {r.id}'s config"),
        config_hash=r.config_hash,
        status=CampaignStatus(r.status),
        created_at=_utc(r.created_at),
        updated_at=_utc(r.updated_at),
        parent_campaign_id=r.parent_campaign_id,
        fork_tree_size=r.fork_tree_size,
    )


def candidate_row(r: Candidate) -> CandidateRow:
    return CandidateRow(
        id=r.id,
        campaign_id=r.campaign_id,
        digest=r.digest,
        name=r.name,
        motivation=r.motivation,
        origin=CandidateOrigin(r.origin),
        parent_ids=tuple(_parsed(r.parent_ids_json, f"candidate {r.id}'s parents") or ()),
        options=_parsed(r.options_json, f"candidate {r.id}'s options") or {},
        created_at=_utc(r.created_at),
    )


def experiment_row(r: Experiment) -> ExperimentRow:
    return ExperimentRow(
        id=r.id,
        campaign_id=r.campaign_id,
        candidate_id=r.candidate_id,
        seq=r.seq,
        role=ExperimentRole(r.role),
        seed=r.seed,
        status=ExperimentStatus(r.status),
        failure_class=r.failure_class,
        attempts=r.attempts,
        screen=_parsed(r.screen_json, f"experiment {r.id}'s screen"),
        train=_parsed(r.train_json, f"experiment {r.id}'s training log"),
        metrics=_parsed(r.metrics_json, f"experiment {r.id}'s metrics"),
        fitness=r.fitness,
        fitness_version=r.fitness_version,
        timings=_parsed(r.timings_json, f"experiment {r.id}'s timings"),
        analysis=r.analysis,
        created_at=_utc(r.created_at),
        started_at=_utc_or_none(r.started_at),
        finished_at=_utc_or_none(r.finished_at),
        llm=_parsed(r.llm_json, f"experiment {r.id}'s LLM use"),
        lease_owner=r.lease_owner,
        lease_expires_at=_utc_or_none(r.lease_expires_at),
        recorded_by=r.recorded_by,
    )


def insight_row(r: Insight) -> InsightRow:
    return InsightRow(
        id=r.id,
        campaign_id=r.campaign_id,
        experiment_id=r.experiment_id,
        text=r.text,
        created_at=_utc(r.created_at),
    )


def event_row(r: Event) -> EventRow:
    if r.id is None:
        raise StoreError("an event was read back without its id")
    return EventRow(
        id=r.id,
        campaign_id=r.campaign_id,
        kind=r.kind,
        payload=_parsed(r.payload_json, f"event {r.id}'s payload"),
        created_at=_utc(r.created_at),
    )


@dataclass(frozen=True)
class LLMExchangeRow:
    """One LLM call an agent made: the full text, kept on this node only."""

    id: int
    campaign_id: str
    experiment_id: str | None
    role: str
    purpose: str
    model: str
    status: str
    error: str
    prompt: str
    completion: str
    prompt_sha256: str
    completion_sha256: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    structured: bool
    created_at: datetime


@dataclass(frozen=True)
class LLMUsage:
    """Summed LLM use of a campaign or an experiment."""

    calls: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def line(self) -> str:
        return (
            f"{self.calls} call(s) ({self.failed} failed), {self.tokens} tokens "
            f"({self.prompt_tokens} prompt, {self.completion_tokens} completion), "
            f"{self.seconds:.1f}s, ${self.cost_usd:.4f}"
        )


def llm_exchange_row(r: LLMExchange) -> LLMExchangeRow:
    if r.id is None:
        raise StoreError("an LLM exchange was read back without its id")
    return LLMExchangeRow(
        id=r.id,
        campaign_id=r.campaign_id,
        experiment_id=r.experiment_id,
        role=r.role,
        purpose=r.purpose,
        model=r.model,
        status=r.status,
        error=r.error,
        prompt=r.prompt,
        completion=r.completion,
        prompt_sha256=r.prompt_sha256,
        completion_sha256=r.completion_sha256,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        cost_usd=r.cost_usd,
        latency_s=r.latency_s,
        structured=r.structured,
        created_at=_utc(r.created_at),
    )
