"""The EVM `CampaignController` as a `DirectiveSource`, over a narrow `ControllerReader`.

The chain client (`governance/chain.py`, the only web3 user) implements
`ControllerReader`: the head block, the controller's decoded events in a block range,
`effectiveStatus(id)` and nothing else; it raises `SourceError` when the RPC cannot be
read. This module turns that into directives:

- `DirectiveIssued(campaignId, epoch, directive, status, by)` becomes a directive of that
  campaign and epoch at that block (Register counts as a resume: the campaign is Active);
  a Fork takes its parent, position and config from the `CampaignForked` event of the
  same transaction;
- `GlobalPauseSet(paused, globalEpoch)` becomes a pause or resume of every campaign;
- whether this node may act (`isNodeActive`: approved, its TEE measurement not removed)
  is read every poll: a revoked or suspended node pauses everything until approved again;
- with several endpoints (`CrossCheckedReader`) no single RPC is trusted: events are the
  union of what they return, statuses the most restrictive, and an endpoint that misses
  an event the others have is named in the log;
- `effectiveStatus` of each watched campaign is reported as a status snapshot, so a
  missed event still pauses (the most restrictive signal wins); a watched campaign the
  controller does not know, or knows with another config hash than the node's config,
  is held (paused) with the reason: a governed node runs only what the DAO registered.

Each read re-scans the last `rescan_blocks` blocks, so an event that a reorg moved is seen
again at its new height (the watcher drops duplicates by campaign and epoch); blocks
older than that are taken as final.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from attestation.canonical import hash_rule, json_sha256
from governance.directives import (
    ALL_CAMPAIGNS,
    CampaignState,
    Directive,
    DirectiveKind,
    Reading,
    campaign_key,
    campaign_of_key,
)
from governance.errors import SourceError

log = logging.getLogger(__name__)

# CampaignController.Directive and .Status, in their Solidity order.
DIRECTIVES = {
    0: DirectiveKind.RESUME,  # Register: the campaign is Active
    1: DirectiveKind.PAUSE,
    2: DirectiveKind.RESUME,
    3: DirectiveKind.STOP,
    4: DirectiveKind.FORK,
}
STATUSES = {1: CampaignState.RUNNING, 2: CampaignState.PAUSED, 3: CampaignState.STOPPED}


@dataclass(frozen=True)
class ControllerEvent:
    """One decoded controller log: event name, where it is, and its arguments by name
    (bytes32 as bytes, integers as int, addresses as 0x strings)."""

    name: str
    block: int
    log_index: int
    tx_hash: str
    args: Mapping[str, Any]


class ControllerReader(Protocol):
    """What the chain client provides; `effective_status` is 0 (None) for a campaign the
    controller does not know (its call reverts with UnknownCampaign)."""

    def head(self) -> int: ...

    def events(self, from_block: int, to_block: int) -> list[ControllerEvent]: ...

    def effective_status(self, campaign_key: bytes) -> int: ...

    def config_hash(self, campaign_key: bytes) -> bytes: ...

    def node_active(self, node: str) -> bool: ...

    def issued(self, tx_hash: str) -> bool: ...

    def finalized(self) -> int | None: ...


class EvmSource:
    """`DirectiveSource` over a controller; `campaigns()` maps the watched campaigns (as the
    controller names them) to this node's config of each, to snapshot and check."""

    def __init__(
        self,
        reader: ControllerReader,
        *,
        start_block: int = 0,
        rescan_blocks: int = 12,
        node_address: str | None = None,
        campaigns: Callable[[], Mapping[str, Mapping[str, Any]]] = dict,
        name: str = "evm",
    ) -> None:
        if rescan_blocks < 0:
            raise ValueError("rescan_blocks cannot be negative")
        self.reader = reader
        self.next_block = start_block
        self.rescan_blocks = rescan_blocks
        self.node_address = node_address.lower() if node_address else None
        self.campaigns = campaigns
        self._name = name
        self.revoked = False
        self._standing_ref = ""

    @property
    def name(self) -> str:
        return self._name

    def read(self) -> Reading:
        head = self.reader.head()
        start = max(0, min(self.next_block, head + 1) - self.rescan_blocks)
        events = sorted(self.reader.events(start, head), key=lambda e: (e.block, e.log_index))
        forks = {
            (e.tx_hash, bytes(e.args["child"])): e for e in events if e.name == "CampaignForked"
        }
        directives: list[Directive] = []
        for e in events:
            if e.name == "DirectiveIssued":
                d = self._directive(e, forks)
                if d is not None:
                    directives.append(d)
            elif e.name == "GlobalPauseSet":
                kind = DirectiveKind.PAUSE if e.args["paused"] else DirectiveKind.RESUME
                epoch = int(e.args["globalEpoch"])
                directives.append(
                    Directive(kind, ALL_CAMPAIGNS, epoch, self._name, e.block, e.tx_hash)
                )
        if self.node_address is not None:
            for e in events:  # what changed this node's standing, newest last
                mine = e.name in ("NodeRevoked", "NodeApproved") and self._is_me(e.args["node"])
                if mine or (e.name == "MeasurementSet" and not e.args["approved"]):
                    self._standing_ref = e.tx_hash
            active = self.reader.node_active(self.node_address)
            if active == self.revoked:
                log.warning("this node may act" if active else "this node may not act now")
            self.revoked = not active
        self.next_block = head + 1
        states, held = self._snapshot()
        finalized = self.reader.finalized()
        return Reading(
            tuple(directives), head, self.revoked, states, held, self._standing_ref, finalized
        )

    def _is_me(self, address: object) -> bool:
        return self.node_address is not None and str(address).lower() == self.node_address

    def still_issued(self, directive: Directive) -> bool:
        """Whether the directive's transaction is still in the chain (not reorged out)."""
        return not directive.ref.startswith("0x") or self.reader.issued(directive.ref)

    def _directive(
        self, e: ControllerEvent, forks: Mapping[tuple[str, bytes], ControllerEvent]
    ) -> Directive | None:
        key = bytes(e.args["campaignId"])
        try:
            campaign = campaign_of_key(key)
        except ValueError:
            log.warning("directive for a campaign key no node id names", extra={"key": key.hex()})
            return None
        kind = DIRECTIVES.get(int(e.args["directive"]))
        if kind is None:
            log.warning("unknown controller directive", extra={"value": e.args["directive"]})
            return None
        epoch = int(e.args["epoch"])
        if kind is not DirectiveKind.FORK:
            return Directive(kind, campaign, epoch, self._name, e.block, e.tx_hash)
        fork = forks.get((e.tx_hash, key))
        if fork is None:
            log.warning("fork directive without its CampaignForked event", extra={"tx": e.tx_hash})
            return None
        try:
            parent = campaign_of_key(bytes(fork.args["parent"]))
            return Directive(
                kind,
                campaign,
                epoch,
                self._name,
                e.block,
                e.tx_hash,
                config_hash=bytes(fork.args["configHash"]),
                parent_id=parent,
                from_position=int(fork.args["fromTreeSize"]),
                checkpoint_root=bytes(fork.args["checkpointRoot"]),
                config_uri=str(fork.args["configURI"]),
            )
        except ValueError as exc:
            log.warning("malformed fork", extra={"tx": e.tx_hash, "error": str(exc)})
            return None

    def _snapshot(self) -> tuple[dict[str, CampaignState], dict[str, str]]:
        """Each watched campaign's status, and why one is held: unknown to the controller,
        or registered with a config hash that is not this node's config's."""
        states: dict[str, CampaignState] = {}
        held: dict[str, str] = {}
        for campaign, config in self.campaigns().items():
            try:
                key = campaign_key(campaign)
            except ValueError:
                held[campaign] = "its id does not fit a controller campaign key (31 bytes)"
                continue
            state = STATUSES.get(self.reader.effective_status(key))
            if state is None:
                held[campaign] = (
                    "not registered on the controller: a DAO proposal must call "
                    f"registerCampaign(0x{key.hex()}, {_local_hash(config)}, ...)"
                )
                continue
            states[campaign] = state
            registered = self.reader.config_hash(key)
            if hash_rule(dict(config), registered) is None:
                held[campaign] = (
                    f"registered with config hash 0x{registered.hex()}, but this node's config "
                    f"hashes to {_local_hash(config)}: run the config the DAO registered"
                )
        return states, held


def _local_hash(config: Mapping[str, Any]) -> str:
    return "0x" + json_sha256(dict(config)).hex()


class CrossCheckedReader:
    """Several endpoints of one chain read as one `ControllerReader`, none trusted alone.

    The head is the lowest any endpoint reports (all have seen it); events are the union
    of every endpoint's (an event one endpoint filters out still arrives through another,
    and the one that missed it is logged); a campaign's status is the most restrictive any
    endpoint gives; the node may act only if every endpoint says so; a directive's
    transaction counts as issued while any endpoint holds it. Config hashes must agree.
    Any endpoint failing fails the read (SourceError): the watcher then treats governance
    as unread, and pauses once it stays so for its stale limit.
    """

    def __init__(self, readers: Sequence[ControllerReader], names: Sequence[str]) -> None:
        if len(readers) < 1 or len(readers) != len(names):
            raise ValueError("give each endpoint's reader and a name for it")
        self.readers = list(readers)
        self.names = list(names)

    def head(self) -> int:
        return min(r.head() for r in self.readers)

    def events(self, from_block: int, to_block: int) -> list[ControllerEvent]:
        seen: dict[tuple[str, int, str], ControllerEvent] = {}
        by_endpoint = []
        for reader in self.readers:
            found = {
                (e.tx_hash, e.log_index, e.name): e for e in reader.events(from_block, to_block)
            }
            by_endpoint.append(found)
            seen |= found
        for name, found in zip(self.names, by_endpoint, strict=True):
            missing = [e for key, e in seen.items() if key not in found]
            for e in missing:
                log.error(
                    "an RPC endpoint did not return a controller event the others did",
                    extra={"endpoint": name, "event": e.name, "tx": e.tx_hash, "block": e.block},
                )
        return list(seen.values())

    def effective_status(self, campaign_key: bytes) -> int:
        statuses = [r.effective_status(campaign_key) for r in self.readers]
        known = [s for s in statuses if s]
        if len(set(statuses)) > 1:
            log.error(
                "RPC endpoints disagree on a campaign's status; the most restrictive wins",
                extra={"campaign": campaign_key.hex(), "statuses": statuses},
            )
        return max(known) if len(known) == len(statuses) else 0

    def config_hash(self, campaign_key: bytes) -> bytes:
        hashes = {r.config_hash(campaign_key) for r in self.readers}
        if len(hashes) != 1:
            raise SourceError(
                f"the RPC endpoints disagree on campaign 0x{campaign_key.hex()}'s config hash"
            )
        return hashes.pop()

    def node_active(self, node: str) -> bool:
        return all(r.node_active(node) for r in self.readers)

    def issued(self, tx_hash: str) -> bool:
        return any(r.issued(tx_hash) for r in self.readers)

    def finalized(self) -> int | None:
        """The lowest final block any endpoint names (None if one names none)."""
        found = [r.finalized() for r in self.readers]
        return None if None in found else min(f for f in found if f is not None)
