"""The chain client, the outbox publisher and the anchor audit on the embedded EVM."""

from __future__ import annotations

from pathlib import Path

import pytest
from chains import Deployed

from attestation.errors import VerificationError
from governance.anchor_audit import verify_anchors, verify_on, verify_with_allow_list
from governance.chain import (
    Chain,
    Controller,
    ControllerReader,
    LogHead,
    address_of,
    artifact,
    chain_log_id,
    decode_revert,
    new_private_key,
)
from governance.directives import ALL_CAMPAIGNS, DirectiveKind
from governance.errors import (
    ChainError,
    ChainUnavailableError,
    ContractMismatchError,
    NodeNotApprovedError,
    TransactionRevertedError,
    UnfundedAccountError,
)
from governance.evm_source import EvmSource
from node.anchoring.chain_home import (
    check_ready,
    deploy_for_node,
    embedded_anchoring,
    open_audit_chain,
)
from node.anchoring.evm import AnchorPublisher
from node.anchoring.followers import AnchorFollowers
from node.settings import ChainSettings
from node.store import Outbox, Store


def _root(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_controller_at_a_wrong_address_is_refused(embedded: Deployed) -> None:
    token = embedded.deployment.addresses["GovToken"]
    with pytest.raises(ContractMismatchError, match="not asi-node's CampaignController"):
        Controller(embedded.chain, token)
    with pytest.raises(ContractMismatchError, match="holds no contract"):
        Controller(embedded.chain, address_of(new_private_key()))


def test_reverts_are_decoded_into_the_contracts_errors(embedded: Deployed) -> None:
    ctl = Controller(embedded.chain, embedded.controller_address)
    stranger = new_private_key()
    embedded.chain.transfer(embedded.chain.faucet_key or b"", address_of(stranger), 10**17)
    with pytest.raises(TransactionRevertedError) as info:
        ctl.prepare_anchor(stranger, _root(99), 1, _root(1), bytes(32))
    assert info.value.reason == f"NodeNotApproved({address_of(stranger)})"
    assert decode_revert(b"") == "reverted without a reason"


def test_unfunded_and_unapproved_nodes_are_refused_at_start(embedded: Deployed) -> None:
    ctl = Controller(embedded.chain, embedded.controller_address)
    with pytest.raises(NodeNotApprovedError, match="not approved"):
        check_ready(ctl, address_of(new_private_key()))
    # A node approved by its own deployment but never funded:
    broke = new_private_key()
    chain = embedded.chain
    assert chain.faucet_key is not None
    deployment = deploy_for_node(chain, chain.faucet_key, broke)
    with pytest.raises(UnfundedAccountError, match="holds 0 wei"):
        check_ready(
            Controller(chain, deployment.addresses["CampaignController"]), address_of(broke)
        )


def test_outbox_anchors_every_checkpoint_once(embedded: Deployed) -> None:
    store = Store.open("sqlite://")
    ctl = Controller(embedded.chain, embedded.controller_address)
    publisher = AnchorPublisher(Outbox(store), ctl, embedded.node_key, confirmations=1)
    log_id = _root(1001)
    for size in (64, 128, 192):
        publisher.submit(log_id, size, _root(size))
    publisher.submit(log_id, 64, _root(64))  # the same checkpoint again: no second row
    assert publisher.drain(timeout_s=30, poll_s=0)
    rows = publisher.outbox.rows(log_id=log_id)
    assert [(r.tree_size, r.status) for r in rows] == [
        (64, "confirmed"),
        (128, "confirmed"),
        (192, "confirmed"),
    ]
    assert all(r.gas_used and r.block_hash for r in rows)
    events = ctl.anchors(log_id)
    assert [(e.tree_size, e.root) for e in events] == [(s, _root(s)) for s in (64, 128, 192)]
    # A later gas figure (the first anchor of a log pays for creating its head):
    assert rows[1].gas_used is not None and rows[1].gas_used < 64 * 1000
    # Every anchored root stays readable on the controller, each chained onto the last:
    assert [ctl.anchored_root(log_id, embedded.node, s) for s in (64, 128, 192, 100)] == [
        _root(64),
        _root(128),
        _root(192),
        None,
    ]
    assert ctl.log_head(log_id, embedded.node) == LogHead(192, _root(192))
    verified = verify_on(ctl, log_id, [(s, _root(s)) for s in (64, 128, 192)], [embedded.node])
    assert [v.tree_size for v in verified] == [64, 128, 192]


def test_events_are_read_in_windows_narrowed_while_the_endpoint_refuses(
    embedded: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open("sqlite://")
    chain = embedded.chain
    ctl = Controller(chain, embedded.controller_address)
    publisher = AnchorPublisher(Outbox(store), ctl, embedded.node_key, confirmations=1)
    log_id = _root(1002)
    for size in (8, 16, 24, 32):
        publisher.submit(log_id, size, _root(size))
    assert publisher.drain(timeout_s=30, poll_s=0)
    whole = ctl.anchors(log_id)
    assert [e.tree_size for e in whole] == [8, 16, 24, 32]
    assert len({e.block_number for e in whole}) == 4  # one block each: windows split them

    monkeypatch.setattr(chain, "log_window", 1)
    assert ctl.anchors(log_id) == whole

    asked: list[tuple[int, int]] = []
    real = chain._w3.eth.get_logs

    def capped(params: dict[str, object]) -> object:  # like a public endpoint's range cap
        first, last = (int(str(params[k]), 0) for k in ("fromBlock", "toBlock"))
        asked.append((first, last))
        if last - first + 1 > 3:
            raise ValueError({"code": -32005, "message": "query exceeds max block range 3"})
        return real(params)

    monkeypatch.setattr(chain, "log_window", 5_000)
    monkeypatch.setattr(chain._w3.eth, "get_logs", capped)
    assert ctl.anchors(log_id) == whole
    assert chain.log_window <= 3 and all(b - a + 1 <= 3 for a, b in asked[-3:])
    assert asked[-1][1] == chain.head()  # "latest" is the head when the read began

    def refused(params: dict[str, object]) -> object:
        asked.append((0, 0))
        raise ValueError({"code": -32602, "message": "invalid filter"})

    monkeypatch.setattr(chain._w3.eth, "get_logs", refused)
    with pytest.raises(ChainError, match=r"reading anchor events on embedded.*invalid filter"):
        ctl.anchors(log_id, from_block=whole[0].block_number)
    assert chain.log_window == 1  # split down to one block before giving up

    def down(params: dict[str, object]) -> object:
        asked.append((0, 0))
        raise ConnectionError("connection refused")

    monkeypatch.setattr(chain, "log_window", 5_000)
    monkeypatch.setattr(chain._w3.eth, "get_logs", down)
    before = len(asked)
    with pytest.raises(ChainUnavailableError, match="did not answer"):
        ctl.anchors(log_id)
    assert len(asked) == before + 1 and chain.log_window == 5_000  # no splitting


def test_anchor_audit_names_missing_wrong_and_unapproved(embedded: Deployed) -> None:
    store = Store.open("sqlite://")
    ctl = Controller(embedded.chain, embedded.controller_address)
    publisher = AnchorPublisher(Outbox(store), ctl, embedded.node_key, confirmations=1)
    log_id = _root(2002)
    publisher.submit(log_id, 10, _root(10))
    assert publisher.drain(timeout_s=30, poll_s=0)
    node = [embedded.node]
    with pytest.raises(VerificationError, match=r"step 3 \(missing anchor\).*size 20"):
        verify_on(ctl, log_id, [(10, _root(10)), (20, _root(20))], node)
    with pytest.raises(VerificationError, match=r"step 4 \(wrong root\).*size 10"):
        verify_on(ctl, log_id, [(10, _root(11))], node)
    with pytest.raises(VerificationError, match=r"step 2 \(anchor key\).*not an approved"):
        verify_on(ctl, log_id, [(10, _root(10))], [address_of(new_private_key())])
    with pytest.raises(VerificationError, match="no approved node"):
        verify_anchors([], log_id, [(10, _root(10))], [])


def test_embedded_chain_is_replayed_from_its_journal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    store = Store.open("sqlite://")
    anchoring = embedded_anchoring(ChainSettings(), home, store)
    log_id = _root(3003)
    for size in (4, 8):
        anchoring.publisher.submit(log_id, size, _root(size))
    assert anchoring.publisher.drain(timeout_s=30, poll_s=0)
    node = anchoring.publisher.address
    # Another process (an auditor) rebuilds the chain from the home's journal.
    chain, deployment = open_audit_chain("embedded", home)
    assert deployment is not None
    assert deployment.addresses == anchoring.deployment.addresses
    replayed = Controller(chain, deployment.addresses["CampaignController"])
    verified = verify_on(replayed, log_id, [(4, _root(4)), (8, _root(8))], [node])
    assert [v.tree_size for v in verified] == [4, 8]
    # The node starting again continues on the same chain: the anchors are still there.
    again = embedded_anchoring(ChainSettings(), home, Store.open("sqlite://"))
    assert [e.tree_size for e in again.controller.anchors(log_id)] == [4, 8]


def test_feeding_the_logs_checkpoints_again_queues_only_new_ones(embedded: Deployed) -> None:
    ctl = Controller(embedded.chain, embedded.controller_address)
    publisher = AnchorPublisher(Outbox(Store.open("sqlite://")), ctl, embedded.node_key)
    log_id = _root(4004)
    first = [(log_id, 100, _root(100)), (log_id, 200, _root(200))]
    assert publisher.feed(first) == 2
    assert publisher.feed([*first, (log_id, 300, _root(300))]) == 1
    assert publisher.feed(first) == 0
    assert [r.tree_size for r in publisher.outbox.rows()] == [100, 200, 300]


def test_allow_list_is_read_from_the_controller_events(embedded: Deployed) -> None:
    chain = embedded.chain
    assert chain.faucet_key is not None
    kept, revoked = new_private_key(), new_private_key()
    deployment = deploy_for_node(chain, chain.faucet_key, kept, extra_nodes=(address_of(revoked),))
    ctl = Controller(chain, deployment.addresses["CampaignController"])
    assert ctl.approved_nodes() == {address_of(kept), address_of(revoked)}
    # The deployer stays guardian: it may revoke a node (never approve one).
    chain.send(chain.faucet_key, ctl.contract.functions.revokeNode(address_of(revoked)))
    assert ctl.approved_nodes() == {address_of(kept)}
    assert not ctl.node_approved(address_of(revoked))


def test_followers_anchor_checkpoints_as_the_log_grows(embedded: Deployed) -> None:
    ctl = Controller(embedded.chain, embedded.controller_address)
    publisher = AnchorPublisher(
        Outbox(Store.open("sqlite://")), ctl, embedded.node_key, confirmations=1
    )
    log_id = _root(5005)
    checkpoints: list[tuple[bytes, int, bytes]] = [(log_id, 10, _root(10))]
    followers = AnchorFollowers([publisher], lambda: list(checkpoints), poll_s=0.05)
    followers.start()
    checkpoints.append((log_id, 20, _root(20)))  # the log grows while the campaign runs
    checkpoints.append((log_id, 25, _root(25)))  # the checkpoint written at stop
    [summary] = followers.drain(timeout_s=30)
    assert (summary.confirmed, summary.pending, summary.failed, summary.drained) == (3, 0, 0, True)
    assert [e.tree_size for e in ctl.anchors(log_id)] == [10, 20, 25]


def test_audit_defaults_to_the_controllers_allow_list(embedded: Deployed) -> None:
    ctl = Controller(embedded.chain, embedded.controller_address)
    publisher = AnchorPublisher(
        Outbox(Store.open("sqlite://")), ctl, embedded.node_key, confirmations=1
    )
    log_id = _root(6006)
    publisher.submit(log_id, 5, _root(5))
    assert publisher.drain(timeout_s=30, poll_s=0)
    verified, approved = verify_with_allow_list(ctl, log_id, [(5, _root(5))])
    assert approved == {embedded.node} and [v.tree_size for v in verified] == [5]


def test_controller_reader_feeds_the_directive_watcher(embedded: Deployed) -> None:
    chain = embedded.chain
    assert chain.faucet_key is not None
    deployment = deploy_for_node(chain, chain.faucet_key, new_private_key())
    ctl = Controller(chain, deployment.addresses["CampaignController"])
    reader = ControllerReader(ctl)
    assert reader.effective_status(_root(77)) == 0  # a campaign the controller does not know
    chain.send(chain.faucet_key, ctl.contract.functions.pauseAll())  # the deployer is guardian
    names = [e.name for e in reader.events(deployment.block_number, reader.head())]
    assert names.count("NodeApproved") == 1 and names.count("GlobalPauseSet") == 1
    reading = EvmSource(reader, start_block=deployment.block_number).read()
    (pause,) = [d for d in reading.directives if d.kind == DirectiveKind.PAUSE]
    assert pause.campaign_id == ALL_CAMPAIGNS and pause.epoch == 1


def test_a_squatter_neither_takes_nor_blocks_a_nodes_log(embedded: Deployed) -> None:
    chain = embedded.chain
    assert chain.faucet_key is not None
    node_key, squatter_key = new_private_key(), new_private_key()
    node, squatter = address_of(node_key), address_of(squatter_key)
    deployment = deploy_for_node(
        chain, chain.faucet_key, node_key, extra_nodes=(squatter,), fund_node_wei=10**19
    )
    chain.transfer(chain.faucet_key, squatter, 10**18)
    ctl = Controller(chain, deployment.addresses["CampaignController"])
    log_id = _root(7007)
    # The squatter anchors under the node's log name first (log names are public)...
    chain.send(squatter_key, ctl.anchor_call(log_id, 1000, _root(666), bytes(32)))
    # ...which is its own log: the node anchors its log as if nothing happened.
    publisher = AnchorPublisher(Outbox(Store.open("sqlite://")), ctl, node_key, confirmations=1)
    for size in (10, 20):
        publisher.submit(log_id, size, _root(size))
    assert publisher.drain(timeout_s=30, poll_s=0)
    assert [r.status for r in publisher.outbox.rows()] == ["confirmed", "confirmed"]
    assert ctl.log_head(log_id, node) == LogHead(20, _root(20))
    assert ctl.log_head(log_id, squatter) == LogHead(1000, _root(666))
    assert chain_log_id(node, log_id) != chain_log_id(squatter, log_id)
    assert ctl.anchored_root(log_id, node, 1000) is None
    # The audit checks an approved node's own log; the squatter's anchors are set aside.
    verified, approved = verify_with_allow_list(ctl, log_id, [(10, _root(10)), (20, _root(20))])
    assert approved == {node, squatter} and {v.node for v in verified} == {node}
    with pytest.raises(VerificationError, match=r"step 3 \(missing anchor\).*size 1000"):
        verify_on(ctl, log_id, [(1000, _root(666))], [node])


def test_an_anchor_never_extends_another_history(embedded: Deployed) -> None:
    ctl = Controller(embedded.chain, embedded.controller_address)
    first = AnchorPublisher(
        Outbox(Store.open("sqlite://")), ctl, embedded.node_key, confirmations=1
    )
    log_id = _root(8008)
    first.submit(log_id, 10, _root(10))
    assert first.drain(timeout_s=30, poll_s=0)
    # The same key with another history of the log (a store rebuilt from another log):
    second = AnchorPublisher(
        Outbox(Store.open("sqlite://")), ctl, embedded.node_key, confirmations=1
    )
    second.submit(log_id, 10, _root(11))
    second.submit(log_id, 20, _root(20))
    assert second.drain(timeout_s=30, poll_s=0)
    ten, twenty = second.outbox.rows()
    assert (ten.status, twenty.status) == ("failed", "failed")
    assert "size 10 is anchored on-chain with root" in (ten.last_error or "")
    assert "the chain's last anchor of this log (size 10)" in (twenty.last_error or "")
    assert ctl.log_head(log_id, embedded.node) == LogHead(10, _root(10))
    # The controller itself refuses an anchor naming another predecessor:
    with pytest.raises(TransactionRevertedError) as info:
        ctl.prepare_anchor(embedded.node_key, log_id, 20, _root(20), _root(11))
    assert info.value.reason.startswith("PreviousRootMismatch(")


def _self_governed_controller(chain: Chain) -> Controller:
    """A bare CampaignController whose governance and guardian is the faucet account."""
    assert chain.faucet_key is not None
    me = address_of(chain.faucet_key)
    art = artifact("CampaignController")
    factory = chain._w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    receipt = chain.send(chain.faucet_key, factory.constructor(me, me))
    address = chain._w3.eth.get_transaction_receipt(receipt.tx_hash)["contractAddress"]
    return Controller(chain, address)


def test_a_removed_measurement_suspends_its_nodes_until_approved_again(
    embedded: Deployed,
) -> None:
    chain = embedded.chain
    assert chain.faucet_key is not None
    gov = chain.faucet_key
    ctl = _self_governed_controller(chain)
    node_key, other = new_private_key(), address_of(new_private_key())
    node = address_of(node_key)
    chain.transfer(gov, node, 10**18)
    measurement, newer = _root(71), _root(72)
    functions = ctl.contract.functions
    chain.send(gov, functions.setMeasurement(measurement, True))
    chain.send(gov, functions.approveNode(node, measurement))
    chain.send(gov, functions.approveNode(other, bytes(32)))
    assert ctl.node_approved(node) and ctl.approved_nodes() == {node, other}
    check_ready(ctl, node)

    chain.send(gov, functions.setMeasurement(measurement, False))
    assert not ctl.node_approved(node) and ctl.approved_nodes() == {other}
    with pytest.raises(NodeNotApprovedError, match="ask governance to approve it"):
        check_ready(ctl, node)
    with pytest.raises(TransactionRevertedError) as info:
        ctl.prepare_anchor(node_key, _root(1), 1, _root(1), bytes(32))
    assert info.value.reason == f"NodeSuspended({node}, 0x{measurement.hex()})"
    # The measurement approved again does not revive the node; approving the node does.
    chain.send(gov, functions.setMeasurement(measurement, True))
    assert not ctl.node_approved(node) and ctl.approved_nodes() == {other}
    chain.send(gov, functions.setMeasurement(newer, True))
    chain.send(gov, functions.approveNode(node, newer))
    assert ctl.node_approved(node) and ctl.approved_nodes() == {node, other}
    check_ready(ctl, node)
