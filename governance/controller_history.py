"""The controller's history as it binds one node, read from the chain.

`read_history` reads, up to the current head, every `DirectiveIssued` of the campaigns
named (and of their forks' children, as the forks appear), the global pause, the node's
standing (its approvals, its revocation, its suspension when the TEE measurement it was
approved under is removed), the node's anchors of one log and its acknowledgements; it
replays them in chain order into the directives that bind the node and the holds they
make (a pause, stop or global pause, the node's revocation or suspension, a fork's child
until its resume: each from its block's time until the block of the one that lifts it);
and it reads the storage those events must add up to (each campaign's epoch, the global
epoch, the node's acknowledged epochs and whether it is active) at the same head, so a
caller can tell an endpoint that filtered events. Chain failures raise `ChainError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from attestation.schema import ALL_CAMPAIGNS, DirectiveKind
from governance.chain import Controller, ControllerReader
from governance.directives import CampaignState, campaign_key, campaign_of_key
from governance.evm_source import DIRECTIVES, STATUSES, ControllerEvent

# The names of CampaignController.Directive's values, in their Solidity order (their
# kinds: governance.evm_source.DIRECTIVES).
_DIRECTIVE_NAMES = ("register", "pause", "resume", "stop", "fork")
# Given a fork of a campaign the caller named (its CampaignForked event, the parent's
# name and the child's epoch), the caller's name for the child; None: its on-chain name.
ForkChild = Callable[[ControllerEvent, str, int], str | None]


class Scope(StrEnum):
    CAMPAIGN = "campaign"  # one campaign: `ChainDirective.campaign` is the log's id of it
    ALL = "all"  # every campaign: a global pause or its lift
    NODE = "node"  # this node's standing: its revocation, suspension or re-approval


@dataclass(frozen=True)
class ChainDirective:
    """A directive of the controller that binds the node, where and when it was issued:
    `epoch` is the campaign's or the global epoch (0 for the node's standing), `holds`
    whether it holds its scope (else it lifts it)."""

    what: str
    kind: DirectiveKind
    scope: Scope
    campaign: str
    epoch: int
    holds: bool
    event: ControllerEvent
    at: datetime
    key: bytes | None = None

    @property
    def tx(self) -> str:
        return self.event.tx_hash.lower()

    def label(self) -> str:
        epoch = f" epoch {self.epoch}" if self.epoch else ""
        target = f" of campaign {self.campaign}" if self.scope is Scope.CAMPAIGN else ""
        return (
            f"{self.what}{target}{epoch} (tx {self.tx}, block {self.event.block} at "
            f"{self.at.isoformat()})"
        )


@dataclass(frozen=True)
class Hold:
    """A stretch of chain time in which `cause` held `campaign` (ALL_CAMPAIGNS: every
    campaign) until `end` (None: still held)."""

    cause: ChainDirective
    campaign: str
    end: datetime | None


@dataclass
class History:
    """The controller's history as it binds one node, read up to block `head`.

    `cid_of` maps each campaign key read to the caller's name for it; `epochs_seen` and
    `global_seen` are the epochs the events returned, `*_stored` what storage says at the
    head; `active_changes` are (block, log index, active, tx) for each change of the
    node's standing, `active` the standing the events leave; `times` block times."""

    head: int
    directives: list[ChainDirective] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    cid_of: dict[bytes, str] = field(default_factory=dict)
    epochs_seen: dict[bytes, list[int]] = field(default_factory=dict)
    global_seen: list[int] = field(default_factory=list)
    active_changes: list[tuple[int, int, bool, str]] = field(default_factory=list)
    active: bool = False
    anchors: list[ControllerEvent] = field(default_factory=list)
    acks: list[ControllerEvent] = field(default_factory=list)
    epochs_stored: dict[bytes, int] = field(default_factory=dict)
    acked_stored: dict[bytes, int] = field(default_factory=dict)
    global_stored: int = 0
    active_stored: bool = False
    times: dict[int, datetime] = field(default_factory=dict)


def read_history(
    controller: Controller,
    node: str,
    log_name: bytes,
    campaigns: Iterable[str],
    fork_child: ForkChild,
    *,
    from_block: int = 0,
) -> History:
    """The history of `campaigns` (the caller's names; each keyed on-chain by
    `campaign_key`) and of `node` (a checksummed address), with its anchors of its log
    `log_name`, from `from_block` (which must precede the node's approval) to the head."""
    head = controller.chain.head()
    history = History(head=head)
    events = controller.read_events(ControllerReader.EVENTS, from_block=from_block, to_block=head)
    for cid in campaigns:
        try:
            history.cid_of[campaign_key(cid)] = cid
        except ValueError:
            continue  # an id no controller key can name: never governed
    _replay(controller, history, events, node, fork_child)
    history.anchors = controller.read_events(
        "LogRootAnchored",
        from_block=from_block,
        to_block=head,
        filters={"logName": log_name, "node": node},
    )
    history.acks = controller.read_events(
        "DirectiveAcknowledged", from_block=from_block, to_block=head, filters={"node": node}
    )
    keys = set(history.cid_of) | {bytes(a.args["campaignId"]) for a in history.acks}
    for key in keys:
        history.epochs_stored[key] = controller.campaign_epoch(key, block=head)
        history.acked_stored[key] = controller.acknowledged_epoch_at(key, node, block=head)
    history.global_stored = controller.global_epoch(block=head)
    history.active_stored = controller.node_active_at(node, block=head)
    for block in {e.block for e in history.anchors}:
        _time(controller, history, block)
    return history


def _time(controller: Controller, history: History, block: int) -> datetime:
    if block not in history.times:
        ts = controller.chain.block_timestamp(block)
        history.times[block] = datetime.fromtimestamp(ts, UTC)
    return history.times[block]


def _replay(
    controller: Controller,
    history: History,
    events: Sequence[ControllerEvent],
    node: str,
    fork_child: ForkChild,
) -> None:
    """The events in chain order: the binding directives, the holds they make, and
    whether the node was active after each change of its standing."""
    forks = {(e.tx_hash, bytes(e.args["child"])): e for e in events if e.name == "CampaignForked"}
    open_campaign: dict[bytes, ChainDirective] = {}
    open_all: ChainDirective | None = None
    open_node: ChainDirective | None = None
    measurement: bytes | None = None  # the one this node was last approved under
    removed: set[bytes] = set()  # measurements not approved now

    def issue(
        e: ControllerEvent, what: str, scope: Scope, holds: bool, campaign: str, epoch: int
    ) -> ChainDirective:
        kind = DirectiveKind.PAUSE if holds else DirectiveKind.RESUME
        code = int(e.args["directive"]) if scope is Scope.CAMPAIGN else -1
        if code in DIRECTIVES:
            what, kind = _DIRECTIVE_NAMES[code], DIRECTIVES[code]
        key = bytes(e.args["campaignId"]) if scope is Scope.CAMPAIGN else None
        at = _time(controller, history, e.block)
        d = ChainDirective(what, kind, scope, campaign, epoch, holds, e, at, key)
        history.directives.append(d)
        return d

    def close(d: ChainDirective | None, campaign: str, lift: ChainDirective) -> None:
        if d is not None:
            history.holds.append(Hold(d, campaign, lift.at))

    def standing(e: ControllerEvent, active: bool) -> None:
        history.active = active
        history.active_changes.append((e.block, e.log_index, active, e.tx_hash))

    for e in events:
        args = e.args
        if e.name == "DirectiveIssued":
            key, epoch = bytes(args["campaignId"]), int(args["epoch"])
            forked = DIRECTIVES.get(int(args["directive"])) is DirectiveKind.FORK
            if forked and key not in history.cid_of:
                _adopt_fork(history, forks.get((e.tx_hash, key)), key, epoch, fork_child)
            if key not in history.cid_of:
                continue
            cid = history.cid_of[key]
            history.epochs_seen.setdefault(key, []).append(epoch)
            holds = STATUSES.get(int(args["status"])) is not CampaignState.RUNNING
            d = issue(e, "directive", Scope.CAMPAIGN, holds, cid, epoch)
            if d.holds:
                open_campaign.setdefault(key, d)
            else:
                close(open_campaign.pop(key, None), cid, d)
        elif e.name == "GlobalPauseSet":
            paused, epoch = bool(args["paused"]), int(args["globalEpoch"])
            history.global_seen.append(epoch)
            what = "global pause" if paused else "global resume"
            d = issue(e, what, Scope.ALL, paused, ALL_CAMPAIGNS, epoch)
            if paused:
                open_all = open_all or d
            else:
                close(open_all, ALL_CAMPAIGNS, d)
                open_all = None
        elif e.name == "NodeApproved" and _same(args["node"], node):
            measurement = bytes(args["measurement"])
            if open_node is not None:  # approved again: the hold lifts
                d = issue(e, f"re-approval of node {node}", Scope.NODE, False, ALL_CAMPAIGNS, 0)
                close(open_node, ALL_CAMPAIGNS, d)
                open_node = None
            standing(e, True)
        elif e.name == "NodeRevoked" and _same(args["node"], node):
            d = issue(e, f"revocation of node {node}", Scope.NODE, True, ALL_CAMPAIGNS, 0)
            open_node = open_node or d
            standing(e, False)
        elif e.name == "MeasurementSet":
            m, approved = bytes(args["measurement"]), bool(args["approved"])
            if approved:
                removed.discard(m)
                continue
            if m == measurement and m not in removed and history.active:
                what = f"suspension of node {node} (its TEE measurement 0x{m.hex()} removed)"
                open_node = issue(e, what, Scope.NODE, True, ALL_CAMPAIGNS, 0)
                standing(e, False)
            removed.add(m)
    for key, held in open_campaign.items():
        history.holds.append(Hold(held, history.cid_of[key], None))
    for still in (open_all, open_node):
        if still is not None:
            history.holds.append(Hold(still, ALL_CAMPAIGNS, None))


def _adopt_fork(
    history: History, fork: ControllerEvent | None, child: bytes, epoch: int, fork_child: ForkChild
) -> None:
    """A fork of a campaign named: its child is the caller's campaign for it, else the
    child's on-chain name."""
    if fork is None or bytes(fork.args["parent"]) not in history.cid_of:
        return
    name = fork_child(fork, history.cid_of[bytes(fork.args["parent"])], epoch)
    if name is None:
        try:
            name = campaign_of_key(child)
        except ValueError:
            name = "0x" + child.hex()
    history.cid_of[child] = name


def _same(a: object, b: str) -> bool:
    return str(a).lower() == b.lower()
