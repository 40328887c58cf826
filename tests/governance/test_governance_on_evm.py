"""Near end to end on py-evm: DAO votes (a signed ballot relayed by the API), queue and
execute, and the node obeying the controller's events; a guardian pause; the guardian
cannot resume.

Uses issue 5's compiled artifacts and deploys them with web3 on eth-tester; the reader
and Governor client here are test-only stand-ins for issue 5's chain client (the only
web3 user in the package). Skipped on a tree without the artifacts. The same flow on
anvil through `governance/chain.py` is what issue 5's merge makes possible.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gov_fakes import GatedEngineer
from pydantic import SecretStr

from governance.ballots import Ballot, GovernorDomain, ProposalInfo, ProposalState, sign_ballot
from governance.directives import campaign_key
from governance.evm_source import ControllerEvent, EvmSource
from governance.watcher import Watcher
from node.api import create_app
from node.campaign import Budget, CampaignConfig
from node.gov_records import paused_starts
from node.governed import GovernedNode, config_sha256
from node.scheduler import CampaignRunner, RunSummary
from node.store import DirectiveLedger, Store

ARTIFACTS = Path(__file__).resolve().parents[2] / "governance" / "artifacts"
VOTER_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
EVENTS = ("DirectiveIssued", "CampaignForked", "GlobalPauseSet", "NodeRevoked", "NodeApproved")
TOKEN = "operator"

pytestmark = pytest.mark.skipif(
    not (ARTIFACTS / "DaoGovernor.json").exists(), reason="needs issue 5's contract artifacts"
)


class Web3Reader:
    def __init__(self, w3: Any, ctl: Any) -> None:
        self.w3, self.ctl = w3, ctl

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def events(self, from_block: int, to_block: int) -> list[ControllerEvent]:
        out = []
        for name in EVENTS:
            logs = getattr(self.ctl.events, name)().get_logs(
                from_block=from_block, to_block=to_block
            )
            out += [
                ControllerEvent(
                    name,
                    int(e["blockNumber"]),
                    int(e["logIndex"]),
                    "0x" + bytes(e["transactionHash"]).hex(),
                    dict(e["args"]),
                )
                for e in logs
            ]
        return out

    def effective_status(self, key: bytes) -> int:
        from web3.exceptions import ContractLogicError

        try:
            return int(self.ctl.functions.effectiveStatus(key).call())
        except ContractLogicError:
            return 0


class Web3Governor:
    def __init__(self, w3: Any, gov: Any, ctl: Any, relayer: str) -> None:
        self.w3, self.gov, self.ctl, self.relayer = w3, gov, ctl, relayer

    def domain(self) -> GovernorDomain:
        f = self.gov.functions
        return GovernorDomain(
            f.name().call(), self.w3.eth.chain_id, self.gov.address, f.version().call()
        )

    def controller(self) -> str:
        return str(self.ctl.address)

    def proposals(self) -> list[ProposalInfo]:
        count = self.gov.functions.proposalCount().call()
        found = []
        for i in range(count):
            pid = self.gov.functions.proposalDetailsAt(i).call()[0]
            info = self.proposal(pid)
            if info is not None:
                found.append(info)
        return found

    def proposal(self, proposal_id: int) -> ProposalInfo | None:
        from web3.exceptions import ContractLogicError

        f = self.gov.functions
        try:
            state = ProposalState(f.state(proposal_id).call())
        except ContractLogicError:
            return None
        against, for_, abstain = f.proposalVotes(proposal_id).call()
        return ProposalInfo(
            proposal_id,
            state,
            f.proposalSnapshot(proposal_id).call(),
            f.proposalDeadline(proposal_id).call(),
            for_,
            against,
            abstain,
        )

    def nonce(self, voter: str) -> int:
        return int(self.gov.functions.nonces(self.w3.to_checksum_address(voter)).call())

    def has_voted(self, proposal_id: int, voter: str) -> bool:
        voter = self.w3.to_checksum_address(voter)
        return bool(self.gov.functions.hasVoted(proposal_id, voter).call())

    def votes_at(self, voter: str, timepoint: int) -> int:
        voter = self.w3.to_checksum_address(voter)
        return int(self.gov.functions.getVotes(voter, timepoint).call())

    def _send(self, call: Any) -> str:
        return "0x" + bytes(call.transact({"from": self.relayer})).hex()

    def cast_vote_by_sig(self, ballot: Ballot) -> str:
        voter = self.w3.to_checksum_address(ballot.voter)
        f = self.gov.functions.castVoteBySig
        return self._send(f(ballot.proposal_id, ballot.support, voter, ballot.signature))

    def queue(self, proposal_id: int) -> str:
        return self._send(self.gov.get_function_by_signature("queue(uint256)")(proposal_id))

    def execute(self, proposal_id: int) -> str:
        return self._send(self.gov.get_function_by_signature("execute(uint256)")(proposal_id))


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


def test_dao_pause_and_resume_and_a_guardian_pause_reach_running_training(store: Store) -> None:
    from eth_account import Account
    from eth_tester.exceptions import TransactionFailed
    from web3 import EthereumTesterProvider, Web3

    w3 = Web3(EthereumTesterProvider())
    deployer, relayer, guardian = w3.eth.accounts[:3]
    voter = Account.from_key(VOTER_KEY).address
    w3.eth.send_transaction({"from": deployer, "to": voter, "value": 10**18})
    tester = w3.provider.ethereum_tester

    def deploy(name: str, *args: Any) -> Any:
        art = json.loads((ARTIFACTS / f"{name}.json").read_text())
        factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        tx = factory.constructor(*args).transact({"from": deployer, "gas": 12_000_000})
        address = w3.eth.get_transaction_receipt(tx)["contractAddress"]
        return w3.eth.contract(address=address, abi=art["abi"])

    token = deploy("GovToken", "g", "G", deployer, 10**24)
    timelock = deploy("DaoTimelock", 0, [], ["0x" + "00" * 20], deployer)
    gov = deploy("DaoGovernor", token.address, timelock.address, 1, 10, 4)
    ctl = deploy("CampaignController", deployer, guardian)

    cfg = CampaignConfig(preset="quick", baselines=("deltanet",), budget=Budget(max_candidates=1))
    x = store.create_campaign("x", cfg.model_dump(mode="json"))
    y = store.create_campaign(
        "y", cfg.model_copy(update={"researcher_seed": 1}).model_dump(mode="json")
    )
    for camp in (x, y):
        ctl.functions.registerCampaign(campaign_key(camp.id), b"\x00" * 32, "").transact(
            {"from": deployer}
        )
    role = timelock.functions.PROPOSER_ROLE().call()
    timelock.functions.grantRole(role, gov.address).transact({"from": deployer})
    gov_role = ctl.functions.GOVERNANCE_ROLE().call()
    ctl.functions.grantRole(gov_role, timelock.address).transact({"from": deployer})
    ctl.functions.renounceRole(gov_role, deployer).transact({"from": deployer})
    token.functions.delegate(voter).transact({"from": deployer})  # holders delegate

    governor = Web3Governor(w3, gov, ctl, relayer)
    api = TestClient(create_app(store, governor=governor, operator_token=SecretStr(TOKEN)))
    operator = {"Authorization": f"Bearer {TOKEN}"}
    source = EvmSource(Web3Reader(w3, ctl), campaigns=lambda: [x.id, y.id])
    watcher = Watcher([source], confirmations=2, stale_after_s=3600)
    eng = GatedEngineer()

    def run(cid: str, stop: threading.Event) -> RunSummary:
        runner = CampaignRunner(
            store,
            store.get_campaign(cid),
            eng,
            1,
            1,
            b"s" * 32,
            stop=stop,  # type: ignore[arg-type]
        )
        return runner.run()

    node = GovernedNode(store, watcher, run, [x.id, y.id], stop_deadline_s=10)
    try:

        def passes(action: str, campaign: str, **extra: Any) -> None:
            body = {"action": action, "campaign": campaign, "description": f"{action} {campaign}"}
            prep = api.post("/gov/proposals/prepare", json=body | extra).json()
            calldatas = [bytes.fromhex(c[2:]) for c in prep["calldatas"]]
            gov.functions.propose(prep["targets"], [0], calldatas, prep["description"]).transact(
                {"from": deployer}
            )
            pid = int(prep["proposal_id"])
            tester.mine_blocks(2)
            nonce = int(api.get(f"/gov/voters/{voter}/nonce").json()["nonce"])
            ballot = sign_ballot(VOTER_KEY, governor.domain(), pid, 1, nonce)
            vote = {
                "proposal_id": pid,
                "support": 1,
                "voter": voter,
                "nonce": nonce,
                "signature": "0x" + ballot.signature.hex(),
                "chain_id": w3.eth.chain_id,
                "verifying_contract": gov.address,
            }
            assert api.post("/gov/ballots", json=vote).status_code == 202
            assert api.post("/gov/ballots", json=vote).status_code == 409  # replay
            tester.mine_blocks(11)
            assert api.get(f"/gov/proposals/{pid}").json()["state"] == "succeeded"
            assert api.post(f"/gov/proposals/{pid}/queue", headers=operator).status_code == 200
            assert api.post(f"/gov/proposals/{pid}/execute", headers=operator).status_code == 200
            assert api.get(f"/gov/proposals/{pid}").json()["state"] == "executed"

        assert sorted(node.step().started) == sorted([x.id, y.id])
        assert eng.started.acquire(timeout=10) and eng.started.acquire(timeout=10)
        running_x = store.list_experiments(x.id, status="running")[0]

        passes("pause", x.id)
        report = node.step()
        assert x.id in report.stopping
        (stopped,) = node.wait_stopped(x.id, 10).stopped
        assert stopped.within_deadline
        assert store.get_experiment(running_x.id).status == "queued"
        for _ in range(3):
            tester.mine_blocks(1)
            assert x.id not in node.step().started

        # The guardian pauses y: applied within two polls; it cannot resume.
        ctl.functions.pauseCampaign(campaign_key(y.id)).transact({"from": guardian})
        assert y.id in node.step().stopping
        with pytest.raises(TransactionFailed):
            ctl.functions.resumeCampaign(campaign_key(y.id)).transact({"from": guardian})

        passes("resume", x.id)
        started = node.step().started + node.step().started
        if x.id not in started:
            tester.mine_blocks(1)
            started += node.step().started
        assert x.id in started
        eng.release.set()
        node.runs[x.id].thread.join(30)
        node.step()
        assert store.get_campaign(x.id).status == "done"
        assert store.get_campaign(y.id).status == "paused"
        kinds = [d.kind for d in DirectiveLedger(store).list_applied(x.id)]
        assert kinds[-2:] == ["pause", "resume"]
        assert paused_starts(store, x.id) == []

        # A fork proposal: the child continues from x's state with the new config.
        child_cfg = cfg.model_copy(update={"budget": Budget(max_candidates=2)})
        child_json = child_cfg.model_dump(mode="json")
        node.configs = lambda config_hash, uri: child_json
        from attestation.keys import NodeKey
        from node.records import Recorder
        from node.translog import NodeLog

        tlog = NodeLog(store, NodeKey.generate())  # x's records: the fork names a log size
        node.recorder = Recorder(tlog, store)
        node.recorder.catch_up(store.get_campaign(x.id), unscored=True)
        position = tlog.size
        passes(
            "fork",
            x.id,
            child="x-wide",
            from_tree_size=position,
            checkpoint_root="0x" + tlog.root(position).hex(),
            config_hash="0x" + config_sha256(child_json).hex(),
            config_uri="file:x-wide.json",
        )
        forked = node.step().forked
        if not forked:
            tester.mine_blocks(1)  # a fork waits for its confirmations
            forked = node.step().forked
        (child_id,) = forked
        child = store.get_campaign(child_id)
        assert child.name == "x-wide" and child.parent_campaign_id == x.id
        assert child.fork_tree_size == position and child.config_hash == child_cfg.config_hash()
        assert len(store.list_experiments(child.id)) == len(store.list_experiments(x.id))
        node.runs[child.id].thread.join(30)
        node.step()
        assert store.get_campaign(child.id).status == "done"
        generated = [c for c in store.list_candidates(child.id) if c.origin != "baseline"]
        assert len(generated) == 2  # one inherited from x, one new under the child's budget
    finally:
        eng.release.set()
        node.shutdown(timeout_s=10)
