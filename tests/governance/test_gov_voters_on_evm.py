"""Serving voters against the real contracts on the embedded EVM (py-evm): prepared
proposals run as the timelock on the real controller, listings read from the real
Governor, a smart-contract wallet's ERC-1271 ballot and a v-in-{0,1} ballot counted by
the real Governor, and the relay sending back to back while a block is slow; on anvil,
the same simulation over JSON-RPC (a timelock holding no ether)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dao import Dao
from fastapi.testclient import TestClient
from pydantic import SecretStr

from governance.ballots import sign_ballot
from governance.chain import Chain, Controller, address_of, chain_log_id, deploy, new_private_key
from governance.deploy_config import DEV_PARAMS
from governance.directives import campaign_key
from governance.relay import ChainGovernor
from node.api.app import create_app
from node.store import CampaignRow, Store

TOKEN = "operator"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
SUPPLY = 10**24
WALLET = Path(__file__).parent / "wallet" / "OwnerWallet.json"


class World:
    """The contract set deployed (no timelock delay), one approved node, a voter with most
    votes, the relay (a funded key with no votes), a store with campaign x registered."""

    def __init__(self, store: Store) -> None:
        self.chain = Chain.embedded()
        assert self.chain.faucet_key is not None
        self.node_key = new_private_key()
        self.deployment = deploy(
            self.chain,
            self.chain.faucet_key,
            nodes=[address_of(self.node_key)],
            params=replace(DEV_PARAMS, timelock_delay_s=0, voting_period=10),
        )
        self.dao = Dao(self.chain, self.deployment, self.chain.faucet_key, anvil=False)
        self.chain.transfer(self.chain.faucet_key, address_of(self.node_key), 10**18)
        self.voter_key = self.dao.holder(SUPPLY * 6 // 10)
        self.voter = address_of(self.voter_key)
        self.governor = ChainGovernor.from_deployment(
            self.chain, self.deployment, self.dao.funded()
        )
        self.controller = Controller(self.chain, self.deployment.addresses["CampaignController"])
        self.store = store
        self.x = store.create_campaign("x", {"preset": "quick"})
        self.dao.register([self.x], self.voter_key, self.governor)
        self.api = self.fresh_api()

    def fresh_api(self) -> TestClient:
        """The node's app (its rate limits start afresh: each test votes as it needs)."""
        app = create_app(self.store, governor=self.governor, operator_token=SecretStr(TOKEN))
        return TestClient(app)

    def prepare(self, body: dict[str, Any]) -> Any:
        return self.api.post("/gov/proposals/prepare", json={"description": "d"} | body)

    def submit(self, prepared: dict[str, Any], key: bytes | None = None) -> int:
        """Send `propose` as the voter's wallet would: the raw calldata to the Governor."""
        proposer = key or self.voter_key
        gov = self.dao.contract("DaoGovernor").functions
        call = gov.propose(
            prepared["targets"],
            [int(v) for v in prepared["values"]],
            [bytes.fromhex(c[2:]) for c in prepared["calldatas"]],
            prepared["description"],
        )
        assert "0x" + call._encode_transaction_data()[2:] == prepared["propose_calldata"]
        self.chain.send(proposer, call)
        self.dao.mine(2)
        return int(prepared["proposal_id"])

    def ballot(self, key: bytes, pid: int, *, voter: str | None = None) -> dict[str, Any]:
        domain = self.governor.domain()
        who = voter or address_of(key)
        b = sign_ballot(key, domain, pid, 1, self.governor.nonce(who), voter=voter)
        return {
            "proposal_id": pid,
            "support": 1,
            "voter": b.voter,
            "nonce": b.nonce,
            "signature": "0x" + b.signature.hex(),
            "chain_id": domain.chain_id,
            "verifying_contract": domain.verifying_contract,
        }


@pytest.fixture(scope="module")
def shared_world() -> Iterator[World]:
    with Store.open("sqlite://") as store:
        yield World(store)


@pytest.fixture
def world(shared_world: World) -> World:
    shared_world.api = shared_world.fresh_api()
    return shared_world


def reason(r: Any) -> str:
    assert r.status_code == 409, r.text
    assert r.json()["detail"]["error"] == "TransactionRevertedError"
    return str(r.json()["detail"]["detail"])


def test_prepare_runs_every_call_on_the_real_controller_as_the_timelock(world: World) -> None:
    node = address_of(world.node_key)
    measurement = "0x" + "34" * 32
    ok = [
        {"action": "pause", "campaign": "x"},
        {"action": "stop", "campaign": "x"},
        {"action": "register", "campaign": "c-new", "config_hash": "0x" + "07" * 32},
        {"action": "pause_all"},
        {"action": "set_measurement", "measurement": measurement},
        {"action": "approve_node", "node": "0x" + "12" * 20},
        {"action": "revoke_node", "node": node},
    ]
    for body in ok:
        r = world.prepare(body)
        assert r.status_code == 200, (body, r.text)
        assert all(c["simulated"] for c in r.json()["calls"])
    # A resume of a campaign unknown to the controller, a registration of a known one.
    world.store.create_campaign("unregistered", {"preset": "quick", "seed": 9})
    assert "UnknownCampaign(" in reason(
        world.prepare({"action": "resume", "campaign": "unregistered"})
    )
    assert "CampaignExists(" in reason(world.prepare({"action": "register", "campaign": "x"}))
    assert "InvalidTransition(" in reason(world.prepare({"action": "resume", "campaign": "x"}))
    assert "not paused globally" in reason(world.prepare({"action": "unpause_all"}))
    assert "NodeNotApproved(" in reason(
        world.prepare({"action": "revoke_node", "node": "0x" + "56" * 20})
    )
    assert "MeasurementNotApproved(" in reason(
        world.prepare({"action": "approve_node", "node": node, "measurement": measurement})
    )
    fork = {
        "action": "fork",
        "campaign": "x",
        "child": "x-wide",
        "log_id": "0x" + "0c" * 32,
        "from_tree_size": 3,
        "checkpoint_root": "0x" + "0a" * 32,
        "config_hash": "0x" + "0b" * 32,
    }
    assert "CheckpointNotAnchored(" in reason(world.prepare(fork))


def test_a_fork_that_resumes_its_child_passes_the_real_dao(world: World) -> None:
    """The fork runs as the timelock against the anchored checkpoint; the resume of its
    child is not run alone (the child does not exist yet) and succeeds after the fork."""
    from node.tlog.log import log_id as log_name_of

    name = log_name_of("asi-node.log/test")
    root = bytes(range(32))
    world.chain.send(world.node_key, world.controller.anchor_call(name, 5, root, bytes(32)))
    log = chain_log_id(address_of(world.node_key), name)
    body = {
        "action": "fork",
        "campaign": "x",
        "child": "x-wide",
        "log_id": "0x" + log.hex(),
        "from_tree_size": 5,
        "checkpoint_root": "0x" + root.hex(),
        "config_hash": "0x" + "0b" * 32,
        "resume_child": True,
        "proposer": world.voter,
        "description": "fork x into x-wide and run it",
    }
    r = world.prepare(body)
    assert r.status_code == 200, r.text
    prepared = r.json()
    assert [c["simulated"] for c in prepared["calls"]] == [True, False]
    assert prepared["proposer"] == world.voter
    # The #proposer= suffix binds it: someone else's wallet cannot submit it.
    stranger = world.dao.holder(SUPPLY // 100)
    with pytest.raises(Exception, match="GovernorRestrictedProposer"):
        world.submit(prepared, stranger)
    pid = world.submit(prepared)
    assert (
        world.api.post("/gov/ballots", json=world.ballot(world.voter_key, pid)).status_code == 202
    )
    world.dao.close_vote(pid)
    assert world.api.post(f"/gov/proposals/{pid}/queue", headers=OPERATOR).status_code == 200
    assert world.api.post(f"/gov/proposals/{pid}/execute", headers=OPERATOR).status_code == 200
    status, epoch = world.controller.contract.functions.campaign(campaign_key("x-wide")).call()[:2]
    assert (status, epoch) == (1, 2)  # Active, after its fork (1) and resume (2)


def test_listings_show_the_real_governors_proposals(world: World) -> None:
    r = world.prepare(
        {"action": "set_measurement", "measurement": "0x" + "77" * 32, "proposer": world.voter}
    )
    assert r.status_code == 200, r.text
    pid = world.submit(r.json())
    path = f"/gov/proposals/{pid}"
    shown = world.api.get(path, params={"voter": world.voter}).json()
    assert shown["state"] == "active" and shown["proposer"] == world.voter
    assert shown["has_voted"] is False and shown["eta"] is None
    supply = world.dao.contract("GovToken").functions.totalSupply().call()
    assert shown["quorum"] == str(supply * 4 // 100)  # the dev profile's 4% at the snapshot
    (call,) = shown["calls"]
    assert call["function"] == "setMeasurement"
    assert call["args"] == {"measurement": "0x" + "77" * 32, "approved": True}
    assert (
        world.api.post("/gov/ballots", json=world.ballot(world.voter_key, pid)).status_code == 202
    )
    shown = world.api.get(path, params={"voter": world.voter}).json()
    assert shown["has_voted"] is True and int(shown["votes"]["for"]) == SUPPLY * 6 // 10
    world.dao.close_vote(pid)
    assert world.api.post(f"{path}/queue", headers=OPERATOR).status_code == 200
    shown = world.api.get(path).json()
    assert shown["state"] == "queued" and shown["eta"] == world.chain.timestamp()
    listed = {p["proposal_id"]: p for p in world.api.get("/gov/proposals").json()}
    assert listed[str(pid)]["calls"] == shown["calls"]
    assert world.api.post(f"{path}/execute", headers=OPERATOR).status_code == 200


def _deploy_wallet(world: World, owner: str) -> str:
    artifact = json.loads(WALLET.read_text())
    w3 = world.chain._w3
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = world.chain.send(world.dao.treasury_key, factory.constructor(owner))
    return str(w3.eth.get_transaction_receipt(receipt.tx_hash)["contractAddress"])


def test_a_smart_contract_wallets_erc1271_ballot_is_counted(world: World) -> None:
    owner_key = new_private_key()
    wallet = _deploy_wallet(world, address_of(owner_key))
    assert world.governor.is_contract(wallet) and not world.governor.is_contract(world.voter)
    backer = world.dao.holder(SUPPLY // 10, delegate_to_self=False)
    token = world.dao.contract("GovToken").functions
    world.chain.send(backer, token.delegate(wallet))  # the wallet votes with these tokens
    r = world.prepare({"action": "pause_all"})
    pid = world.submit(r.json())
    forged = world.ballot(new_private_key(), pid, voter=wallet)
    r = world.api.post("/gov/ballots", json=forged)
    assert r.status_code == 401 and "ERC-1271" in r.json()["detail"]["detail"]
    sent = world.chain.nonce(world.governor.relayer)
    r = world.api.post("/gov/ballots", json=world.ballot(owner_key, pid, voter=wallet))
    assert r.status_code == 202, r.text
    gov = world.dao.contract("DaoGovernor").functions
    assert gov.hasVoted(pid, wallet).call()
    assert gov.proposalVotes(pid).call()[1] == SUPPLY // 10
    assert world.chain.nonce(world.governor.relayer) == sent + 1


def test_an_account_signature_with_v_0_or_1_is_counted(world: World) -> None:
    r = world.prepare({"action": "pause", "campaign": "x", "description": "pause x again"})
    pid = world.submit(r.json())
    body = world.ballot(world.voter_key, pid)
    signature = bytes.fromhex(body["signature"][2:])
    body["signature"] = "0x" + (signature[:64] + bytes([signature[64] - 27])).hex()
    r = world.api.post("/gov/ballots", json=body)
    assert r.status_code == 202, r.text
    assert world.dao.contract("DaoGovernor").functions.hasVoted(pid, world.voter).call()


def test_the_relay_sends_back_to_back_while_a_block_is_slow(world: World) -> None:
    """The first ballot's receipt is held back; the second voter's ballot is signed,
    sent and mined meanwhile, with the relayer's next nonce."""
    other_key = world.dao.holder(SUPPLY // 100)
    r = world.prepare({"action": "pause", "campaign": "x", "description": "one more pause"})
    pid = world.submit(r.json())
    wait = world.chain.wait
    release = threading.Event()
    first_waiting = threading.Event()
    first_tx: list[bytes] = []

    def slow_wait(tx_hash: bytes, timeout_s: float = 60.0) -> Any:
        if not first_tx:
            first_tx.append(tx_hash)
            first_waiting.set()
            assert release.wait(30)
        return wait(tx_hash, timeout_s)

    world.chain.wait = slow_wait  # type: ignore[method-assign]
    try:
        start = world.chain.nonce(world.governor.relayer)
        answers: list[Any] = []
        first = world.ballot(world.voter_key, pid)
        worker = threading.Thread(
            target=lambda: answers.append(world.api.post("/gov/ballots", json=first))
        )
        worker.start()
        assert first_waiting.wait(30)
        second = world.api.post("/gov/ballots", json=world.ballot(other_key, pid))
        assert second.status_code == 202, second.text
        assert not answers  # the first is still waiting for its block
        release.set()
        worker.join(30)
    finally:
        world.chain.wait = wait  # type: ignore[method-assign]
        release.set()
    assert answers[0].status_code == 202, answers[0].text
    assert answers[0].json()["tx"] == "0x" + first_tx[0].hex()
    assert world.chain.nonce(world.governor.relayer) == start + 2
    gov = world.dao.contract("DaoGovernor").functions
    assert gov.hasVoted(pid, world.voter).call() and gov.hasVoted(pid, address_of(other_key)).call()


@pytest.mark.integration
def test_prepare_runs_as_the_timelock_over_json_rpc(anvil: Any) -> None:
    """On anvil the simulation is a plain eth_call from the timelock, which holds no ether."""
    from chains import ANVIL_KEY

    chain = Chain.connect(anvil.url)
    deployment = deploy(chain, ANVIL_KEY)
    timelock = deployment.addresses["DaoTimelock"]
    assert chain.balance(timelock) == 0
    with Store.open("sqlite://") as store:
        camp: CampaignRow = store.create_campaign("x", {"preset": "quick"})
        governor = ChainGovernor.from_deployment(chain, deployment, ANVIL_KEY)
        api = TestClient(create_app(store, governor=governor))
        body = {"action": "register", "campaign": "x", "description": "register x"}
        r = api.post("/gov/proposals/prepare", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["calls"][0]["args"]["campaignId"] == camp.id
        r = api.post("/gov/proposals/prepare", json=body | {"action": "pause"})
        assert "UnknownCampaign(" in reason(r)
