"""The chain anchors a follower holds its peers' logs to, as `asi-node audit --rpc` does.

A sync reads a peer's log only up to a checkpoint that an active node anchored on the
CampaignController of `[chain] rpc_url`, and that checkpoint's root must be the one the
chain holds: what this node imports is what the peer committed to on the chain, and a
peer cannot show its followers one history and the chain another. A directory peer's
anchors are those of the node the directory lists it for; a configured peer's, those of
the active node that anchored its log name most often (any node may anchor under any
name, each under an id bound to its own address, so the fullest active one is taken,
as the audit takes it).

The embedded chain is one home's own, which no peer anchors on: with `[chain] rpc_url`
empty, peers' anchors are not checked (`anchors_for` returns None and the commands say so).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from governance.chain import Address, Controller
from governance.errors import ChainError
from node.errors import AsiNodeError
from node.settings import Settings
from node.tlog.log import log_id


class AnchorReadError(AsiNodeError):
    """The chain could not be read to check a peer's anchors (the message says why).

    Check `[chain] rpc_url` and `<home>/chain.json`; the peer is synced at the next round.
    """


class PeerAnchors:
    """The anchors on the controller of `settings`' chain, connected at first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._controller: Controller | None = None

    @property
    def controller(self) -> Controller:
        from node.anchoring.chain_home import deployed_controller

        if self._controller is None:
            try:
                found = deployed_controller(self.settings.chain, Path(self.settings.home))
            except (ChainError, AsiNodeError) as exc:
                raise AnchorReadError(f"cannot reach the chain to check anchors: {exc}") from None
            if found is None:
                raise AnchorReadError("no chain to check anchors on: [chain] rpc_url is empty")
            self._controller = found
        return self._controller

    @property
    def label(self) -> str:
        return f"chain {self.controller.chain.chain_id}"

    def of(self, origin: str, node: str | None = None) -> Mapping[int, bytes]:
        """The anchors of the log `origin`, tree size to root, by `node` (its directory
        entry's), else by the active node that anchored it most; empty when no active
        node anchored it."""
        controller = self.controller
        try:
            events = controller.anchors(log_id(origin), node=node)
            by_node: dict[Address, dict[int, bytes]] = {}
            for anchor in events:
                by_node.setdefault(anchor.node, {})[anchor.tree_size] = anchor.root
            for found in sorted(by_node, key=lambda n: (-len(by_node[n]), n)):
                if controller.node_approved(found):
                    return by_node[found]
        except ChainError as exc:
            raise AnchorReadError(f"reading the anchors on {self.label} failed: {exc}") from None
        return {}


def anchors_for(settings: Settings) -> PeerAnchors | None:
    """The anchors a follower of this node checks (`[network] anchors`), on the chain of
    `[chain] rpc_url`; None when it is empty (the embedded chain holds no peer's)."""
    return PeerAnchors(settings) if unchecked_note(settings) is None else None


def unchecked_note(settings: Settings) -> str | None:
    """Why peers' anchors are not checked, for a command to print; None when they are."""
    if not settings.network.anchors:
        return "peers' chain anchors are not checked: [network] anchors is false"
    if not settings.chain.rpc_url:
        return (
            "peers' chain anchors are not checked: [chain] rpc_url is empty (the embedded "
            "chain is this home's alone)"
        )
    return None
