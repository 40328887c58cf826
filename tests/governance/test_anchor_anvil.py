"""Anchoring against a real node: anvil from npm on a loopback port."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from chains import ANVIL_KEY, Anvil, free_port

from attestation.errors import VerificationError
from governance.anchor_audit import verify_log_anchors
from governance.chain import Chain, address_of
from governance.errors import (
    ChainUnavailableError,
    ContractMismatchError,
    NonceError,
    NotAnEvmNodeError,
    SourceError,
    UnfundedAccountError,
    WrongChainError,
)
from governance.evm_source import EvmSource
from node.anchoring.chain_home import load_deployment, load_key, open_publisher
from node.anchoring.evm import AnchorPublisher, Backoff
from node.cli.main import main
from node.governed.obey import sources_from_settings
from node.settings import ChainSettings, load_settings
from node.store import Outbox, Store

pytestmark = pytest.mark.integration

LOG = bytes.fromhex("11" * 32)


def _root(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _deploy(anvil: Anvil, home: Path, fund_eth: str = "1") -> None:
    key_file = home.parent / f"{home.name}-deployer.key"
    key_file.write_text(ANVIL_KEY.hex())
    args = ["--home", str(home), "chain", "deploy", "--rpc", anvil.url, "--profile", "dev"]
    args += ["--deployer-key-file", str(key_file), "--fund-node-eth", fund_eth]
    assert main(args) == 0


def _publisher(anvil: Anvil, home: Path, store: Store, confirmations: int) -> AnchorPublisher:
    settings = ChainSettings(rpc_url=anvil.url, confirmations=confirmations)
    anchoring = open_publisher(settings, home, store)
    # Fast retries for the test; the back-off itself is the same code path.
    anchoring.publisher.backoff = Backoff(base_s=0.01, max_s=0.05)
    return anchoring.publisher


def _drain_mining(publisher: AnchorPublisher, rounds: int = 60) -> None:
    """Step, mining an empty block each round so that confirmations accrue."""
    for _ in range(rounds):
        publisher.step()
        if not publisher.outbox.rows("pending") and not publisher.outbox.rows("sent"):
            return
        publisher.chain.rpc("evm_mine", [])
    raise AssertionError(f"outbox not drained: {publisher.outbox.rows()}")


def test_anchors_land_and_audit_passes(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    _deploy(anvil, home)
    store = Store.open(f"sqlite:///{home / 'node.db'}")
    publisher = _publisher(anvil, home, store, confirmations=2)
    sizes = (64, 128, 192)
    for size in sizes:
        publisher.submit(LOG, size, _root(size))
    _drain_mining(publisher)
    assert {r.status for r in publisher.outbox.rows()} == {"confirmed"}
    capsys.readouterr()
    assert main(["--home", str(home), "chain", "status", "--rpc", anvil.url]) == 0
    status = capsys.readouterr().out
    assert "chain 31337" in status
    assert "outbox: 0 pending, 0 sent, 3 confirmed, 0 failed" in status
    controller = load_deployment(home).addresses["CampaignController"]
    node = address_of(load_key(home))
    checkpoints = [(s, _root(s)) for s in sizes]
    verified = verify_log_anchors(anvil.url, controller, LOG, checkpoints, [node])
    assert [v.tree_size for v in verified] == list(sizes)
    with pytest.raises(VerificationError, match=r"missing anchor.*size 256"):
        verify_log_anchors(anvil.url, controller, LOG, [*checkpoints, (256, _root(256))], [node])
    with pytest.raises(VerificationError, match=r"wrong root.*size 128"):
        verify_log_anchors(anvil.url, controller, LOG, [(128, _root(1))], [node])
    other = address_of(bytes.fromhex("22" * 32))
    with pytest.raises(
        VerificationError, match=rf"anchored only by {node}, which is not an approved"
    ):
        verify_log_anchors(anvil.url, controller, LOG, checkpoints, [other])


def test_outbox_catches_up_after_rpc_restart(anvil: Anvil, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _deploy(anvil, home)
    store = Store.open(f"sqlite:///{tmp_path / 'node.db'}")
    publisher = _publisher(anvil, home, store, confirmations=2)
    for size in (10, 20, 30):
        publisher.submit(LOG, size, _root(size))
    publisher.step()  # 10 signed and sent, not yet confirmed
    anvil.stop()
    for size in (40, 50):
        publisher.submit(LOG, size, _root(size))
    report = publisher.step()
    assert not report.reachable
    assert len(publisher.outbox.rows()) == 5  # nothing dropped while the endpoint was down
    anvil.start()
    # A new process: the publisher is rebuilt from the same database after the restart.
    store.close()
    store = Store.open(f"sqlite:///{tmp_path / 'node.db'}")
    publisher = _publisher(anvil, home, store, confirmations=2)
    _drain_mining(publisher)
    events = publisher.controller.anchors(LOG)
    assert [(e.tree_size, e.root) for e in events] == [(s, _root(s)) for s in (10, 20, 30, 40, 50)]
    # Five anchors, five transactions from the node's account: nothing was sent twice.
    assert publisher.chain.nonce(publisher.address) == 5


def test_nonce_taken_by_another_sender_is_resigned(anvil: Anvil, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _deploy(anvil, home)
    store = Store.open("sqlite://")
    publisher = _publisher(anvil, home, store, confirmations=1)
    row = publisher.submit(LOG, 7, _root(7))
    # The publisher signed and stored the anchor, then died before broadcasting it...
    signed = publisher.controller.prepare_anchor(publisher.key, LOG, 7, _root(7), bytes(32))
    publisher.outbox.signed(
        row, sender=signed.sender, nonce=signed.nonce, tx_hash=signed.tx_hash, raw_tx=signed.raw
    )
    # ...and another process holding the same key used that nonce for something else.
    taken = publisher.chain.transfer(publisher.key, address_of(ANVIL_KEY), 1)
    assert publisher.chain.receipt(signed.tx_hash) is None
    assert taken.tx_hash != signed.tx_hash
    _drain_mining(publisher)
    (final,) = publisher.outbox.rows()
    assert final.status == "confirmed"
    assert final.nonce == signed.nonce + 1
    assert [e.tree_size for e in publisher.controller.anchors(LOG)] == [7]
    # Sending the stale transaction now is refused by the node as a taken nonce.
    with pytest.raises(NonceError, match="nonce too low"):
        publisher.chain.broadcast(signed.raw)


def test_reorg_below_confirmation_depth_is_followed(anvil: Anvil, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _deploy(anvil, home)
    store = Store.open("sqlite://")
    publisher = _publisher(anvil, home, store, confirmations=3)
    snapshot = publisher.chain.rpc("evm_snapshot", [])
    publisher.submit(LOG, 5, _root(5))
    publisher.step()  # sent and mined
    publisher.step()  # receipt recorded; 1 of 3 confirmations
    (mined,) = publisher.outbox.rows()
    assert mined.status == "sent" and mined.block_number is not None
    # The block holding the anchor is dropped and the chain grows on another branch.
    publisher.chain.rpc("evm_revert", [snapshot])
    publisher.chain.rpc("evm_mine", [])
    publisher.chain.rpc("evm_mine", [])
    assert publisher.chain.receipt(mined.tx_hash or b"") is None
    _drain_mining(publisher)
    (final,) = publisher.outbox.rows()
    assert final.status == "confirmed"
    assert final.tx_hash == mined.tx_hash  # the same signed transaction, broadcast again
    assert final.block_hash != mined.block_hash
    assert [e.tree_size for e in publisher.controller.anchors(LOG)] == [5]


def test_wrong_chain_id_is_refused(anvil: Anvil) -> None:
    with pytest.raises(WrongChainError, match="serves chain id 31337, but chain id 1"):
        Chain.connect(anvil.url, expected_chain_id=1)


def test_recorded_chain_id_must_match(anvil: Anvil, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _deploy(anvil, home)
    settings = ChainSettings(rpc_url=anvil.url, chain_id=5)
    with pytest.raises(WrongChainError, match="chain id 5 is expected"):
        open_publisher(settings, home, Store.open("sqlite://"))


def test_wrong_contract_address_is_refused(anvil: Anvil, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _deploy(anvil, home)
    record = home / "chain.json"
    deployment = load_deployment(home)
    record.write_text(
        record.read_text().replace(
            deployment.addresses["CampaignController"], deployment.addresses["DaoTimelock"]
        )
    )
    with pytest.raises(ContractMismatchError, match="not asi-node's CampaignController"):
        open_publisher(ChainSettings(rpc_url=anvil.url), home, Store.open("sqlite://"))


def test_unfunded_node_key_is_refused(anvil: Anvil, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _deploy(anvil, home, fund_eth="0")
    with pytest.raises(UnfundedAccountError, match="holds 0 wei"):
        open_publisher(ChainSettings(rpc_url=anvil.url), home, Store.open("sqlite://"))
    assert Outbox(Store.open("sqlite://")).rows() == []


class _NotRpc(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_rpc() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _NotRpc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_endpoint_that_is_not_an_evm_node_is_refused(not_rpc: str) -> None:
    with pytest.raises(NotAnEvmNodeError, match="did not answer eth_chainId"):
        Chain.connect(not_rpc)


def test_an_endpoint_that_is_down_is_reported_as_unavailable() -> None:
    with pytest.raises(ChainUnavailableError, match="no answer"):
        Chain.connect(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(NotAnEvmNodeError, match="http:// or https://"):
        Chain.connect("ftp://example.invalid")


def test_an_unmined_anchor_is_replaced_with_higher_fees(anvil: Anvil, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _deploy(anvil, home)
    publisher = _publisher(anvil, home, Store.open("sqlite://"), confirmations=1)
    publisher.replace_after = timedelta(0)
    publisher.chain.rpc("evm_setAutomine", [False])  # nothing is mined until we say so
    publisher.submit(LOG, 3, _root(3))
    publisher.step()
    (first,) = publisher.outbox.rows("sent")
    publisher.step()  # still unmined past replace_after: re-signed at the same nonce
    (second,) = publisher.outbox.rows("sent")
    assert second.nonce == first.nonce and second.tx_hash != first.tx_hash
    publisher.chain.rpc("evm_mine", [])
    publisher.step()
    (final,) = publisher.outbox.rows()
    assert (final.status, final.tx_hash) == ("confirmed", second.tx_hash)
    assert publisher.chain.receipt(first.tx_hash or b"") is None  # the old one was replaced
    assert [e.tree_size for e in publisher.controller.anchors(LOG)] == [3]


def test_configured_chain_is_a_directive_source_that_fails_as_source_error(
    anvil: Anvil, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    _deploy(anvil, home)
    settings = load_settings(home, env={"ASI_NODE_CHAIN__RPC_URL": anvil.url})
    (source,) = sources_from_settings(settings)
    assert isinstance(source, EvmSource)
    reading = source.read()
    assert list(reading.directives) == []  # nothing registered yet; this node is approved
    assert not source.revoked
    anvil.stop()
    with pytest.raises(SourceError, match="cannot be read"):
        source.read()
