"""The rules an auditor holds a log's statements to, once they fit the schema.

The statements arrive typed (`attestation.schema`: experiment records, node events, the
governance directives the node applied). The rules tie each experiment record to a
campaign the node declared in the same log, with the same config hash, at most once, and
to the node key that signed it: a record copied from another campaign or another log
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

from attestation.errors import VerificationError
from attestation.schema import (
    ALL_CAMPAIGNS,
    CampaignStatus,
    DirectiveKind,
    DirectiveStatement,
    EventStatement,
    ExperimentStatement,
    NodeEventKind,
)

Statement = ExperimentStatement | EventStatement | DirectiveStatement
# What a directive makes of its campaign; a resume or a fork lets it run.
_HELD = {DirectiveKind.PAUSE: CampaignStatus.PAUSED, DirectiveKind.STOP: CampaignStatus.STOPPED}
_RUNS = CampaignStatus.RUNNING

STEP = "record rules"


@dataclass
class RecordSummary:
    """What the records in a verified log amount to."""

    campaigns: dict[str, str] = field(default_factory=dict)  # id -> config hash
    experiments: dict[str, int] = field(default_factory=dict)  # campaign id -> records
    events: dict[str, int] = field(default_factory=dict)  # event kind -> count
    directives: int = 0
    starts_checked: int = 0  # experiment records whose start was checked against them
    verifications: int = 0  # records of a verification stage linked to the record they verify


@dataclass(frozen=True)
class AppliedDirective:
    """An applied directive as the paused-start replay (`holding`) needs it; `index` is
    its log entry (or any number giving the order applied, for ties)."""

    index: int
    source: str
    campaign: str
    epoch: int
    kind: DirectiveKind
    applied_at: datetime
    parent: str | None  # a fork's parent, when the fork pauses it
    ref: str
    superseded: bool = False  # overtaken before it took effect: holds nothing
    held_child: bool = False  # a fork whose child waits for a resume
    undone: bool = False  # the entry undoing the directive of its source, campaign and epoch

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
    seq: int
    at: datetime


def check_records(
    statements: Iterable[tuple[int, Statement]],
    node_id: str,
    leaves: Sequence[bytes] = (),
) -> RecordSummary:
    """Apply the rules to (log index, statement) pairs in log order; VerificationError
    names the first entry that breaks one. `leaves` are the entries' RFC 6962 leaf
    hashes, by index: a verification stage's record names the record it verifies by one."""
    summary = RecordSummary()
    by_leaf: dict[bytes, tuple[int, ExperimentStatement]] = {}
    seen: set[tuple[str, str]] = set()
    directives: dict[tuple[str, str, int, bool], AppliedDirective] = {}
    starts: list[_Start] = []
    for index, stmt in statements:
        pred = stmt.predicate
        where = f"entry {index}"
        if pred.node_id != node_id:
            raise VerificationError(
                STEP, f"{where} names node {pred.node_id!r}, not the signer {node_id}"
            )
        if isinstance(stmt, DirectiveStatement):
            d = _directive(index, stmt)
            key = (d.source, d.campaign, d.epoch, d.undone)
            if key in directives:
                raise VerificationError(
                    STEP,
                    f"{where} logs {d.source} epoch {d.epoch} {d.kind} of {d.campaign} again "
                    f"(first at entry {directives[key].index}): a directive is applied once",
                )
            directives[key] = d
            continue
        if isinstance(stmt, EventStatement):
            event = stmt.predicate
            summary.events[event.event] = summary.events.get(event.event, 0) + 1
            if event.event is NodeEventKind.CAMPAIGN_START:
                assert event.campaign_id is not None and event.config_hash is not None
                known = summary.campaigns.setdefault(event.campaign_id, event.config_hash)
                if known != event.config_hash:
                    raise VerificationError(
                        STEP,
                        f"{where} restarts campaign {event.campaign_id} with another config hash",
                    )
            continue
        record = stmt.predicate
        cid = record.campaign_id
        if cid not in summary.campaigns:
            raise VerificationError(
                STEP,
                f"{where} is a record of campaign {cid!r}, which this log never started: "
                "replayed from another campaign or log",
            )
        if record.config_hash != summary.campaigns[cid]:
            raise VerificationError(
                STEP, f"{where} carries another config hash than campaign {cid} was started with"
            )
        exp = record.experiment_id
        if (cid, exp) in seen:
            raise VerificationError(
                STEP, f"{where} records experiment {exp!r} of {cid} a second time (replayed)"
            )
        seen.add((cid, exp))
        if record.started_at is not None:
            starts.append(_Start(index, cid, exp, record.seq, record.started_at))
        digest = record.code_digest.removeprefix("sha256:")
        if stmt.subject[0].digest.get("sha256") != digest:
            raise VerificationError(STEP, f"{where}: the subject is not the record's code digest")
        summary.experiments[cid] = summary.experiments.get(cid, 0) + 1
        if record.verifies is not None:
            _check_link(where, stmt, by_leaf)
            summary.verifications += 1
        if index < len(leaves):
            by_leaf[leaves[index]] = (index, stmt)
    summary.directives = len(directives)
    summary.starts_checked = _check_starts(list(directives.values()), starts)
    return summary


def _check_link(
    where: str, stmt: ExperimentStatement, by_leaf: dict[bytes, tuple[int, ExperimentStatement]]
) -> None:
    """A verification record's `verifies` names an earlier experiment record of this log,
    of another campaign, scored, with the same code: the discovery it re-trains."""
    record = stmt.predicate
    link = record.verifies
    assert link is not None
    found = by_leaf.get(bytes.fromhex(link.leaf_hash))
    if found is None:
        raise VerificationError(
            STEP,
            f"{where} verifies leaf {link.leaf_hash[:16]}..., which is no earlier experiment "
            "record of this log",
        )
    index, source = found
    earlier = source.predicate
    if (earlier.campaign_id, earlier.experiment_id) != (link.campaign_id, link.experiment_id):
        raise VerificationError(
            STEP,
            f"{where} names experiment {link.experiment_id} of {link.campaign_id}, but its leaf "
            f"is entry {index}, experiment {earlier.experiment_id} of {earlier.campaign_id}",
        )
    if earlier.campaign_id == record.campaign_id:
        raise VerificationError(STEP, f"{where} verifies a record of its own campaign")
    if earlier.code_digest != record.code_digest:
        raise VerificationError(
            STEP, f"{where} trains other code than the record it verifies (entry {index})"
        )
    if earlier.fitness is None:
        raise VerificationError(
            STEP, f"{where} verifies entry {index}, which was never scored: nothing to verify"
        )


def _directive(index: int, stmt: DirectiveStatement) -> AppliedDirective:
    d = stmt.predicate
    parent = None
    if d.kind is DirectiveKind.FORK and d.fork is not None and d.fork.pause_parent:
        parent = d.fork.parent
    held_child = d.kind is DirectiveKind.FORK and d.fork is not None and bool(d.fork.child_paused)
    return AppliedDirective(
        index,
        d.source,
        d.campaign_id,
        d.epoch,
        d.kind,
        d.applied_at,
        parent,
        d.ref,
        superseded=d.superseded_by is not None,
        held_child=held_child,
        undone=bool(d.undone),
    )


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
                f"started at {start.at.isoformat()} while it was "
                f"{_HELD.get(held.kind, CampaignStatus.PAUSED)} "
                f"by {held.label()} (record at entry {start.index})",
            )
    return len(starts)


def holding(
    timeline: Sequence[AppliedDirective], campaign: str, at: datetime
) -> AppliedDirective | None:
    """The directive holding `campaign` paused or stopped at time `at`, if any: the
    sources' states replayed up to `at`, the most restrictive winning."""
    states: dict[tuple[str, str], tuple[CampaignStatus, AppliedDirective]] = {}
    undone = {(d.source, d.campaign, d.epoch) for d in timeline if d.undone and d.applied_at <= at}
    for d in timeline:
        if d.applied_at > at:
            break
        if d.superseded or d.undone or (d.source, d.campaign, d.epoch) in undone:
            continue  # never in effect, or no longer: as if never applied
        if d.campaign in (campaign, ALL_CAMPAIGNS):
            state = CampaignStatus.PAUSED if d.held_child else _HELD.get(d.kind, _RUNS)
            _set(states, (d.source, d.campaign), state, d)
        if d.parent == campaign:
            _set(states, (d.source, campaign), CampaignStatus.PAUSED, d, only_stricter=True)
    held = [v for v in states.values() if v[0] is not _RUNS]
    if not held:
        return None
    return max(held, key=lambda v: (v[0] is CampaignStatus.STOPPED, v[1].applied_at))[1]


def _set(
    states: dict[tuple[str, str], tuple[CampaignStatus, AppliedDirective]],
    key: tuple[str, str],
    state: CampaignStatus,
    d: AppliedDirective,
    only_stricter: bool = False,
) -> None:
    current = states.get(key)
    if current is not None and current[0] is CampaignStatus.STOPPED:
        return  # a stop is final
    if only_stricter and current is not None and current[0] is not _RUNS:
        return
    states[key] = (state, d)
