"""The node's domain, typed once: what it signs into its log, stores and serves.

The statuses, roles and kinds the node compares are `StrEnum`s; the three predicates of
its log (experiment records, node events, applied governance directives) are frozen,
versioned pydantic models. The node's record writer builds these models and signs their
RFC 8785 JSON; the auditor validates every statement it reads with the same models
before it applies its rules, so nothing binds writer and reader but this module, and a
verifier written in another language needs only its JSON Schema (`json_schema`, printed
by `asi-node schema`).

Validation is strict (JSON types as written: no number for a string, no string for a
number, no unknown fields, times with a zone) and names the field that broke it.
`SCHEMA_VERSION` is the version of this schema as a whole, named in every log bundle;
`ExperimentRecord.record_version` versions the experiment record within it (version 2
added `started_at`, which version 1 records lack; version 3 added `verifies`, the earlier
record a verification stage re-trains; version 4 admits candidates of origin `peer`,
imported from another node's log, which an auditor of version 3 does not know; version 5
added `replicates`, the record of another node's log that a peer candidate's run
re-trains; version 6 added `peer_parents`, the records in other nodes' logs of the parents
that came from peers).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from attestation.errors import FormatError

SCHEMA_VERSION: Final = 1
SCHEMA_ID: Final = f"https://asi-node.dev/schema/v{SCHEMA_VERSION}"

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
EXPERIMENT_PREDICATE: Final = "https://asi-node.dev/ExperimentRecord/v1"
EVENT_PREDICATE: Final = "https://asi-node.dev/NodeEvent/v1"
DIRECTIVE_PREDICATE: Final = "https://asi-node.dev/GovernanceDirective/v1"
RECORD_VERSION: Final = 6  # what the node writes; auditors read RECORD_VERSIONS
RECORD_VERSIONS: Final = (1, 2, 3, 4, 5, 6)
STARTS_SINCE: Final = 2  # the first record version carrying started_at
VERIFIES_SINCE: Final = 3  # the first record version carrying verifies
PEERS_SINCE: Final = 4  # the first record version whose candidate may come from a peer
REPLICATES_SINCE: Final = 5  # the first record version carrying replicates
PEER_PARENTS_SINCE: Final = 6  # the first record version carrying peer_parents
ALL_CAMPAIGNS: Final = "*"  # a directive for every campaign (the guardian's pause-all)


class ExperimentStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped from outside; runs again


FINISHED_STATUSES: Final = frozenset(
    {ExperimentStatus.DONE, ExperimentStatus.FAILED, ExperimentStatus.INTERRUPTED}
)
PENDING_STATUSES: Final = frozenset({ExperimentStatus.QUEUED, ExperimentStatus.RUNNING})


class ExperimentRole(StrEnum):
    BASELINE = "baseline"  # a baseline mixer, on the campaign's seeds
    CANDIDATE = "candidate"  # a proposal's first run
    RERUN = "rerun"  # a promising candidate on another seed, before promotion


class CandidateOrigin(StrEnum):
    BASELINE = "baseline"
    OFFLINE = "offline"  # the offline Researcher's grammar
    LLM = "llm"  # the LLM Researcher (or the Engineer's repair of its code)
    PEER = "peer"  # imported from a followed peer's log


class CampaignStatus(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"  # by governance: final
    DONE = "done"  # its budget spent; runs again when the budget is raised


class DirectiveKind(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    FORK = "fork"


class NodeEventKind(StrEnum):
    NODE_KEY_CREATED = "node_key_created"
    CAMPAIGN_START = "campaign_start"  # declares the campaign's config hash in the log
    CAMPAIGN_STOP = "campaign_stop"
    ATTESTATION = "attestation"  # TEE evidence bound to the node's keys


Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
NonNegative = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class CandidateRef(_Model):
    id: str
    name: str
    origin: CandidateOrigin


class Fitness(_Model):
    version: str
    value: float


class Seeds(_Model):
    train: int
    heldout: str  # how the held-out seed was chosen; the seed itself stays on the node


class LLMExchangeDigest(_Model):
    role: str
    purpose: str
    status: str
    prompt: Digest | Hex32
    completion: Digest | Hex32
    tokens: NonNegative


class LLMUse(_Model):
    """An experiment's LLM calls as counts and digests; the text stays on the node."""

    calls: NonNegative
    failed: NonNegative
    prompt_tokens: NonNegative
    completion_tokens: NonNegative
    cost_usd: float
    seconds: float
    models: list[str]
    exchanges: list[LLMExchangeDigest]


class Researcher(_Model):
    mode: Literal["offline", "llm"]
    models: list[str]
    llm: LLMUse | None


class ScreenCheck(_Model):
    name: str
    passed: bool
    detail: str


class Screening(_Model):
    """The programmatic screen's checks; `repair` lists the Engineer's repair rounds."""

    model_config = ConfigDict(extra="allow")

    checks: list[ScreenCheck] = []
    failure: str | None = None
    message: str = ""


class Verifies(_Model):
    """The record a verification stage's experiment re-trains: an experiment of an earlier
    campaign, by its entry's RFC 6962 leaf hash in the same log."""

    campaign_id: str
    experiment_id: str
    leaf_hash: Hex32


class Replicates(_Model):
    """The record of another node's log that a peer candidate's run re-trains: its log
    (origin line), entry index and RFC 6962 leaf hash, its experiment and campaign there,
    and the fitness it states, which this run is compared with."""

    log_origin: str
    leaf_index: NonNegative
    leaf_hash: Hex32
    campaign_id: str
    experiment_id: str
    fitness: float | None


class PeerParent(_Model):
    """A parent of the candidate that came from a peer: its id here (one of `parent_ids`)
    and the record it was imported from, in the peer's log (origin line, entry index, RFC
    6962 leaf hash), with that record's campaign and experiment there."""

    candidate_id: str
    log_origin: str
    leaf_index: NonNegative
    leaf_hash: Hex32
    campaign_id: str
    experiment_id: str


class Environment(_Model):
    """Package versions and the device: no host names, no paths."""

    model_config = ConfigDict(extra="allow")

    python: str
    implementation: str
    packages: dict[str, str | None]
    device: dict[str, Any]


class ExperimentRecord(_Model):
    """One finished experiment (DESIGN section 4), the predicate of EXPERIMENT_PREDICATE."""

    record_version: Literal[1, 2, 3, 4, 5, 6]
    node_id: str
    campaign_id: str
    config_hash: str
    experiment_id: str
    seq: Annotated[int, Field(ge=1)]
    role: ExperimentRole
    candidate: CandidateRef
    parent_ids: list[str]
    code_digest: Digest
    motivation: str
    screening: Screening | None
    training: dict[str, Any] | None
    train_config_digest: Digest
    seeds: Seeds
    task_spec_digest: Digest
    metrics: dict[str, float] | None
    fitness: Fitness | None
    timings: dict[str, float] | None
    environment: Environment
    researcher: Researcher
    status: ExperimentStatus
    failure_class: str | None
    attempts: NonNegative
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None
    verifies: Verifies | None = None
    replicates: Replicates | None = None
    peer_parents: list[PeerParent] | None = None

    @model_validator(mode="after")
    def _fields_of_the_version(self) -> ExperimentRecord:
        # An "after" check: a "before" one would make the fields validate in Python mode,
        # where strict mode refuses the ISO 8601 text of a JSON time.
        if self.record_version >= STARTS_SINCE and "started_at" not in self.model_fields_set:
            raise ValueError("a version 2 record must carry started_at (null if never started)")
        if self.record_version >= VERIFIES_SINCE and "verifies" not in self.model_fields_set:
            raise ValueError("a version 3 record must carry verifies (null if it verifies none)")
        peer = self.candidate.origin is CandidateOrigin.PEER
        if peer and self.record_version < PEERS_SINCE:
            raise ValueError(
                f"a version {self.record_version} record cannot name a peer candidate "
                f"(version {PEERS_SINCE} and later can)"
            )
        since = REPLICATES_SINCE
        if self.record_version >= since and "replicates" not in self.model_fields_set:
            raise ValueError(
                "a version 5 record must carry replicates (null if it replicates none)"
            )
        if self.record_version < since and "replicates" in self.model_fields_set:
            raise ValueError(f"a version {self.record_version} record cannot carry replicates")
        if self.replicates is not None and not peer:
            raise ValueError("only a peer candidate's record replicates another node's record")
        return self._peer_parents_of_the_version()

    def _peer_parents_of_the_version(self) -> ExperimentRecord:
        since = PEER_PARENTS_SINCE
        if self.record_version >= since and "peer_parents" not in self.model_fields_set:
            raise ValueError(
                "a version 6 record must carry peer_parents (an empty list if none came "
                "from a peer)"
            )
        if self.record_version < since and "peer_parents" in self.model_fields_set:
            raise ValueError(f"a version {self.record_version} record cannot carry peer_parents")
        for parent in self.peer_parents or ():
            if parent.candidate_id not in self.parent_ids:
                raise ValueError(
                    f"peer_parents names {parent.candidate_id}, which is not in parent_ids"
                )
        return self


class NodeEvent(_Model):
    """A node event: its key created, a campaign's run started or stopped, TEE evidence."""

    node_id: str
    event: NodeEventKind
    at: AwareDatetime
    campaign_id: str | None = None
    config_hash: str | None = None
    reason: str | None = None
    evidence: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _fields_of_the_kind(self) -> NodeEvent:
        needs = {
            NodeEventKind.CAMPAIGN_START: ("campaign_id", "config_hash"),
            NodeEventKind.CAMPAIGN_STOP: ("campaign_id", "reason"),
            NodeEventKind.ATTESTATION: ("evidence",),
        }.get(self.event, ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.event} event needs {', '.join(missing)}")
        return self


class ForkFacts(_Model):
    """What a fork did (or why it was refused), as its directive's log entry says."""

    parent: str | None = None
    child: str | None = None
    position: int | str | None = None
    checkpoint_root: str | None = None
    experiments: list[str] | int | None = None
    pause_parent: bool | None = None
    child_paused: bool | None = None  # the child waits for a resume (controller v2 forks)
    refused: str | None = None


class DirectiveRecord(_Model):
    """A governance directive as the node applied it, the predicate of DIRECTIVE_PREDICATE."""

    node_id: str
    source: Annotated[str, StringConstraints(min_length=1)]
    campaign_id: Annotated[str, StringConstraints(min_length=1)]
    epoch: Annotated[int, Field(ge=1)]
    kind: DirectiveKind
    ref: str
    height: int | None
    config_hash: str | None
    applied_at: AwareDatetime
    fork: ForkFacts | None = None
    unknown_campaign: bool | None = None
    superseded_by: int | None = None  # overtaken before it took effect: recorded, not obeyed
    # The directive (logged before) left its source before it was final (a reorganisation
    # removed its block): from this entry's applied_at on, it holds nothing.
    undone: bool | None = None
    stop_latency_s: float | None = None
    within_deadline: bool | None = None

    @model_validator(mode="after")
    def _a_pausing_fork_names_its_parent(self) -> DirectiveRecord:
        fork = self.fork
        if fork is not None and fork.pause_parent and fork.parent is None:
            raise ValueError("a fork that pauses its parent must name the parent")
        return self


class Subject(_Model):
    name: str
    digest: Annotated[dict[str, str], Field(min_length=1)]


class _Statement(_Model):
    model_config = ConfigDict(populate_by_name=True)

    type_: Literal["https://in-toto.io/Statement/v1"] = Field(alias="_type")
    subject: Annotated[list[Subject], Field(min_length=1)]


class ExperimentStatement(_Statement):
    predicateType: Literal["https://asi-node.dev/ExperimentRecord/v1"]
    predicate: ExperimentRecord


class EventStatement(_Statement):
    predicateType: Literal["https://asi-node.dev/NodeEvent/v1"]
    predicate: NodeEvent


class DirectiveStatement(_Statement):
    predicateType: Literal["https://asi-node.dev/GovernanceDirective/v1"]
    predicate: DirectiveRecord


Statement = Annotated[
    ExperimentStatement | EventStatement | DirectiveStatement,
    Field(discriminator="predicateType"),
]
Record = ExperimentRecord | NodeEvent | DirectiveRecord
_STATEMENT: TypeAdapter[ExperimentStatement | EventStatement | DirectiveStatement] = TypeAdapter(
    Statement
)


class SchemaError(FormatError):
    """A statement that does not fit the schema; the message names the field.

    The audit reports it at its record-schema step. A record version this code does not
    read needs a newer asi-node (upgrade); any other misfit is malformed: do not trust
    the statement.
    """


def parse_statement(payload: bytes) -> ExperimentStatement | EventStatement | DirectiveStatement:
    """A signed payload as one of the log's statements; SchemaError naming the first field
    that is missing, mistyped or unknown."""
    try:
        return _STATEMENT.validate_json(payload)
    except ValidationError as exc:
        raise SchemaError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first error of `exc` as 'field path: what is wrong'."""
    error = exc.errors(include_url=False)[0]
    path = ".".join(
        str(part)
        for part in error["loc"]
        if not (isinstance(part, str) and part.startswith("https://"))
    )
    what = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        what = "missing"
    elif error["type"] == "extra_forbidden":
        what = "not a field of this record"
    return f"{path or 'statement'}: {what}" + (
        f" (got {error['input']!r})"
        if error["type"] not in ("missing", "extra_forbidden") and _short(error.get("input"))
        else ""
    )


def _short(value: object) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 60


def statement_dict(
    subject_name: str, sha256_hex: str, predicate_type: str, record: Record
) -> dict[str, Any]:
    """An in-toto Statement v1 about one subject, with `record` as its predicate (the
    JSON the writer signs)."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": sha256_hex}}],
        "predicateType": predicate_type,
        # Unset optional fields stay out; a version 2 record sets started_at, null or not.
        "predicate": record.model_dump(mode="json", exclude_unset=True),
    }


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the log's statements, with `$id` naming its version."""
    schema = _STATEMENT.json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "asi-node log statements",
        "description": (
            "An entry of an asi-node transparency log is a DSSE envelope whose payload is "
            "one of these in-toto Statement v1 documents, serialised as RFC 8785 JSON."
        ),
        **schema,
    }
