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
- `NodeRevoked` / `NodeApproved` of this node's address set or clear revocation;
- `effectiveStatus` of each watched campaign is reported as a status snapshot, so a
  missed event still pauses (the most restrictive signal wins).

Each read re-scans the last `rescan_blocks` blocks, so an event that a reorg moved is seen
again at its new height (the watcher drops duplicates by campaign and epoch); blocks
older than that are taken as final.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from governance.directives import (
    ALL_CAMPAIGNS,
    CampaignState,
    Directive,
    DirectiveKind,
    Reading,
    campaign_key,
    campaign_of_key,
)

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


class EvmSource:
    """`DirectiveSource` over a controller; `campaigns()` names the campaigns to snapshot."""

    def __init__(
        self,
        reader: ControllerReader,
        *,
        start_block: int = 0,
        rescan_blocks: int = 12,
        node_address: str | None = None,
        campaigns: Callable[[], Iterable[str]] = lambda: (),
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
            elif e.name in ("NodeRevoked", "NodeApproved") and self._is_me(e.args["node"]):
                self.revoked = e.name == "NodeRevoked"
        self.next_block = head + 1
        return Reading(tuple(directives), head, self.revoked, self._snapshot())

    def _is_me(self, address: object) -> bool:
        return self.node_address is not None and str(address).lower() == self.node_address

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

    def _snapshot(self) -> dict[str, CampaignState]:
        states = {}
        for campaign in self.campaigns():
            try:
                key = campaign_key(campaign)
            except ValueError:
                continue
            state = STATUSES.get(self.reader.effective_status(key))
            if state is not None:
                states[campaign] = state
        return states
