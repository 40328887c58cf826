"""End to end on anvil: the DAO and the guardian reach running training through the
node's real wiring.

The contracts are deployed by `asi-node chain deploy` (a 60 s timelock delay, passed on
the chain's clock with evm_increaseTime). The API is `asi-node serve`'s app
(`serve_app`) under uvicorn on a loopback port, relaying through `ChainGovernor` from a
relayer key that holds no votes. The node is what `asi-node gov run` builds
(`sources_from_settings`, `governed_node`, `chain_acks`), serving in a thread at a real
poll interval, with the gated engineer of gov_fakes standing in for sandboxed training.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from chains import ANVIL_KEY, ANVIL_KEY_2, Anvil, free_port
from dao import Dao
from gov_fakes import GatedEngineer, wait_until

from attestation.audit import verify_bundle
from governance.ballots import GovernorDomain, sign_ballot
from governance.chain import Chain, Controller, address_of, chain_log_id
from governance.directives import DirectiveKind, campaign_key
from governance.errors import TransactionRevertedError
from governance.proposals import DirectiveCall, Prepared, prepare
from governance.relay import ChainGovernor
from node.anchoring.chain_home import load_deployment, load_key
from node.campaign.config import Budget, CampaignConfig
from node.campaign.scheduler import CampaignRunner, RunSummary
from node.cli.daemon import chain_acks, serve_app, serve_governor
from node.cli.main import main
from node.governed.obey import config_sha256, governed_node, sources_from_settings
from node.governed.records import entry_commitment, paused_starts
from node.runtime import Node, open_node
from node.store import DirectiveLedger
from node.tlog.log import log_id

SUPPLY = 1_000_000 * 10**18  # `deploy`'s default token supply
POLL_S = 1.0
STOP_DEADLINE_S = 5.0
TOKEN = "operator-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def http_api() -> Iterator[Callable[[Any], httpx.Client]]:
    """Serve an app under uvicorn on a free loopback port; an httpx client for it."""
    servers: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def start(app: Any) -> httpx.Client:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until("uvicorn to start", lambda: server.started, 10)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        servers.append((server, thread, client))
        return client

    yield start
    for server, thread, client in servers:
        client.close()
        server.should_exit = True
        thread.join(10)


def _deployed_home(
    anvil: Anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Node, Dao, bytes]:
    """`asi-node chain deploy` into a new home; the node configured for anvil through
    ASI_NODE_* variables; a relayer key (ether, no tokens) named by api.relayer_key_path."""
    home = tmp_path / "home"
    deployer = tmp_path / "deployer.key"
    deployer.write_text(ANVIL_KEY.hex())
    args = ["--home", str(home), "chain", "deploy", "--rpc", anvil.url, "--profile", "dev"]
    assert main([*args, "--deployer-key-file", str(deployer), "--fund-node-eth", "1"]) == 0
    dao = Dao(Chain.connect(anvil.url), load_deployment(home), ANVIL_KEY, anvil=True)
    relayer = dao.funded()
    (home / "relayer.key").write_text(relayer.hex() + "\n")
    env = {
        "ASI_NODE_CHAIN__RPC_URL": anvil.url,
        "ASI_NODE_API__RELAYER_KEY_PATH": "relayer.key",
        "ASI_NODE_API__OPERATOR_TOKEN": TOKEN,
        "ASI_NODE_GOVERNANCE__POLL_SECONDS": str(POLL_S),
        "ASI_NODE_GOVERNANCE__STOP_DEADLINE_SECONDS": str(STOP_DEADLINE_S),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return open_node(home), dao, relayer


@pytest.mark.integration
def test_dao_and_guardian_directives_reach_training_on_anvil(
    anvil: Anvil,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    http_api: Callable[[Any], httpx.Client],
) -> None:
    node, dao, relayer_key = _deployed_home(anvil, tmp_path, monkeypatch)
    chain, store = dao.chain, node.store
    home = Path(node.settings.home)
    controller = Controller(chain, dao.deployment.addresses["CampaignController"])
    ctl = controller.contract.functions
    relayer = address_of(relayer_key)
    # Holders get tokens and delegate to themselves; the relayer holds none.
    voter_key = dao.holder(SUPPLY * 3 // 10)
    other_key = dao.holder(SUPPLY * 2 // 10)
    voter = address_of(voter_key)

    cfg = CampaignConfig(preset="quick", baselines=("deltanet",), budget=Budget(max_candidates=1))
    x = store.create_campaign("x", cfg.model_dump(mode="json"))
    y = store.create_campaign(
        "y", cfg.model_copy(update={"researcher_seed": 1}).model_dump(mode="json")
    )
    keeper = ChainGovernor.from_deployment(chain, dao.deployment, ANVIL_KEY_2)
    dao.register([x, y], voter_key, keeper)

    api = http_api(serve_app(node))
    assert (
        api.get("/gov/domain").json()["verifyingContract"]
        == dao.deployment.addresses["DaoGovernor"]
    )

    # The node as `gov run` builds it, training through the gated engineer.
    sources = sources_from_settings(node.settings, node.store)
    governed = governed_node(node, [x.id, y.id], sources)
    eng = GatedEngineer()

    def run(cid: str, stop: threading.Event) -> RunSummary:
        camp = store.get_campaign(cid)
        recorder = governed.recorder  # experiments go to the node's log, as in the runtime
        assert recorder is not None
        recorder.campaign_start(camp)
        return CampaignRunner(store, camp, eng, 1, 1, b"s" * 32, stop=stop, recorder=recorder).run()

    governed.run = run
    acks = chain_acks(node, sources)
    assert acks is not None
    stop = threading.Event()
    serving = threading.Thread(target=governed.serve, args=(stop, POLL_S, acks), daemon=True)
    serving.start()

    def passes(action: str, campaign: str, **extra: Any) -> tuple[int, datetime, datetime]:
        """A proposal through the API: prepared, proposed from the voter's wallet, one
        vote a signed ballot relayed by the API and one cast directly, queued and (after
        the timelock's delay) executed by the keeper routes. Its id, and the wall-clock
        times just before the execute request and just after its answer."""
        body = {"action": action, "campaign": campaign, "description": f"{action} {campaign}"}
        prep = api.post("/gov/proposals/prepare", json=body | extra)
        assert prep.status_code == 200, prep.text
        p = prep.json()
        prepared = Prepared(
            tuple(p["targets"]),
            tuple(int(v) for v in p["values"]),
            tuple(bytes.fromhex(c[2:]) for c in p["calldatas"]),
            p["description"],
        )
        assert prepared.proposal_id == int(p["proposal_id"])
        return passes_prepared(prepared)

    def passes_prepared(prepared: Prepared) -> tuple[int, datetime, datetime]:
        """`passes` for a proposal prepared elsewhere (several calls in one proposal)."""
        pid = dao.propose(prepared, voter_key)
        d = api.get("/gov/domain").json()
        domain = GovernorDomain(d["name"], d["chainId"], d["verifyingContract"], d["version"])
        nonce = int(api.get(f"/gov/voters/{voter}/nonce").json()["nonce"])
        ballot = sign_ballot(voter_key, domain, pid, 1, nonce)
        vote = {
            "proposal_id": pid,
            "support": 1,
            "voter": voter,
            "nonce": nonce,
            "signature": "0x" + ballot.signature.hex(),
            "chain_id": domain.chain_id,
            "verifying_contract": domain.verifying_contract,
        }
        sent = chain.nonce(relayer)
        r = api.post("/gov/ballots", json=vote)
        assert r.status_code == 202, r.text
        assert api.post("/gov/ballots", json=vote).status_code == 409  # a replay
        dao.vote(other_key, pid)
        dao.close_vote(pid)
        shown = api.get(f"/gov/proposals/{pid}").json()
        assert shown["state"] == "succeeded" and shown["description"] == prepared.description
        assert shown["votes"]["for"] == str(SUPPLY // 2)  # both holders' delegated votes
        assert api.post(f"/gov/proposals/{pid}/queue", headers=OPERATOR).status_code == 200
        early = api.post(f"/gov/proposals/{pid}/execute", headers=OPERATOR)
        assert early.status_code == 409 and "queued in the timelock until" in early.text
        assert dao.pass_timelock_delay() == 60  # a real delay, passed on the chain's clock
        before = datetime.now(UTC)
        r = api.post(f"/gov/proposals/{pid}/execute", headers=OPERATOR)
        assert r.status_code == 200, r.text
        after = datetime.now(UTC)
        # Ballot, queue and execute came from the relayer; the refusals sent nothing.
        assert chain.nonce(relayer) == sent + 3
        return pid, before, after

    try:
        wait_until("x and y training", lambda: len(eng.jobs) == 2)
        running_x = store.list_experiments(x.id, status="running")[0]
        running_y = store.list_experiments(y.id, status="running")[0]

        # The DAO pauses x: its training stops within the deadline, the experiment requeued.
        pid, paused_at, executed = passes("pause", x.id)
        wait_until(
            "x's training to stop", lambda: store.get_experiment(running_x.id).status == "queued"
        )
        assert (datetime.now(UTC) - executed).total_seconds() < STOP_DEADLINE_S
        pause = wait_until(
            "the pause to be recorded with its stop",
            lambda: [
                d
                for d in DirectiveLedger(store).list_applied(x.id)
                if d.kind == "pause" and "within_deadline" in d.detail
            ],
        )[0]
        assert pause.detail["within_deadline"] and pause.epoch == 2
        # A vote on the executed proposal reaches the real Governor's state: 409, nothing sent.
        sent = chain.nonce(relayer)
        late = sign_ballot(other_key, keeper.domain(), pid, 1, keeper.nonce(address_of(other_key)))
        r = api.post(
            "/gov/ballots",
            json={
                "proposal_id": pid,
                "support": 1,
                "voter": late.voter,
                "nonce": late.nonce,
                "signature": "0x" + late.signature.hex(),
                "chain_id": chain.chain_id,
                "verifying_contract": keeper.address,
            },
        )
        assert r.status_code == 409 and "executed, not active" in r.json()["detail"]["detail"]
        assert chain.nonce(relayer) == sent

        # Nothing of x starts while it is paused, however many polls and blocks pass.
        x_experiments = {e.id for e in store.list_experiments(x.id)}
        for _ in range(4):
            dao.mine()
            time.sleep(POLL_S)
        assert [j for j in eng.jobs if j in x_experiments] == [running_x.id]

        # The guardian pauses y: in force within two poll intervals of the transaction.
        sent_at = time.monotonic()
        chain.send(ANVIL_KEY, ctl.pauseCampaign(campaign_key(y.id)))
        wait_until(
            "y's training to stop", lambda: store.get_experiment(running_y.id).status == "queued"
        )
        assert time.monotonic() - sent_at <= 2 * POLL_S
        # ...and cannot resume it: only the DAO can.
        with pytest.raises(TransactionRevertedError, match="AccessControlUnauthorizedAccount"):
            chain.send(ANVIL_KEY, ctl.resumeCampaign(campaign_key(y.id)))

        # The DAO resumes x: after its confirmations, the interrupted experiment runs again.
        _, _, resumed_at = passes("resume", x.id)
        dao.mine(2)
        wait_until("x to train again", lambda: eng.jobs.count(running_x.id) == 2)
        eng.release.set()
        wait_until("x to finish", lambda: store.get_campaign(x.id).status == "done")
        assert store.get_campaign(y.id).status == "paused"
        # No experiment of x started from the pause's execution to the resume's.
        starts = [e.started_at for e in store.list_experiments(x.id) if e.started_at]
        assert len(starts) == 2 and all(t < paused_at or t > resumed_at for t in starts)

        # A fork: the child continues from x's state with the config the proposal names,
        # from a checkpoint the node anchored; it starts paused, so the proposal resumes it.
        child_cfg = cfg.model_copy(update={"budget": Budget(max_candidates=2)})
        child_json = child_cfg.model_dump(mode="json")
        digest = config_sha256(child_json)
        configs = home / node.settings.governance.fork_configs
        configs.mkdir(exist_ok=True)
        (configs / f"{digest.hex()}.json").write_text(json.dumps(child_json))
        tlog = node.log()  # the fork names a size of this node's log and its root there
        position, node_key = tlog.size, load_key(home)
        name, root = log_id(tlog.origin), tlog.root(position)
        head = controller.log_head(name, address_of(node_key))
        chain.send(node_key, controller.anchor_call(name, position, root, head.root))
        fork = DirectiveCall(
            DirectiveKind.FORK,
            "x-wide",
            x.id,
            position,
            root,
            digest,
            "file:x-wide.json",
            log_id=chain_log_id(address_of(node_key), name),
        )
        resume = DirectiveCall(DirectiveKind.RESUME, "x-wide")
        passes_prepared(prepare(controller.address, [fork, resume], "fork x into x-wide"))
        dao.mine(2)
        child = wait_until("the child to finish", lambda: _done(node, "x-wide"), 30)
        assert child.parent_campaign_id == x.id and child.fork_tree_size == position
        assert child.config_hash == child_cfg.config_hash()
        generated = [c for c in store.list_candidates(child.id) if c.origin != "baseline"]
        assert len(generated) == 2  # one inherited from x, one new under the child's budget

        # Every applied directive is acknowledged on-chain with the node's key, in order;
        # the child under the name its proposal gave it.
        ledger = DirectiveLedger(store)
        ours = {x.id: x.id, y.id: y.id, child.id: "x-wide"}
        wait_until(
            "the acknowledgements",
            lambda: not [r for r in ledger.unacknowledged("evm") if r.campaign_id in ours],
        )
        node_address = address_of(load_key(home))
        for cid, on_chain in ours.items():
            rows = [r for r in ledger.list_applied(cid) if r.campaign_id == cid]
            events = controller.acknowledgements(
                campaign_key=campaign_key(on_chain), node=node_address
            )
            assert [(e.epoch, e.entry_hash) for e in events] == [
                (r.epoch, entry_commitment(store, r).hash) for r in rows
            ]
            assert all(r.detail["ack_commits_to"].endswith("(Merkle leaf hash)") for r in rows)
            assert [r.ack_ref for r in rows] == ["0x" + e.tx_hash.hex() for e in events]
        # x: register, pause, resume; y: register, the guardian's pause; the child: its
        # fork and its resume.
        last = {on_chain: 3 if cid == x.id else 2 for cid, on_chain in ours.items()}
        for on_chain, epoch in last.items():
            assert controller.acknowledged_epoch(campaign_key(on_chain), node_address) == epoch

        # The log alone shows the same: every directive is in it, and the audit's replay
        # finds no experiment of x that started while x was paused.
        assert paused_starts(store, x.id) == []
        tlog.checkpoint()
        verified = verify_bundle(tlog.export().to_bytes())
        assert verified.records.experiments.get(x.id, 0) >= 2
    finally:
        eng.release.set()
        stop.set()
        serving.join(30)


def _done(node: Node, name: str) -> Any:
    from node.errors import NotFoundError

    try:
        camp = node.store.get_campaign(name)
    except NotFoundError:
        return None
    return camp if camp.status == "done" else None


@pytest.mark.integration
def test_serve_has_no_governor_until_a_deployment_is_recorded(
    anvil: Anvil,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    http_api: Callable[[Any], httpx.Client],
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    monkeypatch.setenv("ASI_NODE_CHAIN__RPC_URL", anvil.url)
    node = open_node(home)
    capsys.readouterr()
    assert serve_governor(node) is None
    assert "chain.json does not exist (run `asi-node chain deploy`)" in capsys.readouterr().err
    api = http_api(serve_app(node))
    assert api.get("/gov/proposals").status_code == 503
    assert api.get("/gov/campaigns").status_code == 200


@pytest.mark.integration
def test_a_chain_that_stops_answering_is_a_503_and_the_relayer_holds_no_votes(
    anvil: Anvil,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    http_api: Callable[[Any], httpx.Client],
) -> None:
    node, _, relayer_key = _deployed_home(anvil, tmp_path, monkeypatch)
    capsys.readouterr()
    governor = serve_governor(node)
    assert governor is not None and governor.relayer == address_of(relayer_key)
    assert governor.relayer_votes() == 0 and "warning" not in capsys.readouterr().err
    api = http_api(serve_app(node))
    assert api.get("/gov/proposals").json() == []
    anvil.stop()
    r = api.get("/gov/proposals")
    assert r.status_code == 503 and r.json()["detail"]["error"] == "ChainUnavailableError"
    assert "did not answer" in r.json()["detail"]["detail"]
