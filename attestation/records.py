"""What the log's statements say, and the rules an auditor holds them to.

Three predicate types: experiment records, node events (start, stop, attestation) and
the governance directives the node applied. The rules tie each experiment record to a
campaign the node declared in the same log, with the same config hash, at most once,
and to the node key that signed it: a record copied from another campaign or another log
fails here even though its signature is good. Each directive is logged once per source,
campaign and epoch.

Then the log is replayed as the node's watcher ran it: each source holds a campaign
paused or stopped from a pause or stop (for the campaign, or for all campaigns "*", or a
fork that pauses its parent) until that source resumes it; a stop is final; the
campaign may run only while no source holds it. An experiment record whose `started_at`
(record version 2) falls while its campaign was held fails the audit, naming the
directive. Version 1 records carry no start time and are not checked, so bundles from
before directives were logged still verify.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from attestation.errors import VerificationError

EXPERIMENT_PREDICATE = "https://asi-node.dev/ExperimentRecord/v1"
# Version 2 adds "started_at" (ISO 8601 with a time zone, or null for one never started).
RECORD_VERSIONS = (1, 2)
STARTS_SINCE = 2
EVENT_PREDICATE = "https://asi-node.dev/NodeEvent/v1"
DIRECTIVE_PREDICATE = "https://asi-node.dev/GovernanceDirective/v1"
KNOWN_PREDICATES = (EXPERIMENT_PREDICATE, EVENT_PREDICATE, DIRECTIVE_PREDICATE)
ALL_CAMPAIGNS = "*"
DIRECTIVE_KINDS = ("pause", "resume", "stop", "fork")
_HELD = {"pause": "paused", "stop": "stopped"}  # any other kind lets the campaign run
# Node events that open a campaign's run and so declare its config hash.
CAMPAIGN_START = "campaign_start"

STEP = "record rules"


@dataclass
class RecordSummary:
    """What the records in a verified log amount to."""

    campaigns: dict[str, str] = field(default_factory=dict)  # id -> config hash
    experiments: dict[str, int] = field(default_factory=dict)  # campaign id -> records
    events: dict[str, int] = field(default_factory=dict)  # event kind -> count
    directives: int = 0
    starts_checked: int = 0  # experiment records whose start was checked against them


@dataclass(frozen=True)
class AppliedDirective:
    """An applied directive as the paused-start replay (`holding`) needs it; `index` is
    its log entry (or any number giving the order applied, for ties)."""

    index: int
    source: str
    campaign: str
    epoch: int
    kind: str
    applied_at: datetime
    parent: str | None  # a fork's parent, when the fork pauses it
    ref: str

    def label(self) -> str:
        ref = f" ({self.ref})" if self.ref else ""
        return (
            f"{self.source} epoch {self.epoch} {self.kind}{ref}, log entry {self.index}, "
            f"applied {self.applied_at.isoformat()}"
        )


@dataclass(frozen=True)
class _Start:
    index: int
    campaign: str
    experiment: str
    seq: object
    at: datetime


def check_records(statements: Iterable[tuple[int, dict[str, Any]]], node_id: str) -> RecordSummary:
    """Apply the rules to (log index, statement) pairs in log order; VerificationError
    names the first entry that breaks one."""
    summary = RecordSummary()
    seen: set[tuple[str, str]] = set()
    directives: dict[tuple[str, str, int], AppliedDirective] = {}
    starts: list[_Start] = []
    for index, stmt in statements:
        ptype = stmt["predicateType"]
        pred = stmt["predicate"]
        where = f"entry {index}"
        if ptype not in KNOWN_PREDICATES:
            raise VerificationError(STEP, f"{where} has unknown record type {ptype!r}")
        if pred.get("node_id") != node_id:
            raise VerificationError(
                STEP, f"{where} names node {pred.get('node_id')!r}, not the signer {node_id}"
            )
        cid = pred.get("campaign_id")
        if ptype == DIRECTIVE_PREDICATE:
            d = _directive(index, pred)
            key = (d.source, d.campaign, d.epoch)
            if key in directives:
                raise VerificationError(
                    STEP,
                    f"{where} logs {d.source} epoch {d.epoch} {d.kind} of {d.campaign} again "
                    f"(first at entry {directives[key].index}): a directive is applied once",
                )
            directives[key] = d
            continue
        if ptype == EVENT_PREDICATE:
            kind = pred.get("event")
            if not isinstance(kind, str):
                raise VerificationError(STEP, f"{where} is a node event without a kind")
            summary.events[kind] = summary.events.get(kind, 0) + 1
            if kind == CAMPAIGN_START:
                chash = pred.get("config_hash")
                if not isinstance(cid, str) or not isinstance(chash, str):
                    raise VerificationError(STEP, f"{where} starts a campaign without id or hash")
                known = summary.campaigns.setdefault(cid, chash)
                if known != chash:
                    raise VerificationError(
                        STEP, f"{where} restarts campaign {cid} with another config hash"
                    )
            continue
        if pred.get("record_version") not in RECORD_VERSIONS:
            raise VerificationError(
                STEP,
                f"{where} is an experiment record of version {pred.get('record_version')!r}; "
                f"this auditor reads versions {RECORD_VERSIONS}: upgrade asi-node",
            )
        if not isinstance(cid, str) or cid not in summary.campaigns:
            raise VerificationError(
                STEP,
                f"{where} is a record of campaign {cid!r}, which this log never started: "
                "replayed from another campaign or log",
            )
        if pred.get("config_hash") != summary.campaigns[cid]:
            raise VerificationError(
                STEP, f"{where} carries another config hash than campaign {cid} was started with"
            )
        exp = pred.get("experiment_id")
        if not isinstance(exp, str) or (cid, exp) in seen:
            raise VerificationError(
                STEP, f"{where} records experiment {exp!r} of {cid} a second time (replayed)"
            )
        seen.add((cid, exp))
        start = _started(index, pred, cid, exp)
        if start is not None:
            starts.append(start)
        digest = str(pred.get("code_digest", "")).removeprefix("sha256:")
        if stmt["subject"][0]["digest"].get("sha256") != digest:
            raise VerificationError(STEP, f"{where}: the subject is not the record's code digest")
        summary.experiments[cid] = summary.experiments.get(cid, 0) + 1
    summary.directives = len(directives)
    summary.starts_checked = _check_starts(list(directives.values()), starts)
    return summary


def _time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise VerificationError(STEP, f"{what} is not a time")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise VerificationError(STEP, f"{what} is not an ISO 8601 time: {value!r}") from None
    if at.tzinfo is None:
        raise VerificationError(STEP, f"{what} has no time zone: {value!r}")
    return at


def _directive(index: int, pred: dict[str, Any]) -> AppliedDirective:
    """A directive entry's facts, checked for shape."""
    where = f"entry {index}"
    source, campaign, epoch, kind = (
        pred.get(k) for k in ("source", "campaign_id", "epoch", "kind")
    )
    if not isinstance(source, str) or not source or not isinstance(campaign, str) or not campaign:
        raise VerificationError(STEP, f"{where} is a directive without a source or campaign")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise VerificationError(STEP, f"{where} is a directive with epoch {epoch!r}")
    if kind not in DIRECTIVE_KINDS:
        raise VerificationError(STEP, f"{where} is a directive of unknown kind {kind!r}")
    applied_at = _time(pred.get("applied_at"), f"{where}'s applied_at")
    parent = None
    fork = pred.get("fork")
    if kind == "fork" and isinstance(fork, dict) and fork.get("pause_parent") is True:
        parent = fork.get("parent") if isinstance(fork.get("parent"), str) else None
        if parent is None:
            raise VerificationError(STEP, f"{where} is a fork that pauses an unnamed parent")
    ref = pred.get("ref")
    return AppliedDirective(
        index,
        source,
        campaign,
        epoch,
        str(kind),
        applied_at,
        parent,
        ref if isinstance(ref, str) else "",
    )


def _started(index: int, pred: dict[str, Any], cid: str, exp: str) -> _Start | None:
    """An experiment record's start, from record version 2 on (None: nothing to check)."""
    version = pred["record_version"]
    if version < STARTS_SINCE:
        return None
    if "started_at" not in pred:
        raise VerificationError(
            STEP, f"entry {index} is a version {version} record without started_at"
        )
    if pred["started_at"] is None:
        return None
    at = _time(pred["started_at"], f"entry {index}'s started_at")
    return _Start(index, cid, exp, pred.get("seq"), at)


def _check_starts(directives: Sequence[AppliedDirective], starts: Sequence[_Start]) -> int:
    """No experiment started while a directive held its campaign; returns how many were
    checked. Directives take effect in the order applied (log order breaks ties)."""
    timeline = sorted(directives, key=lambda d: (d.applied_at, d.index))
    for start in sorted(starts, key=lambda s: s.index):
        held = holding(timeline, start.campaign, start.at)
        if held is not None:
            raise VerificationError(
                STEP,
                f"experiment {start.experiment} (#{start.seq}) of campaign {start.campaign} "
                f"started at {start.at.isoformat()} while it was {_HELD.get(held.kind, 'paused')} "
                f"by {held.label()} (record at entry {start.index})",
            )
    return len(starts)


def holding(
    timeline: Sequence[AppliedDirective], campaign: str, at: datetime
) -> AppliedDirective | None:
    """The directive holding `campaign` paused or stopped at time `at`, if any: the
    sources' states replayed up to `at`, the most restrictive winning."""
    states: dict[tuple[str, str], tuple[str, AppliedDirective]] = {}
    for d in timeline:
        if d.applied_at > at:
            break
        if d.campaign in (campaign, ALL_CAMPAIGNS):
            _set(states, (d.source, d.campaign), _HELD.get(d.kind, "running"), d)
        if d.parent == campaign:
            _set(states, (d.source, campaign), "paused", d, only_stricter=True)
    held = [v for v in states.values() if v[0] != "running"]
    if not held:
        return None
    return max(held, key=lambda v: (v[0] == "stopped", v[1].applied_at))[1]


def _set(
    states: dict[tuple[str, str], tuple[str, AppliedDirective]],
    key: tuple[str, str],
    state: str,
    d: AppliedDirective,
    only_stricter: bool = False,
) -> None:
    current = states.get(key)
    if current is not None and current[0] == "stopped":
        return  # a stop is final
    if only_stricter and current is not None and current[0] != "running":
        return
    states[key] = (state, d)
