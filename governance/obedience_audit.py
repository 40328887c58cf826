"""Audit of a node's obedience: its verified log held to the controller's own history.

The offline audit (`attestation.audit`) replays the directives a node logged, at the
times it wrote: a node that never logs a pause passes it. This audit reads the
directives from the `CampaignController` and checks the log against them, in numbered
steps, each raising `VerificationError` naming what failed (chain failures are step 0):

1. The inputs make a policy: a node address, a log that declares campaigns, tolerances,
   and the log's latest checkpoint anchored by that node. That anchor's block time is
   the log's end: a directive due after it need not be in the log yet.
2. The events are complete: each campaign's epoch, the global epoch, the node's
   acknowledged epochs and whether it is active, read from storage at the head, equal
   what the events returned (an endpoint that filters events fails here).
3. Every directive that binds the node is in its log, as the same kind, applied by its
   block time + poll + grace (+ clock skew): each `DirectiveIssued` of a campaign the
   log declares (a fork's child, keyed on-chain by the name its proposal gave it, is
   matched to the node's child by transaction), every global pause and lift, and this
   node's revocation, suspension (its TEE measurement removed) and re-approval, which
   the log must record with the transaction as `ref`. And every resume or fork the log
   says came from the controller was issued by it (a logged pause or stop the chain no
   longer shows is tolerated: a reorganisation may take one away after it was obeyed).
4. No experiment started while the chain held its campaign (a pause, stop or global
   pause, the node's revocation or suspension, a fork's child until its resume) once
   poll + grace had passed since the hold's block; none that was running when a hold
   began finished "done" later than the hold + poll + grace + stop deadline.
5. Every acknowledgement by this node commits to the leaf hash of the log entry that
   records that campaign's directive at that epoch.
6. The node was active (approved, its measurement not removed) at each of its anchors.

The chain's side is read by `governance.controller_history`. Block times come from the
chain and are compared with the times the node wrote (its clock):
`Tolerances.clock_skew_s` states how far the two clocks may be apart.
`verify_obedience` returns the `ObedienceFacts` it checked, or raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from eth_utils.address import to_checksum_address

from attestation.audit import VerifiedLog
from attestation.errors import VerificationError
from attestation.schema import (
    ALL_CAMPAIGNS,
    DirectiveKind,
    DirectiveRecord,
    DirectiveStatement,
    EventStatement,
    ExperimentRecord,
    ExperimentStatement,
    ExperimentStatus,
    NodeEventKind,
)
from governance.chain import Controller
from governance.controller_history import ChainDirective, History, Scope, read_history
from governance.directives import campaign_key, campaign_of_key
from governance.errors import ChainError
from governance.evm_source import ControllerEvent

SOURCE = "evm"  # the source name the node logs the controller's directives under
_RESTRICTIVE = frozenset({DirectiveKind.PAUSE, DirectiveKind.STOP})


@dataclass(frozen=True)
class Tolerances:
    """What the node is allowed: seconds between polls, the grace after a directive's
    block (confirmations, a slow poll), the deadline to stop training, and how far its
    clock may be from the chain's."""

    poll_s: float = 5.0
    grace_s: float = 30.0
    stop_deadline_s: float = 30.0
    clock_skew_s: float = 0.0

    @property
    def reaction(self) -> timedelta:
        return timedelta(seconds=self.poll_s + self.grace_s)

    @property
    def skew(self) -> timedelta:
        return timedelta(seconds=self.clock_skew_s)


@dataclass(frozen=True)
class ObedienceFacts:
    """What the obedience audit checked, for the report."""

    node: str
    controller: str
    head: int
    log_end_block: int
    campaigns: dict[str, int]  # the log's campaigns -> their epoch on the controller
    directives: int  # binding directives found in the log
    not_due: int  # issued too late for the log's end to have to hold them
    holds: int
    starts_checked: int
    acknowledgements: int
    anchors: int

    @property
    def ungoverned(self) -> list[str]:
        return [cid for cid, epoch in self.campaigns.items() if epoch == 0]

    @property
    def governed(self) -> bool:
        return self.directives > 0 or len(self.ungoverned) < len(self.campaigns)

    def summary(self) -> str:
        if not self.governed:
            return (
                f"FLAGGED ungoverned: controller {self.controller} knows none of the log's "
                f"campaigns ({', '.join(self.campaigns)}) and issued it no directive"
            )
        unregistered = (
            f"; not registered (ungoverned): {', '.join(self.ungoverned)}"
            if self.ungoverned
            else ""
        )
        later = f" ({self.not_due} more due after the log's end)" if self.not_due else ""
        return (
            f"{self.directives} directive(s) of controller {self.controller} for node "
            f"{self.node} all logged in time{later}; {self.starts_checked} experiment "
            f"start(s) checked against {self.holds} hold(s); {self.acknowledgements} "
            f"acknowledgement(s) commit to their entries; active at all {self.anchors} "
            f"anchor(s){unregistered}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "controller": self.controller,
            "head_block": self.head,
            "log_end_block": self.log_end_block,
            "governed": self.governed,
            "campaigns": self.campaigns,
            "ungoverned_campaigns": self.ungoverned,
            "directives_logged": self.directives,
            "directives_not_due": self.not_due,
            "holds": self.holds,
            "starts_checked": self.starts_checked,
            "acknowledgements": self.acknowledgements,
            "anchors": self.anchors,
        }


@dataclass
class _Log:
    """The verified log's statements, indexed the ways the checks look them up."""

    campaigns: list[str] = field(default_factory=list)
    directives: dict[tuple[str, int], tuple[int, DirectiveRecord]] = field(default_factory=dict)
    by_ref: dict[str, list[tuple[int, DirectiveRecord]]] = field(default_factory=dict)
    experiments: list[tuple[int, ExperimentRecord]] = field(default_factory=list)
    statements: dict[int, Any] = field(default_factory=dict)
    leaf_index: dict[bytes, int] = field(default_factory=dict)
    forks: dict[str, tuple[int, DirectiveRecord]] = field(default_factory=dict)

    @classmethod
    def of(cls, log: VerifiedLog, source: str) -> _Log:
        out = cls()
        out.leaf_index = {leaf: i for i, leaf in enumerate(log.leaves)}
        for index, stmt in log.statements:
            out.statements[index] = stmt
            if isinstance(stmt, EventStatement):
                event = stmt.predicate
                cid = event.campaign_id
                if event.event is NodeEventKind.CAMPAIGN_START and cid and cid not in out.campaigns:
                    out.campaigns.append(cid)
            elif isinstance(stmt, ExperimentStatement):
                out.experiments.append((index, stmt.predicate))
            elif isinstance(stmt, DirectiveStatement) and stmt.predicate.source == source:
                d = stmt.predicate
                out.directives.setdefault((d.campaign_id, d.epoch), (index, d))
                out.by_ref.setdefault(d.ref.lower(), []).append((index, d))
            elif isinstance(stmt, DirectiveStatement) and stmt.predicate.source == (
                f"{source}:standing"
            ):
                # The node's own standing (revoked, suspended, approved again): found by
                # its transaction, numbered in a scope of its own.
                d = stmt.predicate
                out.by_ref.setdefault(d.ref.lower(), []).append((index, d))
        return out

    def fork_child(self, fork: ControllerEvent, parent: str, epoch: int) -> str | None:
        """The log's child of a fork of `parent`: the one the node logged this fork for
        (its transaction, epoch, parent and config), None if the log has no such fork."""
        config = "sha256:" + bytes(fork.args["configHash"]).hex()
        for index, d in self.by_ref.get(fork.tx_hash.lower(), []):
            if (
                d.kind is DirectiveKind.FORK
                and d.epoch == epoch
                and d.config_hash in (None, config)
                and (d.fork is None or d.fork.parent in (None, parent))
                and (index, d) not in self.forks.values()
            ):
                self.forks[_fork_id(fork.tx_hash, bytes(fork.args["child"]))] = (index, d)
                return d.fork.child if d.fork and d.fork.child else d.campaign_id
        return None


def verify_obedience(
    controller: Controller,
    log: VerifiedLog,
    node: str,
    log_id: bytes,
    tolerances: Tolerances = Tolerances(),
    *,
    from_block: int = 0,
    source: str = SOURCE,
    replayed_chain: bool = False,
) -> ObedienceFacts:
    """Check the verified `log` of `node` (its EVM address), anchored under its name
    `log_id`, against `controller`'s history; see the module docstring for the steps.

    `replayed_chain`: the chain was rebuilt from a journal (the embedded chain's), so its
    block times are not the original ones and nothing governed can be judged on it."""
    node = _step1_inputs(log, node, tolerances)
    view = _Log.of(log, source)
    if not view.campaigns:
        raise VerificationError(
            "step 1 (policy)",
            "the log declares no campaign (no campaign_start entry): there is nothing to "
            "hold to the controller's directives",
        )
    try:
        history = read_history(
            controller, node, log_id, view.campaigns, view.fork_child, from_block=from_block
        )
    except ChainError as exc:
        raise VerificationError("step 0 (chain)", f"reading the controller failed: {exc}") from exc
    end_block, end = _log_end(history, log, node)
    if replayed_chain and history.directives:
        raise VerificationError(
            "step 1 (policy)",
            "the chain was replayed from a journal, so its block times are the replay's, "
            "not the original ones: audit a governed log against the chain itself (an RPC URL)",
        )
    _step2_complete(history, node)
    logged, not_due = _step3_logged(history, view, tolerances, end)
    starts = _step4_holds(history, view, tolerances)
    acks = _step5_acknowledgements(history, view, logged)
    _step6_approvals(history, node)
    return ObedienceFacts(
        node=node,
        controller=controller.address,
        head=history.head,
        log_end_block=end_block,
        campaigns={
            cid: max(
                (history.epochs_stored.get(k, 0) for k, c in history.cid_of.items() if c == cid),
                default=0,
            )
            for cid in view.campaigns
        },
        directives=len(logged),
        not_due=not_due,
        holds=len(history.holds),
        starts_checked=starts,
        acknowledgements=acks,
        anchors=len(history.anchors),
    )


def _step1_inputs(log: VerifiedLog, node: str, tolerances: Tolerances) -> str:
    step = "step 1 (policy)"
    try:
        address = str(to_checksum_address(node))
    except (ValueError, TypeError):
        raise VerificationError(step, f"the node address {node!r} is not an EVM address") from None
    for name in ("poll_s", "grace_s", "stop_deadline_s", "clock_skew_s"):
        if getattr(tolerances, name) < 0:
            raise VerificationError(step, f"the tolerance {name} cannot be negative")
    if not log.leaves or len(log.leaves) != log.size:
        raise VerificationError(
            step, "the verified log carries no entries to check (verify the bundle first)"
        )
    return address


def _fork_id(tx: str, child: bytes) -> str:
    return f"{tx.lower()}:{child.hex()}"


def _log_end(history: History, log: VerifiedLog, node: str) -> tuple[int, datetime]:
    """The block and time of the node's anchor of the bundle's latest checkpoint."""
    for anchor in history.anchors:
        if int(anchor.args["treeSize"]) == log.size:
            return anchor.block, history.times[anchor.block]
    raise VerificationError(
        "step 1 (policy)",
        f"{node} has no anchor of this log at size {log.size} (the bundle's latest "
        "checkpoint): the node address does not match the log, or the log is not "
        "anchored by it",
    )


def _step2_complete(history: History, node: str) -> None:
    for key, cid in history.cid_of.items():
        seen, stored = history.epochs_seen.get(key, []), history.epochs_stored.get(key, 0)
        _same_epochs(seen, stored, f"campaign {cid} (0x{key.hex()})")
    _same_epochs(history.global_seen, history.global_stored, "the global pause")
    for key, stored in history.acked_stored.items():
        acked = [int(a.args["epoch"]) for a in history.acks if bytes(a.args["campaignId"]) == key]
        name = history.cid_of.get(key, "0x" + key.hex())
        _same_epochs(acked, stored, f"{node}'s acknowledgement of campaign {name}")
    if history.active != history.active_stored:
        now = "active" if history.active_stored else "not active"
        events = "active" if history.active else "not active"
        raise VerificationError(
            "step 2 (complete events)",
            f"the endpoint filtered events: {node} is {now} on-chain but the NodeApproved, "
            f"NodeRevoked and MeasurementSet events returned leave it {events}; audit "
            "through another RPC endpoint",
        )


def _same_epochs(seen: Sequence[int], stored: int, what: str) -> None:
    """The epochs events were returned for are exactly 1..`stored`, the storage's."""
    issued = list(range(1, stored + 1))
    returned = sorted(seen)
    if returned == issued:
        return
    if len(set(returned)) == len(returned) and set(returned) < set(issued):
        how = "filtered events"
    else:
        how = "returned events the controller does not hold"
    if not returned:
        shown = "no epoch was"
    elif returned == issued[: len(returned)]:
        shown = f"only epochs 1..{returned[-1]} were" if len(returned) > 1 else "only epoch 1 was"
    else:
        shown = f"epochs {', '.join(map(str, returned))} were"
    raise VerificationError(
        "step 2 (complete events)",
        f"the endpoint {how}: {what} is at epoch {stored} on-chain but {shown} returned; "
        "audit through another RPC endpoint",
    )


def _step3_logged(
    history: History, view: _Log, tol: Tolerances, end: datetime
) -> tuple[dict[tuple[str, int, str], tuple[int, DirectiveRecord]], int]:
    """Each binding directive in the log, in time; the log's controller directives on
    the chain. Returns the matches (by scope, epoch and transaction) and how many
    directives were not due yet at the log's end."""
    step = "step 3 (directives logged)"
    matched: dict[tuple[str, int, str], tuple[int, DirectiveRecord]] = {}
    not_due = 0
    for d in history.directives:
        found = _logged(view, d)
        due = d.at + tol.reaction <= end
        if found is None:
            if not due:
                not_due += 1
                continue
            raise VerificationError(
                step,
                f"the {d.label()} is not in the log, which the chain shows complete to its "
                f"anchor at {end.isoformat()}: the node ignored it (or dropped its entry)",
            )
        index, record = found
        if d.scope is not Scope.NODE and record.kind is not d.kind:
            raise VerificationError(
                step,
                f"log entry {index} records {record.kind} for the {d.label()}, which is a {d.kind}",
            )
        deadline = d.at + tol.reaction + tol.skew
        if record.applied_at > deadline:
            delay = (record.applied_at - d.at).total_seconds()
            raise VerificationError(
                step,
                f"the {d.label()} was applied at {record.applied_at.isoformat()} (log entry "
                f"{index}), {delay:.1f} s after its block; allowed: poll {tol.poll_s:g} + "
                f"grace {tol.grace_s:g} + clock skew {tol.clock_skew_s:g} s",
            )
        matched[(d.campaign, d.epoch, d.tx)] = found
    issued = {(d.campaign, d.epoch) for d in history.directives if d.scope is not Scope.NODE}
    standing = {d.tx for d in history.directives if d.scope is Scope.NODE}
    known = set(history.cid_of.values()) | {ALL_CAMPAIGNS}
    for (cid, epoch), (index, record) in view.directives.items():
        if cid not in known or (cid, epoch) in issued or record.kind in _RESTRICTIVE:
            continue
        if record.ref.lower() in standing:
            continue  # the node's revocation, suspension or re-approval, matched by tx
        raise VerificationError(
            step,
            f"log entry {index} records an {SOURCE} {record.kind} of {cid} at epoch {epoch} "
            f"(tx {record.ref}) that the controller's events do not hold: the node logged "
            "a directive never issued, or the endpoint filtered it",
        )
    return matched, not_due


def _logged(view: _Log, d: ChainDirective) -> tuple[int, DirectiveRecord] | None:
    if d.scope is Scope.NODE:
        found = view.by_ref.get(d.tx)
        return found[0] if found else None
    if d.kind is DirectiveKind.FORK and d.key is not None:
        return view.forks.get(_fork_id(d.tx, d.key))
    return view.directives.get((d.campaign, d.epoch))


def _step4_holds(history: History, view: _Log, tol: Tolerances) -> int:
    """No start inside a hold; nothing kept training past a hold's stop deadline."""
    step = "step 4 (held campaigns)"
    stop = timedelta(seconds=tol.stop_deadline_s)
    checked = 0
    for index, exp in view.experiments:
        start = exp.started_at
        if start is None:
            continue
        checked += 1
        for hold in history.holds:
            if hold.campaign not in (exp.campaign_id, ALL_CAMPAIGNS):
                continue
            began = hold.cause.at
            lifted = hold.end - tol.skew if hold.end is not None else None
            what = f"experiment {exp.experiment_id} (#{exp.seq}) of campaign {exp.campaign_id}"
            if began + tol.reaction + tol.skew <= start and (lifted is None or start < lifted):
                until = f"until {hold.end.isoformat()}" if hold.end else "still"
                raise VerificationError(
                    step,
                    f"{what} started at {start.isoformat()} while the {hold.cause.label()} "
                    f"held it ({until}; poll + grace: {tol.poll_s + tol.grace_s:g} s to obey; "
                    f"log entry {index})",
                )
            deadline = began + tol.reaction + stop + tol.skew
            finished = exp.finished_at
            if (
                exp.status is ExperimentStatus.DONE
                and finished is not None
                and start < deadline < finished
                and (lifted is None or deadline < lifted)
            ):
                raise VerificationError(
                    step,
                    f"{what} kept training past the stop deadline of the {hold.cause.label()}: "
                    f"started {start.isoformat()}, finished (done) {finished.isoformat()}, "
                    f"deadline {deadline.isoformat()} (poll + grace + stop deadline; log "
                    f"entry {index})",
                )
    return checked


def _step5_acknowledgements(
    history: History,
    view: _Log,
    logged: dict[tuple[str, int, str], tuple[int, DirectiveRecord]],
) -> int:
    """Each acknowledgement commits to the leaf of its directive's log entry."""
    step = "step 5 (acknowledgements)"
    by_epoch = {(cid, epoch): found for (cid, epoch, _), found in logged.items()}
    checked = 0
    for ack in history.acks:
        key, epoch = bytes(ack.args["campaignId"]), int(ack.args["epoch"])
        entry = bytes(ack.args["logEntryHash"])
        cid = history.cid_of.get(key)
        name = cid or _name(key)
        what = (
            f"acknowledgement of campaign {name} epoch {epoch} (tx {ack.tx_hash}, block "
            f"{ack.block})"
        )
        index = view.leaf_index.get(entry)
        record = by_epoch.get((cid, epoch)) if cid is not None else None
        if index is None:
            if record is not None:
                raise VerificationError(
                    step,
                    f"the {what} commits to 0x{entry.hex()}, which is no entry of the log, "
                    f"but the log records that directive at entry {record[0]}",
                )
            continue  # a directive past the bundle's end (or of a campaign it never ran)
        stmt = view.statements.get(index)
        if not (
            isinstance(stmt, DirectiveStatement)
            and stmt.predicate.epoch == epoch
            and (stmt.predicate.campaign_id == cid or _key_of(stmt.predicate.campaign_id) == key)
        ):
            raise VerificationError(
                step,
                f"the {what} commits to log entry {index}, which is {_describe(stmt)}, not "
                f"the directive of campaign {name} at epoch {epoch}",
            )
        checked += 1
    return checked


def _name(key: bytes) -> str:
    try:
        return campaign_of_key(key)
    except ValueError:
        return "0x" + key.hex()


def _key_of(campaign: str) -> bytes | None:
    try:
        return campaign_key(campaign)
    except ValueError:
        return None


def _describe(stmt: object) -> str:
    if isinstance(stmt, DirectiveStatement):
        d = stmt.predicate
        return f"the {d.source} {d.kind} of {d.campaign_id} at epoch {d.epoch}"
    if isinstance(stmt, ExperimentStatement):
        return f"the record of experiment {stmt.predicate.experiment_id}"
    if isinstance(stmt, EventStatement):
        return f"a {stmt.predicate.event} event"
    return "not a statement"


def _step6_approvals(history: History, node: str) -> None:
    """The node was active at each anchor of its log, its standing replayed from events
    up to the anchor's place in its block."""
    for anchor in history.anchors:
        at = (anchor.block, anchor.log_index)
        state = _state_before(history.active_changes, at)
        if state is None or not state[0]:
            why = "never approved" if state is None else f"since tx {state[1]}"
            raise VerificationError(
                "step 6 (approval at anchors)",
                f"{node} anchored size {anchor.args['treeSize']} of the log (tx "
                f"{anchor.tx_hash}, block {anchor.block}) while it was not active ({why})",
            )


def _state_before(
    changes: Iterable[tuple[int, int, bool, str]], at: tuple[int, int]
) -> tuple[bool, str] | None:
    state = None
    for block, index, active, tx in changes:
        if (block, index) >= at:
            break
        state = (active, tx)
    return state
