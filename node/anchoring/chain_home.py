"""The node's chain identity in its home, and the start-up checks before anchoring.

`<home>/chain.key` holds the node's secp256k1 key (hex, 0600, created on first use);
`<home>/chain.json` records where `asi-node chain deploy` put the contract set.
`open_publisher` connects (an RPC URL, or the embedded EVM), and refuses to start on a
wrong chain id, a wrong controller address, an unapproved or unfunded node account: the
outbox is never fed into a chain that will not take its anchors.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from governance.chain import Chain, Controller, Deployment, address_of, deploy, new_private_key
from governance.deploy_config import DEV_PARAMS, Allocation, DaoParams
from governance.errors import NodeNotApprovedError, UnfundedAccountError
from node.anchoring.evm import AnchorPublisher, Backoff
from node.errors import ConfigError
from node.settings import ChainSettings
from node.store import Outbox, Store

if TYPE_CHECKING:
    from node.anchoring.icp import IcpPublisher

log = logging.getLogger(__name__)

KEY_FILE = "chain.key"
DEPLOYMENT_FILE = "chain.json"
# The embedded chain's journal of signed transactions and its own deployment record.
EMBEDDED_JOURNAL = "embedded-chain.txs"
EMBEDDED_DEPLOYMENT = "embedded-chain.json"
EMBEDDED = "embedded"
# What one anchor may cost at most: the gas limit the publisher signs with (a log's first
# anchor, which creates its head, is estimated near 80k gas, plus the 20% margin), times a
# generous fee. Start-up refuses an account that cannot pay for even one.
ANCHOR_GAS_CEILING = 100_000


@dataclass
class Anchoring:
    """A connected chain, the checked controller and the publisher feeding it; and the
    ICP anchor canister's publisher when [icp] url and anchor_canister are set."""

    chain: Chain
    deployment: Deployment
    controller: Controller
    publisher: AnchorPublisher
    icp: IcpPublisher | None = None


def load_key(home: Path, *, create: bool = True) -> bytes:
    """The node's chain key from `<home>/chain.key`, created (0600) if missing and `create`."""
    path = home / KEY_FILE
    if not path.exists():
        if not create:
            raise ConfigError(f"{path} does not exist: the node has no chain key yet")
        key = new_private_key()
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
        return key
    return read_key_file(path)


def read_key_file(path: Path) -> bytes:
    """A 32-byte hex private key (with or without 0x) from a file."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the key file: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ConfigError(f"{path}: expected a hex private key") from None
    if len(key) != 32:
        raise ConfigError(f"{path}: expected a 32-byte key, found {len(key)} bytes")
    return key


def save_deployment(home: Path, deployment: Deployment) -> Path:
    path = home / DEPLOYMENT_FILE
    path.write_text(deployment.to_json() + "\n")
    return path


def load_deployment(home: Path) -> Deployment:
    path = home / DEPLOYMENT_FILE
    try:
        return Deployment.from_json(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist: deploy the contracts with `asi-node chain deploy --rpc URL`"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a deployment record ({exc})") from None


def deploy_for_node(
    chain: Chain,
    deployer_key: bytes,
    node_key: bytes,
    *,
    guardian: str | None = None,
    extra_nodes: tuple[str, ...] = (),
    fund_node_wei: int = 0,
    params: DaoParams = DEV_PARAMS,
    distribution: tuple[Allocation, ...] = (),
) -> Deployment:
    """Deploy the set with this node approved, and optionally fund the node's account.
    The parameters default to the dev profile's (see `governance.deploy_config`)."""
    node_address = address_of(node_key)
    deployment = deploy(
        chain,
        deployer_key,
        nodes=(node_address, *extra_nodes),
        guardian=guardian,
        params=params,
        distribution=distribution,
    )
    if fund_node_wei:
        chain.transfer(deployer_key, node_address, fund_node_wei)
    return deployment


def check_ready(controller: Controller, address: str) -> None:
    """Refuse to anchor from an account the controller or the chain will not accept."""
    if not controller.node_approved(address):
        raise NodeNotApprovedError(
            f"node address {address} is not approved on CampaignController "
            f"{controller.address} ({controller.chain.label}); ask governance to approve it"
        )
    fees = controller.chain.fees()
    needed = ANCHOR_GAS_CEILING * fees["maxFeePerGas"]
    balance = controller.chain.balance(address)
    if balance < needed:
        raise UnfundedAccountError(
            f"node address {address} holds {balance} wei on {controller.chain.label}; one "
            f"anchor may cost up to {needed} wei. Fund it before starting the node."
        )


def connect_deployed(settings: ChainSettings, home: Path) -> tuple[Chain, Deployment]:
    """The chain at `chain.rpc_url` and the deployment `<home>/chain.json` records on it;
    ConfigError when the URL is empty or the chain is not the one deployed to."""
    if not settings.rpc_url:
        raise ConfigError(
            "chain.rpc_url is empty (the embedded chain) but no embedded chain was "
            "started; set chain.rpc_url or use the demo"
        )
    deployment = load_deployment(home)
    expected = settings.chain_id or deployment.chain_id
    chain = Chain.connect(settings.rpc_url, expected_chain_id=expected)
    if chain.chain_id != deployment.chain_id:
        raise ConfigError(
            f"{home / DEPLOYMENT_FILE} records chain id {deployment.chain_id}, but "
            f"chain.chain_id is {expected}; redeploy or fix the setting"
        )
    return chain, deployment


def deployed_controller(settings: ChainSettings, home: Path) -> Controller | None:
    """The CampaignController of `chain.rpc_url` and `<home>/chain.json`, as
    `connect_deployed` reaches it; None when the URL is empty (the embedded chain is one
    home's own: no other node reads it)."""
    if not settings.rpc_url:
        return None
    chain, deployment = connect_deployed(settings, home)
    return Controller(chain, deployment.addresses["CampaignController"])


def open_publisher(
    settings: ChainSettings,
    home: Path,
    store: Store,
    *,
    chain: Chain | None = None,
    deployment: Deployment | None = None,
) -> Anchoring:
    """Connect, check everything, and return a ready publisher over the store's outbox.

    With `chain` and `deployment` given (the embedded chain, deployed in-process), those
    are used; otherwise the RPC URL of the settings and `<home>/chain.json`.
    """
    key = load_key(home)
    if chain is None or deployment is None:
        chain, deployment = connect_deployed(settings, home)
    controller = Controller(chain, deployment.addresses["CampaignController"])
    check_ready(controller, address_of(key))
    publisher = AnchorPublisher(
        Outbox(store),
        controller,
        key,
        confirmations=settings.confirmations,
        backoff=Backoff(settings.retry_base_seconds, settings.retry_max_seconds),
    )
    log.info("anchoring ready", extra={"chain_id": chain.chain_id, "node": publisher.address})
    return Anchoring(chain, deployment, controller, publisher)


def embedded_anchoring(settings: ChainSettings, home: Path, store: Store) -> Anchoring:
    """The embedded EVM with the set deployed, this node approved and funded.

    The chain is journaled in the home (`embedded-chain.txs`), so a later run, or
    `audit --rpc embedded`, replays it and finds the same contracts and anchors. It mines
    a block per transaction and never reorganises, so one confirmation is final.
    """
    chain, deployment = open_embedded(home, record=True)
    embedded = settings.model_copy(update={"confirmations": 1})
    return open_publisher(embedded, home, store, chain=chain, deployment=deployment)


def open_embedded(home: Path, *, record: bool) -> tuple[Chain, Deployment]:
    """Replay (or, with `record`, create) the home's embedded chain; return it and its set."""
    journal = home / EMBEDDED_JOURNAL
    record_path = home / EMBEDDED_DEPLOYMENT
    if record_path.exists() and journal.exists():
        chain = Chain.embedded(journal, record=record)
        try:
            deployment = Deployment.from_json(record_path.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{record_path}: not a deployment record ({exc})") from None
        return chain, deployment
    if not record:
        raise ConfigError(
            f"{home} has no embedded chain ({EMBEDDED_JOURNAL} and {EMBEDDED_DEPLOYMENT}); "
            "run the node (or the demo) with the embedded chain first"
        )
    journal.unlink(missing_ok=True)
    chain = Chain.embedded(journal)
    assert chain.faucet_key is not None
    node_key = load_key(home)
    deployment = deploy_for_node(chain, chain.faucet_key, node_key, fund_node_wei=10**20)
    record_path.write_text(deployment.to_json() + "\n")
    return chain, deployment


def open_audit_chain(rpc: str, home: Path | None) -> tuple[Chain, Deployment | None]:
    """The chain an auditor reads: `embedded` replays the home's journal, else an RPC URL."""
    if rpc == EMBEDDED:
        if home is None:
            raise ConfigError("--rpc embedded needs the node home that holds the embedded chain")
        return open_embedded(home, record=False)
    return Chain.connect(rpc), None
