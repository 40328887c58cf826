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

`RecordRules` applies them entry by entry, keeping compact state (no statement is kept),
and can go on from the `RulesState` of an earlier audit.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

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


def _key64(*parts: str) -> int:
    """A 64-bit digest of an experiment's (campaign, experiment) ids: the replay check's
    set holds these, not the strings (a collision, about 1 in 10^10 at a million records,
    could only fail an honest log, never pass a replayed one)."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    since = at - _EPOCH  # `since // _US`, without the division of timedeltas
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


@dataclass(frozen=True)
class RulesState:
    """What the rules need of the entries already checked, to check the next ones: the
    campaigns, every directive, the experiments seen (as `_key64` digests) and each
    campaign's latest start (microseconds). The links of verification records to
    records before this point are not checked again (they need those records)."""

    size: int
    summary: RecordSummary
    directives: tuple[AppliedDirective, ...]
    seen: frozenset[int]  # those of the state this one went on from, or all
    last_start: dict[str, int]
    # Those seen since, kept apart: a log's million digests are not copied per audit.
    added: frozenset[int] = frozenset()

    def all_seen(self) -> frozenset[int]:
        return self.seen | self.added if self.added else self.seen


class RecordRules:
    """The rules applied entry by entry in log order (`add`), then to the whole (`finish`):
    a streaming audit keeps only what the rules need, and can go on from a `RulesState`."""

    def __init__(self, node_id: str, resumed: RulesState | None = None) -> None:
        self.node_id = node_id
        self.resumed = resumed
        base = resumed.summary if resumed is not None else RecordSummary()
        self.summary = RecordSummary(
            dict(base.campaigns),
            dict(base.experiments),
            dict(base.events),
            base.directives,
            base.starts_checked,
            base.verifications,
        )
        self.unlinked = 0  # links to records before `resumed`: not checked again
        self._by_leaf: dict[bytes, tuple[int, str, str, str, bool]] = {}
        self._kept_seen = resumed.all_seen() if resumed is not None else frozenset[int]()
        self._seen: set[int] = set()  # since `resumed`
        self._directives: dict[tuple[str, str, int, bool], AppliedDirective] = {}
        if resumed is not None:
            for d in resumed.directives:
                self._directives[(d.source, d.campaign, d.epoch, d.undone)] = d
        self._last_start = dict(resumed.last_start) if resumed is not None else {}
        self._start_index = array("q")
        self._start_at = array("q")
        self._start_seq = array("q")
        self._start_campaign: list[str] = []
        self._start_experiment: list[str] = []

    def add(self, index: int, stmt: Statement, leaf: bytes | None = None) -> None:
        """Check one entry (log order); VerificationError names the entry if it breaks a rule."""
        summary = self.summary
        pred = stmt.predicate
        where = f"entry {index}"
        if pred.node_id != self.node_id:
            raise VerificationError(
                STEP, f"{where} names node {pred.node_id!r}, not the signer {self.node_id}"
            )
        if isinstance(stmt, DirectiveStatement):
            d = _directive(index, stmt)
            key = (d.source, d.campaign, d.epoch, d.undone)
            if key in self._directives:
                raise VerificationError(
                    STEP,
                    f"{where} logs {d.source} epoch {d.epoch} {d.kind} of {d.campaign} again "
                    f"(first at entry {self._directives[key].index}): a directive is applied once",
                )
            self._directives[key] = d
            return
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
            return
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
        seen = _key64(cid, exp)
        if seen in self._seen or seen in self._kept_seen:
            raise VerificationError(
                STEP, f"{where} records experiment {exp!r} of {cid} a second time (replayed)"
            )
        self._seen.add(seen)
        if record.started_at is not None:
            self._start_index.append(index)
            self._start_at.append(_micros(record.started_at))
            self._start_seq.append(record.seq)
            self._start_campaign.append(cid)
            self._start_experiment.append(exp)
        digest = record.code_digest.removeprefix("sha256:")
        if stmt.subject[0].digest.get("sha256") != digest:
            raise VerificationError(STEP, f"{where}: the subject is not the record's code digest")
        summary.experiments[cid] = summary.experiments.get(cid, 0) + 1
        if record.verifies is not None:
            self._link(where, stmt)
            summary.verifications += 1
        if leaf is not None:
            self._by_leaf[leaf] = (
                index,
                sys.intern(cid),
                exp,
                record.code_digest,
                record.fitness is not None,
            )

    def _link(self, where: str, stmt: ExperimentStatement) -> None:
        link = stmt.predicate.verifies
        assert link is not None
        if self.resumed is not None and bytes.fromhex(link.leaf_hash) not in self._by_leaf:
            self.unlinked += 1  # a record before the kept state: not checked again
            return
        _check_link(where, stmt, self._by_leaf)

    def finish(self) -> RecordSummary:
        """The paused-start replay over every directive; the summary of all entries."""
        directives = list(self._directives.values())
        self.summary.directives = len(directives)
        if self.resumed is not None:
            self._check_kept_starts(directives)
        timeline = sorted(directives, key=lambda d: (d.applied_at, d.index))
        for i in range(len(self._start_index)) if timeline else ():
            at = _EPOCH + self._start_at[i] * _US
            campaign = self._start_campaign[i]
            held = holding(timeline, campaign, at)
            if held is not None:
                raise VerificationError(
                    STEP,
                    f"experiment {self._start_experiment[i]} (#{self._start_seq[i]}) of "
                    f"campaign {campaign} started at {at.isoformat()} while it was "
                    f"{_HELD.get(held.kind, CampaignStatus.PAUSED)} "
                    f"by {held.label()} (record at entry {self._start_index[i]})",
                )
        self.summary.starts_checked += len(self._start_index)
        return self.summary

    def _check_kept_starts(self, directives: Sequence[AppliedDirective]) -> None:
        """A directive logged after the kept state but applied before one of its starts
        would need those starts replayed: fail closed, naming it, rather than guess."""
        assert self.resumed is not None
        for d in directives:
            if d.index < self.resumed.size:
                continue
            touched = [d.campaign, *([d.parent] if d.parent else [])]
            if d.campaign == ALL_CAMPAIGNS:
                touched = list(self.resumed.last_start)
            for campaign in touched:
                last = self.resumed.last_start.get(campaign)
                if last is not None and _micros(d.applied_at) <= last:
                    raise VerificationError(
                        STEP,
                        f"entry {d.index} logs a directive of {campaign} applied at "
                        f"{d.applied_at.isoformat()}, before an experiment start the kept "
                        f"state (size {self.resumed.size}) covers: an incremental audit "
                        "cannot replay it; audit the whole log again (without --state)",
                    )

    def state(self, size: int) -> RulesState:
        """What the next incremental audit needs (call after `finish`)."""
        last = dict(self._last_start)
        for campaign, at in zip(self._start_campaign, self._start_at, strict=True):
            last[campaign] = max(last.get(campaign, at), at)
        return RulesState(
            size,
            self.summary,
            tuple(self._directives.values()),
            self._kept_seen,
            last,
            frozenset(self._seen),
        )


def check_records(
    statements: Iterable[tuple[int, Statement]],
    node_id: str,
    leaves: Sequence[bytes] = (),
) -> RecordSummary:
    """Apply the rules to (log index, statement) pairs in log order; VerificationError
    names the first entry that breaks one. `leaves` are the entries' RFC 6962 leaf
    hashes, by index: a verification stage's record names the record it verifies by one."""
    rules = RecordRules(node_id)
    for index, stmt in statements:
        rules.add(index, stmt, leaves[index] if index < len(leaves) else None)
    return rules.finish()


def _check_link(
    where: str, stmt: ExperimentStatement, by_leaf: dict[bytes, tuple[int, str, str, str, bool]]
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
    index, campaign, experiment, code_digest, scored = found
    if (campaign, experiment) != (link.campaign_id, link.experiment_id):
        raise VerificationError(
            STEP,
            f"{where} names experiment {link.experiment_id} of {link.campaign_id}, but its leaf "
            f"is entry {index}, experiment {experiment} of {campaign}",
        )
    if campaign == record.campaign_id:
        raise VerificationError(STEP, f"{where} verifies a record of its own campaign")
    if code_digest != record.code_digest:
        raise VerificationError(
            STEP, f"{where} trains other code than the record it verifies (entry {index})"
        )
    if not scored:
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
