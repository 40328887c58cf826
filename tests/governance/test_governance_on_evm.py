"""The DAO flow on the embedded EVM (py-evm) through `governance/chain.py`: a signed
ballot relayed by the API through `ChainGovernor`, queue and execute as a keeper, the node
obeying the controller through `ControllerReader`; a guardian pause the guardian cannot
undo; reverts of the real Governor and controller decoded into the errors callers act on;
acknowledgements through `ChainAcker`.

The embedded EVM has no clock to move, so its timelock has no delay; the same flow with a
real delay, real HTTP and the node serving at a real poll interval runs on anvil in
test_governance_anvil.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from dao import Dao
from fastapi.testclient import TestClient
from gov_fakes import GatedEngineer
from pydantic import SecretStr

from governance.ballots import sign_ballot
from governance.chain import (
    Chain,
    Controller,
    ControllerReader,
    address_of,
    chain_log_id,
    deploy,
    new_private_key,
)
from governance.deploy_config import DEV_PARAMS
from governance.directives import DirectiveKind, campaign_key
from governance.errors import (
    ChainUnavailableError,
    NodeNotApprovedError,
    ProposalStateError,
    TransactionRevertedError,
    UnknownProposalError,
)
from governance.evm_source import EvmSource
from governance.proposals import DirectiveCall, prepare
from governance.relay import ChainAcker, ChainGovernor
from governance.watcher import Watcher
from node.api.app import create_app
from node.campaign.config import Budget, CampaignConfig
from node.campaign.scheduler import CampaignRunner, RunSummary
from node.governed.acks import OnChainAcks
from node.governed.obey import GovernedNode, chain_campaigns, config_sha256
from node.governed.records import acknowledge_pending, directive_json_hash, paused_starts
from node.store import DirectiveLedger, Store

TOKEN = "operator"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
SUPPLY = 10**24


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


@pytest.fixture
def world() -> dict[str, Any]:
    """The contract set deployed (no timelock delay), one approved funded node, a voter
    holding most votes, a relayer holding none."""
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    node_key = new_private_key()
    deployment = deploy(
        chain,
        chain.faucet_key,
        nodes=[address_of(node_key)],
        params=replace(DEV_PARAMS, timelock_delay_s=0, voting_period=10),
    )
    dao = Dao(chain, deployment, chain.faucet_key, anvil=False)
    voter = dao.holder(SUPPLY * 6 // 10)
    chain.transfer(chain.faucet_key, address_of(node_key), 10**18)
    governor = ChainGovernor.from_deployment(chain, deployment, dao.funded())
    controller = Controller(chain, deployment.addresses["CampaignController"])
    return {
        "chain": chain,
        "dao": dao,
        "voter": voter,
        "node_key": node_key,
        "governor": governor,
        "controller": controller,
    }


def _ballot_body(governor: ChainGovernor, key: bytes, pid: int, nonce: int) -> dict[str, Any]:
    domain = governor.domain()
    ballot = sign_ballot(key, domain, pid, 1, nonce)
    return {
        "proposal_id": pid,
        "support": 1,
        "voter": ballot.voter,
        "nonce": nonce,
        "signature": "0x" + ballot.signature.hex(),
        "chain_id": domain.chain_id,
        "verifying_contract": domain.verifying_contract,
    }


def test_dao_pause_resume_fork_and_a_guardian_pause_reach_running_training(
    store: Store, world: dict[str, Any]
) -> None:
    chain: Chain = world["chain"]
    dao: Dao = world["dao"]
    governor: ChainGovernor = world["governor"]
    controller: Controller = world["controller"]
    voter_key: bytes = world["voter"]
    voter = address_of(voter_key)
    guardian_key = dao.treasury_key  # `deploy` makes the deployer the guardian

    cfg = CampaignConfig(preset="quick", baselines=("deltanet",), budget=Budget(max_candidates=1))
    x = store.create_campaign("x", cfg.model_dump(mode="json"))
    y = store.create_campaign(
        "y", cfg.model_copy(update={"researcher_seed": 1}).model_dump(mode="json")
    )
    dao.register([x, y], voter_key, governor)

    api = TestClient(create_app(store, governor=governor, operator_token=SecretStr(TOKEN)))
    source = EvmSource(ControllerReader(controller), campaigns=lambda: chain_campaigns(store))
    watcher = Watcher([source], confirmations=2, stale_after_s=3600)
    eng = GatedEngineer()

    def run(cid: str, stop: threading.Event) -> RunSummary:
        runner = CampaignRunner(store, store.get_campaign(cid), eng, 1, 1, b"s" * 32, stop=stop)
        return runner.run()

    node = GovernedNode(store, watcher, run, [x.id, y.id], stop_deadline_s=10)
    try:

        def passes(action: str, campaign: str, **extra: Any) -> int:
            body = {"action": action, "campaign": campaign, "description": f"{action} {campaign}"}
            prep = api.post("/gov/proposals/prepare", json=body | extra)
            assert prep.status_code == 200, prep.text
            return passes_prepared(prep.json())

        def passes_prepared(prep: dict[str, Any]) -> int:
            calldatas = [bytes.fromhex(c[2:]) for c in prep["calldatas"]]
            pid = int(prep["proposal_id"])
            gov = dao.contract("DaoGovernor").functions
            values = [int(v) for v in prep["values"]]
            chain.send(
                voter_key, gov.propose(prep["targets"], values, calldatas, prep["description"])
            )
            dao.mine(2)
            nonce = int(api.get(f"/gov/voters/{voter}/nonce").json()["nonce"])
            vote = _ballot_body(governor, voter_key, pid, nonce)
            assert api.post("/gov/ballots", json=vote).status_code == 202
            assert api.post("/gov/ballots", json=vote).status_code == 409  # replay
            dao.close_vote(pid)
            assert api.get(f"/gov/proposals/{pid}").json()["state"] == "succeeded"
            assert api.post(f"/gov/proposals/{pid}/queue", headers=OPERATOR).status_code == 200
            assert api.post(f"/gov/proposals/{pid}/execute", headers=OPERATOR).status_code == 200
            shown = api.get(f"/gov/proposals/{pid}").json()
            assert shown["state"] == "executed" and shown["description"] == prep["description"]
            return pid

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
            dao.mine()
            assert x.id not in node.step().started

        # The guardian pauses y: applied on the next poll; it cannot resume.
        chain.send(guardian_key, controller.contract.functions.pauseCampaign(campaign_key(y.id)))
        assert y.id in node.step().stopping
        with pytest.raises(TransactionRevertedError, match="AccessControlUnauthorizedAccount"):
            chain.send(
                guardian_key, controller.contract.functions.resumeCampaign(campaign_key(y.id))
            )

        passes("resume", x.id)
        started = node.step().started + node.step().started
        if x.id not in started:
            dao.mine()
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

        # A fork proposal: the child continues from x's state with the new config. It
        # names a checkpoint of the node's log that the node anchored; the child starts
        # paused, so the same proposal resumes it after the fork.
        child_cfg = cfg.model_copy(update={"budget": Budget(max_candidates=2)})
        child_json = child_cfg.model_dump(mode="json")
        node.configs = lambda config_hash, uri: child_json
        from attestation.keys import NodeKey
        from node.tlog.log import NodeLog, log_id
        from node.tlog.records import Recorder

        tlog = NodeLog(store, NodeKey.generate())  # x's records: the fork names a log size
        node.recorder = Recorder(tlog, store)
        node.recorder.catch_up(store.get_campaign(x.id), unscored=True)
        position = tlog.size
        node_key: bytes = world["node_key"]
        name = log_id(tlog.origin)
        chain.send(node_key, controller.anchor_call(name, position, tlog.root(position), bytes(32)))
        fork = DirectiveCall(
            DirectiveKind.FORK,
            "x-wide",
            x.id,
            position,
            tlog.root(position),
            config_sha256(child_json),
            "file:x-wide.json",
            log_id=chain_log_id(address_of(node_key), name),
        )
        resume = DirectiveCall(DirectiveKind.RESUME, "x-wide")
        prepared = prepare(controller.address, [fork, resume], "fork x into x-wide and run it")
        passes_prepared(prepared.as_json())
        child_key = campaign_key("x-wide")
        assert controller.contract.functions.campaign(child_key).call()[1] == 2  # fork, resume
        forked = node.step().forked
        if not forked:
            dao.mine()  # a fork waits for its confirmations
            forked = node.step().forked
        (child_id,) = forked
        child = store.get_campaign(child_id)
        assert child.name == "x-wide" and child.parent_campaign_id == x.id
        assert child.fork_tree_size == position and child.config_hash == child_cfg.config_hash()
        # The child may already be running a new experiment (numbered after the inherited).
        parent_exps = [(e.seq, e.status) for e in store.list_experiments(x.id)]
        last = max(seq for seq, _ in parent_exps)
        inherited = [(e.seq, e.status) for e in store.list_experiments(child.id) if e.seq <= last]
        assert inherited == parent_exps
        node.runs[child.id].thread.join(30)
        node.step()
        assert store.get_campaign(child.id).status == "done"
        generated = [c for c in store.list_candidates(child.id) if c.origin != "baseline"]
        assert len(generated) == 2  # one inherited from x, one new under the child's budget
    finally:
        eng.release.set()
        node.shutdown(timeout_s=10)

    # The node acknowledges what it applied, in epoch order, with its own key.
    acker = ChainAcker(controller, world["node_key"])
    acked = acknowledge_pending(store, acker, "evm")
    ledger = DirectiveLedger(store)
    x_rows = [r for r in ledger.list_applied(x.id) if r.campaign_id == x.id]
    assert [r.kind for r in x_rows] == ["resume", "pause", "resume"]  # register, pause, resume
    assert {r.id for r in x_rows} <= {r.id for r in acked}
    node_address = address_of(world["node_key"])
    assert controller.acknowledged_epoch(campaign_key(x.id), node_address) == 3
    events = controller.acknowledgements(campaign_key=campaign_key(x.id), node=node_address)
    assert [(e.epoch, e.entry_hash) for e in events] == [
        (r.epoch, directive_json_hash(r)) for r in x_rows
    ]
    assert [r.ack_ref for r in x_rows] == ["0x" + e.tx_hash.hex() for e in events]


def test_reverts_of_the_real_governor_come_back_as_errors_and_nothing_is_relayed(
    store: Store, world: dict[str, Any]
) -> None:
    chain: Chain = world["chain"]
    dao: Dao = world["dao"]
    governor: ChainGovernor = world["governor"]
    voter_key: bytes = world["voter"]
    camp = store.create_campaign("x", {"preset": "quick"})
    dao.register([camp], voter_key, governor)
    assert governor.relayer_votes() == 0  # the relay pays gas and holds no votes

    prepared = prepare(governor.controller(), [DirectiveCall(DirectiveKind.PAUSE, camp.id)], "p")
    pid = dao.propose(prepared, voter_key)
    api = TestClient(create_app(store, governor=governor, operator_token=SecretStr(TOKEN)))
    sent_before = chain.nonce(governor.relayer)

    # Keeper calls too early: the Governor's refusal, decoded, as 409; nothing sent.
    r = api.post(f"/gov/proposals/{pid}/queue", headers=OPERATOR)
    assert r.status_code == 409, r.text
    assert r.json()["detail"]["detail"] == (
        f"proposal {pid} is active: only a succeeded proposal can be queued"
    )
    dao.vote(voter_key, pid)
    dao.close_vote(pid)
    r = api.post(f"/gov/proposals/{pid}/execute", headers=OPERATOR)
    assert r.status_code == 409 and "not queued yet: queue it first" in r.text
    r = api.post(f"/gov/proposals/{12345}/queue", headers=OPERATOR)
    assert r.status_code == 404 and r.json()["detail"]["error"] == "UnknownProposalError"

    # A ballot for the closed proposal: refused by the relay's checks (409)...
    nonce = governor.nonce(address_of(voter_key))
    body = _ballot_body(governor, voter_key, pid, nonce)
    r = api.post("/gov/ballots", json=body)
    assert r.status_code == 409 and r.json()["detail"]["error"] == "ProposalStateError"
    # ...and by the Governor itself, should it close between the checks and the send.
    ballot = sign_ballot(voter_key, governor.domain(), pid, 1, nonce)
    with pytest.raises(ProposalStateError, match=rf"proposal {pid} is succeeded, not active"):
        governor.cast_vote_by_sig(ballot)
    with pytest.raises(UnknownProposalError):
        governor.execute(7)
    assert chain.nonce(governor.relayer) == sent_before  # nothing was sent

    assert api.post(f"/gov/proposals/{pid}/queue", headers=OPERATOR).status_code == 200
    r = api.post(f"/gov/proposals/{pid}/queue", headers=OPERATOR)
    assert r.status_code == 409 and "queued: only a succeeded proposal" in r.text
    assert chain.nonce(governor.relayer) == sent_before + 1


def test_acknowledgements_need_an_approved_node_and_are_idempotent(
    store: Store, world: dict[str, Any]
) -> None:
    dao: Dao = world["dao"]
    controller: Controller = world["controller"]
    camp = store.create_campaign("x", {"preset": "quick"})
    dao.register([camp], world["voter"], world["governor"])
    key = campaign_key(camp.id)

    stranger = dao.funded()
    unapproved = ChainAcker(controller, stranger)
    with pytest.raises(NodeNotApprovedError, match=rf"{address_of(stranger)} is not approved"):
        unapproved.check_approved()
    with pytest.raises(NodeNotApprovedError, match="ask governance to approve it"):
        unapproved.acknowledge(key, 1, bytes(32))

    acker = ChainAcker(controller, world["node_key"])
    acker.check_approved()
    tx = acker.acknowledge(key, 1, b"\x01" * 32)
    # Sent again (a restart before the store noted it): the first acknowledgement's hash.
    assert acker.acknowledge(key, 1, b"\x01" * 32) == tx
    with pytest.raises(TransactionRevertedError, match="EpochNotIssued"):
        acker.acknowledge(key, 2, bytes(32))
    with pytest.raises(TransactionRevertedError, match="is not registered"):
        acker.acknowledge(campaign_key("c-unknown"), 1, bytes(32))
    (event,) = controller.acknowledgements(campaign_key=key)
    assert (event.epoch, event.entry_hash, event.node) == (1, b"\x01" * 32, acker.address)


def test_acknowledgements_take_each_epoch_in_turn(store: Store, world: dict[str, Any]) -> None:
    dao: Dao = world["dao"]
    controller: Controller = world["controller"]
    camp = store.create_campaign("x", {"preset": "quick"})
    dao.register([camp], world["voter"], world["governor"])
    key = campaign_key(camp.id)
    guardian = controller.contract.functions
    dao.chain.send(dao.treasury_key, guardian.pauseCampaign(key))  # epoch 2
    acker = ChainAcker(controller, world["node_key"])
    with pytest.raises(TransactionRevertedError, match=r"EpochSkipped\(0x[0-9a-f]+, 2, 1\)"):
        acker.acknowledge(key, 2, bytes(32))
    acker.acknowledge(key, 1, bytes(32))
    acker.acknowledge(key, 2, bytes(32))
    assert controller.acknowledged_epoch(key, acker.address) == 2


def test_the_guardian_cancels_a_queued_proposal_before_it_executes(
    store: Store, world: dict[str, Any]
) -> None:
    dao: Dao = world["dao"]
    governor: ChainGovernor = world["governor"]
    voter_key: bytes = world["voter"]
    camp = store.create_campaign("x", {"preset": "quick"})
    dao.register([camp], voter_key, governor)
    prepared = prepare(governor.controller(), [DirectiveCall(DirectiveKind.STOP, camp.id)], "stop")
    pid = dao.propose(prepared, voter_key)
    dao.vote(voter_key, pid)
    dao.close_vote(pid)
    governor.queue(pid)
    gov = dao.contract("DaoGovernor").functions
    assert gov.proposalGuardian().call() == address_of(dao.treasury_key)  # dev: the deployer
    args = (list(prepared.targets), list(prepared.values), list(prepared.calldatas))
    with pytest.raises(TransactionRevertedError, match="GovernorUnableToCancel"):
        dao.chain.send(voter_key, gov.cancel(*args, prepared.description_hash))
    dao.chain.send(dao.treasury_key, gov.cancel(*args, prepared.description_hash))
    assert gov.state(pid).call() == 2  # Canceled
    with pytest.raises(ProposalStateError):
        governor.execute(pid)
    status = world["controller"].contract.functions.effectiveStatus(campaign_key(camp.id))
    assert status.call() == 1  # still Active: the stop never ran


def test_acknowledgements_after_each_poll_survive_failures_and_catch_up(
    store: Store, world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    controller: Controller = world["controller"]
    x = store.create_campaign("x", {"preset": "quick"})
    world["dao"].register([x], world["voter"], world["governor"])
    ledger = DirectiveLedger(store)
    ledger.record(source="evm", campaign_id=x.id, epoch=1, kind="resume")
    real = ChainAcker(controller, world["node_key"])
    failures: list[Exception] = [
        ChainUnavailableError("the RPC endpoint did not answer"),  # a chain failure
        RuntimeError("database is on fire"),  # anything else: still not the loop's end
    ]

    class Flaky:
        def acknowledge(self, key: bytes, epoch: int, entry_hash: bytes) -> str:
            if failures:
                raise failures.pop(0)
            return real.acknowledge(key, epoch, entry_hash)

    acks = OnChainAcks(store, Flaky(), "evm")
    for _ in range(2):
        acks(None)  # as GovernedNode.serve calls it after a step
        acks.wait(10)
        assert [r.epoch for r in ledger.unacknowledged("evm")] == [1]
    assert "acknowledgements not sent" in caplog.text
    acks(None)
    acks.wait(10)
    assert ledger.unacknowledged("evm") == []
    assert controller.acknowledged_epoch(campaign_key(x.id), real.address) == 1
