"""The node directory on the CampaignController: each active node publishes its API's
base URL and the log it anchors (`publishNode`), and finds its peers there.

The directory lives on the chain of `[chain] rpc_url`, reached as anchoring reaches it
(`<home>/chain.json`, the node's `chain.key`). The embedded chain is one home's own, which
no peer can read, so the directory needs a configured one. The controller keeps the list
governed: only an active node publishes, only its own entry, and a revoked or suspended
node drops out of `directory()` without anyone editing the list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from attestation.keys import NodeKey
from governance.chain import Address, Controller, DirectoryEntry, address_of, chain_log_id
from governance.errors import ChainError, TransactionRevertedError
from node.anchoring.chain_home import KEY_FILE, deployed_controller, load_key
from node.errors import AsiNodeError, ConfigError
from node.network.follow import LogPin
from node.network.peers import peer_url
from node.settings import Settings, api_url
from node.tlog.log import log_id, origin_for

log = logging.getLogger(__name__)

MAX_ENDPOINT_BYTES = 256  # the controller's MAX_ENDPOINT_BYTES


class DirectoryError(AsiNodeError):
    """The controller refuses this node's directory entry (the message names why).

    An unapproved, revoked or suspended node asks governance to approve it (again); a
    bad endpoint is fixed in the URL given or in `[network] endpoint`.
    """


def log_name(key: NodeKey) -> bytes:
    """The name this node's log is anchored under: the SHA-256 of its origin line, as the
    anchor publisher's checkpoints carry it."""
    return log_id(origin_for(key.public.fingerprint))


def check_endpoint(url: str) -> str:
    """`url` as published: an http(s) base URL without a trailing slash, within the
    controller's length bound; ConfigError otherwise."""
    try:
        endpoint = api_url(url.strip(), "an API URL")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if len(endpoint.encode()) > MAX_ENDPOINT_BYTES:
        raise ConfigError(
            f"the endpoint is {len(endpoint.encode())} bytes; the controller takes at most "
            f"{MAX_ENDPOINT_BYTES}"
        )
    return endpoint


@dataclass(frozen=True)
class Listed:
    """A directory entry as this node sees it: `own` when it is this node's."""

    entry: DirectoryEntry
    own: bool

    @property
    def url(self) -> str:
        return peer_url(self.entry.endpoint)


@dataclass(frozen=True)
class Directory:
    """The controller's directory, read and written as this node (`key`: its chain key;
    None when the home has none, so it never published)."""

    controller: Controller
    key: bytes | None

    @property
    def address(self) -> Address | None:
        return address_of(self.key) if self.key is not None else None

    def publish(self, endpoint: str, name: bytes) -> tuple[DirectoryEntry, bytes | None]:
        """Publish `endpoint` and the log `name` as this node's entry; returns the entry
        and the transaction's hash (None: the entry was already this, nothing was sent).
        The call runs as an eth_call first, so a refusal is a DirectoryError naming the
        controller's reason before anything is signed."""
        endpoint = check_endpoint(endpoint)
        if self.key is None or self.address is None:
            raise ConfigError("the node has no chain key (chain.key) to publish with")
        ctl = self.controller
        try:
            ctl.check_publish(self.address, endpoint, name)
        except TransactionRevertedError as exc:
            raise DirectoryError(self._refusal(exc.reason)) from None
        kept = ctl.node_entry(self.address)
        if kept == DirectoryEntry(self.address, endpoint, chain_log_id(self.address, name)):
            return kept, None
        receipt = ctl.chain.send(self.key, ctl.publish_call(endpoint, name))
        entry = ctl.node_entry(self.address)
        assert entry is not None  # the transaction succeeded
        log.info(
            "node entry published",
            extra={"node": self.address, "endpoint": endpoint, "block": receipt.block_number},
        )
        return entry, receipt.tx_hash

    def entries(self) -> list[Listed]:
        """The entries of the nodes active now, in publishing order."""
        return [Listed(e, e.node == self.address) for e in self.controller.directory()]

    def pins(self) -> dict[str, LogPin]:
        """The other active nodes by API URL (each once, in publishing order), each with
        the log it anchors under, which its URL must serve. An entry that is not an
        http(s) URL (the controller checks only its length) is skipped with a warning."""
        urls: dict[str, LogPin] = {}
        for listed in self.entries():
            if listed.own:
                continue
            try:
                url = api_url(listed.url, "an API URL")
            except ValueError:
                log.warning(
                    "directory entry skipped: not an API URL",
                    extra={"node": listed.entry.node, "endpoint": listed.entry.endpoint[:80]},
                )
                continue
            if url not in urls:
                urls[url] = LogPin(listed.entry.node, listed.entry.chain_log_id)
        return urls

    def _refusal(self, reason: str) -> str:
        where = f"CampaignController {self.controller.address} ({self.controller.chain.label})"
        if reason.startswith("NodeNotApproved("):
            return (
                f"node address {self.address} is not approved on {where}; ask governance "
                "to approve it, then publish again"
            )
        if reason.startswith("NodeSuspended("):
            return (
                f"node address {self.address} is suspended on {where}: its TEE measurement "
                "was removed; governance approves it again under an approved measurement"
            )
        return f"{where} refused the entry: {reason}"


def open_directory(settings: Settings, *, create_key: bool = False) -> Directory:
    """The directory on the chain of `[chain] rpc_url` and `<home>/chain.json`, as this
    node: its `chain.key`, created first with `create_key` (a home without one never
    published, and reads the directory as no one)."""
    if not settings.chain.rpc_url:
        raise ConfigError(
            "no chain configured: the node directory lives on the CampaignController of "
            "[chain] rpc_url, which is empty (the embedded chain is this home's alone and "
            "no peer reads it)"
        )
    home = Path(settings.home)
    controller = deployed_controller(settings.chain, home)
    assert controller is not None  # rpc_url is set
    key = load_key(home) if create_key or (home / KEY_FILE).exists() else None
    return Directory(controller, key)


def to_follow(
    settings: Settings, only: str | None = None
) -> tuple[dict[str, LogPin | None], str | None]:
    """The peers a sync follows, by URL, each with the log the directory pins it to (None:
    a configured peer, kept on first use): `only` alone, or `[network] peers` and, with
    `[network] directory`, the other nodes the directory lists (a URL in both is pinned).
    Second: why the directory could not be read (the configured peers still sync), or
    None."""
    if only:
        return {peer_url(only): None}, None
    follow: dict[str, LogPin | None] = {peer_url(u): None for u in settings.network.peers}
    if not settings.network.directory:
        return follow, None
    try:
        pins = open_directory(settings).pins()
    except ChainError as exc:
        return follow, f"the node directory could not be read ({exc})"
    return follow | pins, None
