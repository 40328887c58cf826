"""`asi-node audit --rpc` holds a governed node's log to the controller's own history.

The logs come from the node's real path (`governed_node` over an `EvmSource`, the gated
engineer standing in for training, the node's own log and chain key) on the embedded EVM,
driven by the DAO and the guardian; the audit reads the same chain (the CLI's
`Chain.connect` is pointed at the in-process chain). A node patched so that the
controller's pauses never reach it, a log rewritten after it was anchored and an endpoint
that filters events all fail, each at the step that names what failed. The finer rules
(chain times, acknowledgements, the node's own standing) are checked on logs scripted
against a controller whose governance is a plain account.

The embedded EVM's clock runs a second ahead per block mined, faster than the wall clock
the node writes its times with: the audits state that as `--clock-skew-seconds`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chains import ANVIL_KEY, Anvil, free_port
from dao import Dao
from gov_fakes import GatedEngineer

from attestation.errors import VerificationError
from attestation.keys import NodeKey
from attestation.schema import (
    EXPERIMENT_PREDICATE,
    STATEMENT_TYPE,
    DirectiveKind,
    NodeEventKind,
)
from governance.chain import (
    Chain,
    Controller,
    ControllerReader,
    LogHead,
    address_of,
    artifact,
    chain_log_id,
    deploy,
    new_private_key,
)
from governance.deploy_config import DEV_PARAMS
from governance.directives import CampaignState, Reading, campaign_key
from governance.evm_source import EvmSource
from governance.obedience_audit import Tolerances, verify_obedience
from governance.proposals import DirectiveCall, Prepared, prepare
from governance.relay import ChainAcker, ChainGovernor
from node.anchoring.chain_home import load_key
from node.campaign.config import Budget, CampaignConfig
from node.campaign.scheduler import CampaignRunner, RunSummary
from node.cli.main import main
from node.governed.acks import OnChainAcks
from node.governed.obey import (
    GovernedNode,
    chain_campaigns,
    config_sha256,
    governed_node,
)
from node.runtime import open_node
from node.store import DirectiveLedger, Store
from node.tlog.log import NodeLog, log_id
from node.tlog.records import EVENT_KIND, event_statement

SUPPLY = 10**24  # `deploy`'s dev supply
CFG = CampaignConfig(preset="quick", baselines=("deltanet",), budget=Budget(max_candidates=1))
RPC = "http://chain.test:8545"  # the CLI's Chain.connect is pointed at the embedded chain


class ControllerWorld:
    """The contract set with no timelock delay (the embedded EVM has no clock to move)
    and a short vote, a voter with most votes, a keeper, and a node home whose chain key
    is approved and funded."""

    def __init__(self, chain: Chain, faucet: bytes, home: Path, *, anvil: bool) -> None:
        self.chain = chain
        self.node = open_node(home, create=True)
        self.home = home
        self.node_key = load_key(home)
        self.address = address_of(self.node_key)
        self.deployment = deploy(
            chain,
            faucet,
            nodes=[self.address],
            params=replace(DEV_PARAMS, timelock_delay_s=0, voting_period=3),
        )
        self.dao = Dao(chain, self.deployment, faucet, anvil=anvil)
        self.voter = self.dao.holder(SUPPLY * 6 // 10)
        chain.transfer(faucet, self.address, 10**18)
        self.keeper = ChainGovernor.from_deployment(chain, self.deployment, self.dao.funded())
        self.controller = Controller(chain, self.deployment.addresses["CampaignController"])
        self.guardian = faucet  # `deploy` makes the deployer the guardian
        self.eng = GatedEngineer()
        self.governed: GovernedNode | None = None

    def passes(self, *calls: DirectiveCall) -> None:
        """A proposal through the whole DAO round: propose, vote, queue, execute."""
        prepared = prepare(self.controller.address, list(calls), f"proposal {time.time()}")
        pid = self.dao.propose(prepared, self.voter)
        self.dao.vote(self.voter, pid)
        self.dao.close_vote(pid)
        self.keeper.queue(pid)
        self.dao.pass_timelock_delay()
        self.keeper.execute(pid)

    def govern(self, campaigns: list[str], deaf: bool = False) -> GovernedNode:
        """The node as `gov run` builds it, over this controller; `deaf`: patched so the
        controller's pauses never reach its watcher (neither logged nor obeyed)."""
        store = self.node.store
        source: Any = EvmSource(
            ControllerReader(self.controller),
            start_block=self.deployment.block_number,
            node_address=self.address,
            campaigns=lambda: chain_campaigns(store),
        )
        if deaf:
            source = Deaf(source)
        governed = governed_node(self.node, campaigns, [source])
        eng = self.eng

        def run(cid: str, stop: threading.Event) -> RunSummary:
            camp = store.get_campaign(cid)
            recorder = governed.recorder
            assert recorder is not None
            recorder.campaign_start(camp)
            runner = CampaignRunner(
                store,
                camp,
                eng,  # type: ignore[arg-type]
                1,
                1,
                b"s" * 32,
                stop=stop,
                recorder=recorder,
            )
            summary = runner.run()
            recorder.campaign_stop(camp, summary.reason)
            return summary

        governed.run = run
        self.governed = governed
        return governed

    def step_until(self, what: str, check: Callable[[], Any], tries: int = 20) -> Any:
        """Step the node, mining a block between steps (confirmations), until `check`."""
        assert self.governed is not None
        for _ in range(tries):
            self.governed.step()
            found = check()
            if found:
                return found
            self.dao.mine()
            time.sleep(0.05)
        raise AssertionError(f"the node never got to: {what}")

    def done(self, cid: str) -> bool:
        """The campaign is done and its run reaped: its thread has logged its stop, so
        the log does not grow behind the test's back."""
        assert self.governed is not None
        camp = self.node.store.get_campaign(cid)
        return camp.status == "done" and cid not in self.governed.runs

    def anchor_all(self) -> None:
        """The node anchors each checkpoint of its log not anchored yet, in order."""
        tlog = self.node.log()
        tlog.checkpoint()
        name = log_id(tlog.origin)
        head = self.controller.log_head(name, self.address)
        for cp in tlog.checkpoints():
            if cp.tree_size <= head.tree_size:
                continue
            call = self.controller.anchor_call(name, cp.tree_size, cp.root_hash, head.root)
            self.chain.send(self.node_key, call)
            head = LogHead(cp.tree_size, cp.root_hash)

    def close(self) -> None:
        """Let the gated engineer go and stop the governed node, if there is one."""
        self.eng.release.set()
        if self.governed is not None:
            self.governed.shutdown(timeout_s=10)

    def later(self, seconds: int) -> None:
        """Let the chain's clock move on (every directive due by the log's end)."""
        if self.dao.anvil:
            self.chain.rpc("evm_increaseTime", [seconds])
            self.dao.mine()
        else:
            self.dao.mine(seconds)  # a second per block on the embedded EVM

    def export(self, path: Path) -> Path:
        assert self.governed is not None
        self.governed.shutdown(timeout_s=10)
        # Acknowledged as the node does after each poll (a fork's child by its name).
        acks = OnChainAcks(self.node.store, ChainAcker(self.controller, self.node_key), "evm")
        acks.round()
        self.later(60)
        self.anchor_all()
        path.write_bytes(self.node.log().export().to_bytes())
        return path

    def skew(self) -> float:
        """How far the chain's clock ran ahead of the wall clock, and a margin."""
        return max(0.0, self.chain.timestamp() - time.time()) + 5.0


class Deaf:
    """A patched node's view of the controller: pauses filtered out, every snapshot
    running. The node neither logs nor obeys them."""

    def __init__(self, source: EvmSource) -> None:
        self.source = source

    @property
    def name(self) -> str:
        return self.source.name

    def read(self) -> Reading:
        r = self.source.read()
        kept = tuple(d for d in r.directives if d.kind is not DirectiveKind.PAUSE)
        running = dict.fromkeys(r.states, CampaignState.RUNNING)
        return replace(r, directives=kept, states=running)

    def still_issued(self, directive: Any) -> bool:
        return self.source.still_issued(directive)


@dataclass
class Run:
    world: ControllerWorld
    bundle: Path
    x: str
    child: str | None
    skew: float


def _obedient_run(world: ControllerWorld, tmp: Path, fork: bool = True) -> Run:
    """x registered, run, paused by the guardian mid-training, resumed by the DAO, done;
    then forked (a proposal that forks and resumes the child), the child run to done."""
    store = world.node.store
    x = store.create_campaign("x", CFG.model_dump(mode="json"))
    world.dao.register([x], world.voter, world.keeper)
    governed = world.govern([x.id])
    eng = world.eng
    world.step_until("x training", lambda: eng.jobs)
    running = store.list_experiments(x.id, status="running")[0]
    pause = world.controller.contract.functions.pauseCampaign(campaign_key(x.id))
    world.chain.send(world.guardian, pause)
    world.step_until("x stopped", lambda: store.get_experiment(running.id).status == "queued")
    world.passes(DirectiveCall(DirectiveKind.RESUME, x.id))
    world.step_until("x training again", lambda: eng.jobs.count(running.id) == 2)
    eng.release.set()
    world.step_until("x done", lambda: world.done(x.id))
    child_id = None
    if fork:
        child_json = CFG.model_copy(update={"budget": Budget(max_candidates=2)}).model_dump(
            mode="json"
        )
        governed.configs = lambda config_hash, uri: child_json
        world.anchor_all()  # a fork names a checkpoint the node anchored
        tlog = world.node.log()
        position, name = tlog.size, log_id(tlog.origin)
        world.passes(
            DirectiveCall(
                DirectiveKind.FORK,
                "x-wide",
                x.id,
                position,
                tlog.root(position),
                config_sha256(child_json),
                "file:x-wide.json",
                log_id=chain_log_id(world.address, name),
            ),
            DirectiveCall(DirectiveKind.RESUME, "x-wide"),
        )

        def child_done() -> str | None:
            kids = [c for c in store.list_campaigns() if c.parent_campaign_id == x.id]
            return kids[0].id if kids and world.done(kids[0].id) else None

        child_id = world.step_until("the child done", child_done)
    skew = world.skew()
    bundle = world.export(tmp / "obedient.json")
    return Run(world, bundle, x.id, child_id, skew)


def _deaf_run(world: ControllerWorld, tmp: Path) -> Run:
    """x registered and training; the guardian pauses it; the patched node goes on."""
    store = world.node.store
    x = store.create_campaign("x", CFG.model_dump(mode="json"))
    world.dao.register([x], world.voter, world.keeper)
    world.govern([x.id], deaf=True)
    world.step_until("x training", lambda: world.eng.jobs)
    pause = world.controller.contract.functions.pauseCampaign(campaign_key(x.id))
    world.chain.send(world.guardian, pause)
    world.eng.release.set()
    world.step_until("x done regardless", lambda: world.done(x.id))
    skew = world.skew()
    bundle = world.export(tmp / "deaf.json")
    return Run(world, bundle, x.id, None, skew)


def _revoked_run(world: ControllerWorld, tmp: Path) -> Run:
    """x registered and training; the guardian revokes the node (it pauses, and logs its
    standing with the revocation's transaction); the DAO approves it again (it resumes,
    and logs that too); x runs to done."""
    store = world.node.store
    x = store.create_campaign("x", CFG.model_dump(mode="json"))
    world.dao.register([x], world.voter, world.keeper)
    world.govern([x.id])
    eng = world.eng
    world.step_until("x training", lambda: eng.jobs)
    running = store.list_experiments(x.id, status="running")[0]
    ctl = world.controller.contract
    world.chain.send(world.guardian, ctl.functions.revokeNode(world.address))
    world.step_until("x stopped", lambda: store.get_experiment(running.id).status == "queued")
    approve = ctl.encode_abi("approveNode", args=[world.address, bytes(32)])
    prepared = Prepared(
        (ctl.address,), (0,), (bytes.fromhex(approve[2:]),), f"approve again {time.time()}"
    )
    pid = world.dao.propose(prepared, world.voter)
    world.dao.vote(world.voter, pid)
    world.dao.close_vote(pid)
    world.keeper.queue(pid)
    world.dao.pass_timelock_delay()
    world.keeper.execute(pid)
    world.step_until("x training again", lambda: eng.jobs.count(running.id) == 2)
    eng.release.set()
    world.step_until("x done", lambda: world.done(x.id))
    skew = world.skew()
    return Run(world, world.export(tmp / "revoked.json"), x.id, None, skew)


def test_a_revoked_node_pauses_logs_its_standing_and_passes_once_approved_again(
    tmp_path: Path, connect_to: Callable[[Chain], None], capsys: pytest.CaptureFixture[str]
) -> None:
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    world = ControllerWorld(chain, chain.faucet_key, tmp_path / "home", anvil=False)
    try:
        run = _revoked_run(world, tmp_path)
    finally:
        world.close()
    rows = [
        (r.source, r.kind, r.epoch)
        for r in DirectiveLedger(world.node.store).list_applied()
        if r.source.endswith(":standing")
    ]
    assert rows == [("evm:standing", "pause", 1), ("evm:standing", "resume", 2)]
    connect_to(chain)
    code, out = _audit(capsys, run)
    assert code == 0, out
    assert "13. [ok  ] obedience:" in out and "result: PASS" in out


def _on_embedded(tmp: Path, body: Callable[[ControllerWorld, Path], Run]) -> Iterator[Run]:
    """`body`'s run on a fresh embedded chain, the world closed afterwards."""
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    world = ControllerWorld(chain, chain.faucet_key, tmp / "home", anvil=False)
    try:
        yield body(world, tmp)
    finally:
        world.close()


@pytest.fixture(scope="module")
def obedient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    yield from _on_embedded(tmp_path_factory.mktemp("obedient"), _obedient_run)


@pytest.fixture(scope="module")
def deaf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    yield from _on_embedded(tmp_path_factory.mktemp("deaf"), _deaf_run)


@pytest.fixture
def connect_to(monkeypatch: pytest.MonkeyPatch) -> Callable[[Chain], None]:
    """Point the CLI's `Chain.connect` at an in-process chain."""

    def point(chain: Chain) -> None:
        monkeypatch.setattr(Chain, "connect", classmethod(lambda cls, url, **kw: chain))

    return point


def _audit(
    capsys: pytest.CaptureFixture[str], run: Run, *extra: str, rpc: str = RPC
) -> tuple[int, str]:
    argv = ["--home", str(run.world.home), "audit", str(run.bundle), "--rpc", rpc]
    argv += ["--controller", run.world.controller.address]
    argv += ["--clock-skew-seconds", f"{run.skew:.0f}", *extra]
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_an_obedient_governed_run_passes_the_obedience_step(
    obedient: Run, connect_to: Callable[[Chain], None], capsys: pytest.CaptureFixture[str]
) -> None:
    connect_to(obedient.world.chain)
    code, out = _audit(capsys, obedient, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] and [s["name"] for s in report["steps"][-2:]] == [
        "chain anchors",
        "obedience",
    ]
    step = report["steps"][-1]
    assert step["number"] == 13 and step["ok"]  # the human line: "13. [ok  ] obedience: ..."
    # x: register, pause, resume; the child: fork, resume.
    assert "5 directive(s) of controller" in step["detail"]
    assert "all logged in time" in step["detail"]
    assert "5 acknowledgement(s) commit to their entries" in step["detail"]
    facts = report["obedience"]
    assert facts["governed"] and facts["node"] == obedient.world.address
    assert facts["campaigns"] == {obedient.x: 3, obedient.child: 2}
    assert facts["directives_logged"] == 5 and facts["acknowledgements"] == 5
    assert facts["starts_checked"] >= 3 and facts["holds"] == 2  # x's pause, the child's fork


def test_a_node_that_ignores_a_pause_fails_naming_the_pause(
    deaf: Run, connect_to: Callable[[Chain], None], capsys: pytest.CaptureFixture[str]
) -> None:
    connect_to(deaf.world.chain)
    code, out = _audit(capsys, deaf)
    assert code == 1
    assert "[ok  ] record rules:" in out  # its own log is consistent: nothing there to catch
    assert "[ok  ] chain anchors:" in out
    (line,) = [line for line in out.splitlines() if "[FAIL]" in line]
    assert (
        f"obedience: step 3 (directives logged): the pause of campaign {deaf.x} epoch 2 (tx 0x"
        in line
    )
    assert "is not in the log" in line and "result: FAIL at step 13" in out


def test_an_endpoint_that_filters_the_pause_cannot_hide_it(
    deaf: Run, connect_to: Callable[[Chain], None], capsys: pytest.CaptureFixture[str]
) -> None:
    chain = deaf.world.chain
    hidden = campaign_key(deaf.x)
    lying = Filtering(
        chain,
        lambda e: (
            e["event"] == "DirectiveIssued"
            and bytes(e["args"]["campaignId"]) == hidden
            and e["args"]["epoch"] == 2
        ),
    )
    controller = Controller(lying, deaf.world.controller.address)
    assert [e.args["epoch"] for e in controller.read_events("DirectiveIssued")] == [1]
    connect_to(lying)
    code, out = _audit(capsys, deaf)
    assert code == 1
    assert (
        f"obedience: step 2 (complete events): the endpoint filtered events: campaign {deaf.x} "
        f"(0x{hidden.hex()}) is at epoch 2 on-chain but only epoch 1 was returned"
    ) in out


class Filtering(Chain):
    """An RPC endpoint that drops the logs `hide` picks from every eth_getLogs answer."""

    def __init__(self, chain: Chain, hide: Callable[[Any], bool]) -> None:
        super().__init__(chain._w3, chain.chain_id, chain.label)
        self.hide = hide

    def events(self, event: Any, what: str, **kw: Any) -> list[Any]:
        return [e for e in super().events(event, what, **kw) if not self.hide(e)]


def test_a_log_rewritten_after_it_was_anchored_fails_with_only_the_matching_checkpoint(
    tmp_path: Path, connect_to: Callable[[Chain], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """Anchors (10, A) and (20, B) of one node's log, B the root of another history: a
    bundle of that history carrying only its checkpoint at 20 matches every checkpoint it
    carries, and fails on the anchor at 10."""
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    node_key = new_private_key()
    deployment = deploy(chain, chain.faucet_key, nodes=[address_of(node_key)])
    chain.transfer(chain.faucet_key, address_of(node_key), 10**18)
    controller = Controller(chain, deployment.addresses["CampaignController"])
    key = NodeKey.generate()

    def history(n: int, campaign: str) -> NodeLog:
        tlog = NodeLog(Store.open("sqlite://"), key, checkpoint_every=1000)
        for i in range(n):
            stmt = event_statement(
                tlog.node_id,
                NodeEventKind.CAMPAIGN_START,
                campaign_id=f"{campaign}-{i}",
                config_hash="sha256:" + "0" * 64,
            )
            tlog.append(EVENT_KIND, stmt)
        tlog.checkpoint()
        return tlog

    first, second = history(10, "a"), history(20, "b")
    name = log_id(first.origin)
    a, b = first.root(10), second.root(20)
    chain.send(node_key, controller.anchor_call(name, 10, a, bytes(32)))
    chain.send(node_key, controller.anchor_call(name, 20, b, a))  # the chain cannot tell
    bundle = tmp_path / "rewritten.json"
    bundle.write_bytes(second.export().to_bytes())
    connect_to(chain)
    argv = ["--home", str(tmp_path / "auditor"), "audit", str(bundle), "--rpc", RPC]
    code = main([*argv, "--controller", controller.address])
    out = capsys.readouterr().out
    assert code == 1
    assert "[FAIL] chain anchors: step 6 (anchored history): " in out
    assert f"anchored root 0x{a.hex()} for size 10" in out
    assert f"first 10 entries hash to 0x{second.root(10).hex()}: the log was rewritten" in out


def test_a_bundle_that_stops_short_of_the_anchors_fails_even_if_the_endpoint_hides_them() -> None:
    from attestation.audit import verify_bundle
    from governance.anchor_audit import verify_with_allow_list

    chain = Chain.embedded()
    assert chain.faucet_key is not None
    node_key = new_private_key()
    deployment = deploy(chain, chain.faucet_key, nodes=[address_of(node_key)])
    chain.transfer(chain.faucet_key, address_of(node_key), 10**18)
    controller = Controller(chain, deployment.addresses["CampaignController"])
    tlog = NodeLog(Store.open("sqlite://"), NodeKey.generate(), checkpoint_every=10)
    for i in range(20):
        stmt = event_statement(
            tlog.node_id, NodeEventKind.CAMPAIGN_START, campaign_id=f"c-{i}", config_hash=ZERO_HASH
        )
        tlog.append(EVENT_KIND, stmt)
        if i == 9:
            short = verify_bundle(tlog.export().to_bytes())  # exported at size 10
    name, prev = log_id(tlog.origin), bytes(32)
    for size in (10, 20):
        chain.send(node_key, controller.anchor_call(name, size, tlog.root(size), prev))
        prev = tlog.root(size)
    checkpoints = [(cp.size, cp.root_hash) for cp in short.checkpoints]
    with pytest.raises(VerificationError) as failed:
        verify_with_allow_list(controller, name, checkpoints, leaves=short.leaves)
    assert failed.value.step == "step 6 (anchored history)"
    assert "the chain holds anchors past the bundle" in failed.value.detail
    assert "size 20" in failed.value.detail and "holds 10 entries" in failed.value.detail
    # An endpoint that hides the later anchor is caught by the controller's log head.
    lying = Filtering(
        chain, lambda e: e["event"] == "LogRootAnchored" and e["args"]["treeSize"] == 20
    )
    with pytest.raises(VerificationError, match="the endpoint filtered events") as failed:
        verify_with_allow_list(
            Controller(lying, controller.address), name, checkpoints, leaves=short.leaves
        )
    assert "last anchor of" in failed.value.detail and "is at size 20" in failed.value.detail
    assert "events the endpoint returned end at size 10" in failed.value.detail


def test_bad_inputs_fail_with_one_line_and_no_traceback(
    obedient: Run,
    tmp_path: Path,
    connect_to: Callable[[Chain], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = obedient.world
    # An endpoint that is down.
    code, out = _audit(capsys, obedient, rpc=f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "Traceback" not in out
    (line,) = [line for line in out.splitlines() if "[FAIL]" in line]
    assert "chain anchors: no answer from the RPC endpoint" in line
    # A controller address that holds another contract.
    connect_to(world.chain)
    timelock = world.deployment.addresses["DaoTimelock"]
    code, out = _audit(capsys, obedient, "--controller", timelock)
    assert code == 1 and "Traceback" not in out
    assert "holds a contract that is not asi-node's CampaignController" in out
    # Logs of the same node that miss what the chain holds: one that declares a governed
    # campaign and no directive, one that declares no campaign at all.
    x = world.node.store.get_campaign(obedient.x)
    for campaign, expected in (
        (x, f"step 3 (directives logged): the register of campaign {x.id} epoch 1 (tx 0x"),
        (None, "step 1 (policy): the log declares no campaign (no campaign_start entry)"),
    ):
        other = NodeLog(Store.open("sqlite://"), NodeKey.generate(), checkpoint_every=1000)
        if campaign is None:
            event = event_statement(other.node_id, NodeEventKind.NODE_KEY_CREATED)
        else:
            event = event_statement(
                other.node_id,
                NodeEventKind.CAMPAIGN_START,
                campaign_id=campaign.id,
                config_hash=campaign.config_hash,
            )
        other.append(EVENT_KIND, event)
        cp = other.checkpoint()
        anchor = world.controller.anchor_call(cp.log_id, cp.tree_size, cp.root_hash, bytes(32))
        world.chain.send(world.node_key, anchor)
        bundle = tmp_path / "other.json"
        bundle.write_bytes(other.export().to_bytes())
        code, out = _audit(capsys, replace(obedient, bundle=bundle))
        assert code == 1 and "Traceback" not in out
        (line,) = [line for line in out.splitlines() if "[FAIL]" in line]
        assert "[FAIL] obedience: " + expected in line, out


@pytest.mark.integration
def test_on_anvil_an_obedient_node_passes_and_one_that_ignores_a_pause_fails(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = Chain.connect(anvil.url)
    honest = ControllerWorld(chain, ANVIL_KEY, tmp_path / "honest", anvil=True)
    deafened = ControllerWorld(chain, ANVIL_KEY, tmp_path / "deaf", anvil=True)
    try:
        run = _obedient_run(honest, tmp_path, fork=False)
        code, out = _audit(capsys, run, rpc=anvil.url)
        assert code == 0 and "[ok  ] obedience: 3 directive(s)" in out, out
        run = _deaf_run(deafened, tmp_path)
        code, out = _audit(capsys, run, rpc=anvil.url)
        assert code == 1
        assert f"[FAIL] obedience: step 3 (directives logged): the pause of campaign {run.x}" in out
    finally:
        honest.close()
        deafened.close()


TOL = Tolerances(poll_s=1, grace_s=2, stop_deadline_s=5)
ZERO_HASH = "sha256:" + "0" * 64


class Scripted:
    """A controller whose governance and guardian is one plain account (each directive
    one transaction), an approved node, and that node's log written by hand: the
    statements a node would sign, at times read off the chain's blocks."""

    def __init__(self) -> None:
        chain = Chain.embedded()
        assert chain.faucet_key is not None
        self.chain, self.owner = chain, chain.faucet_key
        owner = address_of(self.owner)
        art = artifact("CampaignController")
        factory = chain._w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = chain.send(self.owner, factory.constructor(owner, owner))
        created = chain._w3.eth.get_transaction_receipt(receipt.tx_hash)  # type: ignore[arg-type]
        self.controller = Controller(chain, str(created["contractAddress"]))
        self.node_key = new_private_key()
        self.node = address_of(self.node_key)
        chain.transfer(self.owner, self.node, 10**18)
        self.tlog = NodeLog(Store.open("sqlite://"), NodeKey.generate(), checkpoint_every=1000)
        self.cid = "c-x"
        self.send("approveNode", self.node, bytes(32))
        start = event_statement(
            self.tlog.node_id,
            NodeEventKind.CAMPAIGN_START,
            campaign_id=self.cid,
            config_hash=ZERO_HASH,
        )
        self.tlog.append(EVENT_KIND, start)

    def send(self, fn: str, *args: Any, key: bytes | None = None) -> tuple[str, datetime]:
        """Send a controller call; its transaction hash and block time."""
        call = getattr(self.controller.contract.functions, fn)(*args)
        receipt = self.chain.send(key or self.owner, call)
        ts = self.chain.block_timestamp(receipt.block_number)
        return "0x" + receipt.tx_hash.hex(), datetime.fromtimestamp(ts, UTC)

    def campaign(self, fn: str) -> tuple[str, datetime]:
        key = campaign_key(self.cid)
        if fn == "registerCampaign":
            return self.send(fn, key, bytes(32), "")
        return self.send(fn, key)

    def mine(self, blocks: int) -> None:
        for _ in range(blocks):
            self.chain.rpc("evm_mine", [])

    def logs(self, epoch: int, kind: str, tx: str, at: datetime, campaign: str = "") -> int:
        from node.tlog.records import DIRECTIVE_KIND, directive_statement

        facts = {
            "source": "evm",
            "campaign_id": campaign or self.cid,
            "epoch": epoch,
            "kind": kind,
            "ref": tx,
            "height": None,
            "config_hash": None,
            "applied_at": at.isoformat(),
        }
        return self.tlog.append(DIRECTIVE_KIND, directive_statement(self.tlog.node_id, facts))

    def ran(self, exp: str, seq: int, started: datetime, finished: datetime) -> int:
        from node.tlog.records import EXPERIMENT_KIND

        stmt = _experiment(self.tlog.node_id, self.cid, exp, seq, started, finished)
        return self.tlog.append(EXPERIMENT_KIND, stmt, subject=exp)

    def audit(self, chain: Chain | None = None) -> Any:
        """Let the chain move on (every directive due), anchor the log, verify its bundle
        offline and then against the chain."""
        from attestation.audit import verify_bundle

        self.mine(10)
        cp = self.tlog.checkpoint()
        head = self.controller.log_head(cp.log_id, self.node)
        call = self.controller.anchor_call(cp.log_id, cp.tree_size, cp.root_hash, head.root)
        self.chain.send(self.node_key, call)
        log = verify_bundle(self.tlog.export().to_bytes())  # the offline audit passes
        controller = Controller(chain or self.chain, self.controller.address)
        return verify_obedience(controller, log, self.node, cp.log_id, TOL)


def _experiment(
    node_id: str, campaign: str, exp: str, seq: int, started: datetime, finished: datetime
) -> dict[str, Any]:
    digest = hashlib.sha256(exp.encode()).hexdigest()
    record = {
        "record_version": 2,
        "node_id": node_id,
        "campaign_id": campaign,
        "config_hash": ZERO_HASH,
        "experiment_id": exp,
        "seq": seq,
        "role": "candidate",
        "candidate": {"id": f"k-{exp}", "name": exp, "origin": "offline"},
        "parent_ids": [],
        "code_digest": "sha256:" + digest,
        "motivation": "",
        "screening": None,
        "training": None,
        "train_config_digest": ZERO_HASH,
        "seeds": {"train": seq, "heldout": "secret"},
        "task_spec_digest": ZERO_HASH,
        "metrics": {"mean_acc": 0.5},
        "fitness": None,
        "timings": None,
        "environment": {"python": "3", "implementation": "cpython", "packages": {}, "device": {}},
        "researcher": {"mode": "offline", "models": [], "llm": None},
        "status": "done",
        "failure_class": None,
        "attempts": 1,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"candidate/{exp}", "digest": {"sha256": digest}}],
        "predicateType": EXPERIMENT_PREDICATE,
        "predicate": record,
    }


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@pytest.fixture
def script() -> Scripted:
    return Scripted()


def test_a_scripted_log_that_obeys_passes_and_names_what_it_checked(script: Scripted) -> None:
    tx, reg = script.campaign("registerCampaign")
    script.logs(1, "resume", tx, reg + _s(1))
    script.ran("e1", 1, reg + _s(1), reg + _s(2))
    script.mine(3)
    tx, paused = script.campaign("pauseCampaign")
    script.logs(2, "pause", tx, paused + _s(1))
    script.mine(6)
    tx, resumed = script.campaign("resumeCampaign")
    script.logs(3, "resume", tx, resumed + _s(2))
    script.ran("e2", 2, resumed + _s(2), resumed + _s(3))
    facts = script.audit()
    assert (facts.directives, facts.holds, facts.starts_checked) == (3, 1, 2)
    assert facts.campaigns == {script.cid: 3} and facts.governed


def test_a_start_before_the_chains_resume_fails_though_the_log_backdates_the_resume(
    script: Scripted,
) -> None:
    tx, reg = script.campaign("registerCampaign")
    script.logs(1, "resume", tx, reg + _s(1))
    script.mine(3)
    tx, paused = script.campaign("pauseCampaign")
    script.logs(2, "pause", tx, paused + _s(1))
    script.mine(8)
    tx, resumed = script.campaign("resumeCampaign")
    # The node says it resumed before the resume was issued, and started work then: its
    # own log replays clean (step 10), the chain's times do not.
    script.logs(3, "resume", tx, paused + _s(2))
    script.ran("e1", 1, paused + _s(3), paused + _s(4))
    with pytest.raises(VerificationError) as failed:
        script.audit()
    assert failed.value.step == "step 4 (held campaigns)"
    assert failed.value.detail.startswith(
        f"experiment e1 (#1) of campaign c-x started at {(paused + _s(3)).isoformat()} while "
        f"the pause of campaign c-x epoch 2 (tx "
    )
    assert f"until {resumed.isoformat()}" in failed.value.detail


def test_training_past_the_stop_deadline_fails_as_kept_training(script: Scripted) -> None:
    tx, reg = script.campaign("registerCampaign")
    script.logs(1, "resume", tx, reg + _s(1))
    script.mine(3)
    tx, paused = script.campaign("pauseCampaign")
    script.logs(2, "pause", tx, paused + _s(1))
    # Started before the pause; still training 1 s after pause + poll + grace + deadline.
    script.ran("e1", 1, reg + _s(1), paused + _s(1 + 2 + 5 + 1))
    with pytest.raises(VerificationError, match="kept training past the stop deadline") as failed:
        script.audit()
    assert failed.value.step == "step 4 (held campaigns)"
    assert "experiment e1 (#1) of campaign c-x" in failed.value.detail
    assert f"deadline {(paused + _s(8)).isoformat()}" in failed.value.detail


def test_a_pause_applied_late_fails_with_its_delay(script: Scripted) -> None:
    tx, reg = script.campaign("registerCampaign")
    script.logs(1, "resume", tx, reg + _s(1))
    tx, paused = script.campaign("pauseCampaign")
    script.logs(2, "pause", tx, paused + _s(10))
    with pytest.raises(VerificationError, match=r"10\.0 s after its block; allowed: poll 1 \+ "):
        script.audit()


@pytest.mark.parametrize("what", ["revocation", "suspension", "global pause"])
def test_the_nodes_revocation_suspension_and_a_global_pause_must_be_logged(
    script: Scripted, what: str
) -> None:
    tx, reg = script.campaign("registerCampaign")
    script.logs(1, "resume", tx, reg + _s(1))
    measurement = b"\x0e" * 32
    if what == "revocation":
        script.send("revokeNode", script.node)
        script.send("approveNode", script.node, bytes(32))  # to anchor again
        expected = f"the revocation of node {script.node} (tx 0x"
    elif what == "suspension":
        script.send("setMeasurement", measurement, True)
        script.send("approveNode", script.node, measurement)
        script.send("setMeasurement", measurement, False)
        script.send("setMeasurement", measurement, True)
        script.send("approveNode", script.node, measurement)  # to anchor again
        expected = (
            f"the suspension of node {script.node} (its TEE measurement "
            f"0x{measurement.hex()} removed) (tx 0x"
        )
    else:
        script.send("pauseAll")
        expected = "the global pause epoch 1 (tx 0x"
    with pytest.raises(VerificationError) as failed:
        script.audit()
    assert failed.value.step == "step 3 (directives logged)"
    assert failed.value.detail.startswith(expected) and "is not in the log" in failed.value.detail


def test_a_revocation_logged_with_its_transaction_passes(script: Scripted) -> None:
    """The node's standing is matched by transaction, whatever record carries it."""
    tx, reg = script.campaign("registerCampaign")
    script.logs(1, "resume", tx, reg + _s(1))
    tx, revoked = script.send("revokeNode", script.node)
    script.logs(1, "pause", tx, revoked + _s(1), campaign="*")
    tx, approved = script.send("approveNode", script.node, bytes(32))
    script.logs(2, "resume", tx, approved + _s(1), campaign="*")
    facts = script.audit()
    assert facts.directives == 3 and facts.holds == 1


def test_an_acknowledgement_must_commit_to_its_directives_entry(script: Scripted) -> None:
    tx, reg = script.campaign("registerCampaign")
    index = script.logs(1, "resume", tx, reg + _s(1))
    wrong = script.tlog.entries(0, 1)[0].leaf_hash  # the campaign_start entry
    script.send("acknowledge", campaign_key(script.cid), 1, wrong, key=script.node_key)
    with pytest.raises(VerificationError) as failed:
        script.audit()
    assert failed.value.step == "step 5 (acknowledgements)"
    assert "commits to log entry 0, which is a campaign_start event, not the directive" in str(
        failed.value
    )
    assert index == 1


def test_a_logged_resume_the_controller_never_issued_fails(script: Scripted) -> None:
    tx, reg = script.campaign("registerCampaign")
    script.logs(1, "resume", tx, reg + _s(1))
    script.logs(2, "resume", "0x" + "ab" * 32, reg + _s(2))
    with pytest.raises(VerificationError, match="that the controller's events do not hold"):
        script.audit()


def test_a_chain_that_cannot_be_read_is_step_0(script: Scripted) -> None:
    tx, reg = script.campaign("registerCampaign")
    script.logs(1, "resume", tx, reg + _s(1))

    class Down(Chain):
        def events(self, event: Any, what: str, **kw: Any) -> list[Any]:
            from governance.errors import ChainUnavailableError

            raise ChainUnavailableError(f"{what}: the RPC endpoint did not answer")

    down = Down(script.chain._w3, script.chain.chain_id, "down")
    with pytest.raises(VerificationError, match=r"reading the controller failed: reading "):
        script.audit(down)


def test_a_log_the_controller_does_not_govern_passes_flagged(script: Scripted) -> None:
    facts = script.audit()  # c-x was never registered
    assert not facts.governed and facts.campaigns == {"c-x": 0}
    assert facts.summary().startswith("FLAGGED ungoverned: controller ")


def test_a_replayed_chain_cannot_judge_a_governed_log(script: Scripted) -> None:
    from attestation.audit import verify_bundle

    tx, reg = script.campaign("registerCampaign")
    script.logs(1, "resume", tx, reg + _s(1))
    script.audit()
    log = verify_bundle(script.tlog.export().to_bytes())
    name = log_id(script.tlog.origin)
    with pytest.raises(VerificationError, match="replayed from a journal") as failed:
        verify_obedience(script.controller, log, script.node, name, TOL, replayed_chain=True)
    assert failed.value.step == "step 1 (policy)"


def test_the_audited_node_is_the_one_the_attestation_binding_names() -> None:
    from types import SimpleNamespace

    from governance.anchor_audit import VerifiedAnchor
    from node.cli.trust import _audited_node

    anchorer, other = address_of(new_private_key()), address_of(new_private_key())
    anchors = [VerifiedAnchor(10, b"\x01" * 32, anchorer, 5, b"\x02" * 32)]

    def report(bound: str, status: str = "unattested") -> Any:
        evidence = json.dumps({"binding": {"evm_address": bound}}).encode()
        log = SimpleNamespace(attestation_evidence=evidence)
        return SimpleNamespace(attestation={"status": status}, log=log)

    assert _audited_node(report(anchorer.lower()), anchors) == anchorer
    assert _audited_node(report(other, status="rejected"), anchors) == anchorer
    with pytest.raises(VerificationError, match=f"anchored by {anchorer}, but the node's"):
        _audited_node(report(other), anchors)
