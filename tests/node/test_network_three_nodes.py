"""Three nodes on loopback with anvil, each with its own home, key and log anchored on the
chain, running one campaign the DAO registered (B and C join A's): A finds candidates; B
and C follow A; B replicates A's best and C, following B too,
sees it "replicated by B" before running anything; C's Researcher proposes children of
A's candidates and C's records name A's records as parents; an auditor holding only the
three URLs and the chain checks the replicated leaderboard with one command, and a node
serving a leaderboard its peers' logs do not back fails that audit."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fakes import FakeEngineer
from logfix import small_config
from test_network_peers import served

from governance.anvil import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "governance"))

from chains import ANVIL, ANVIL_KEY, ANVIL_KEY_2, Anvil
from dao import Dao

from attestation.merkle import leaf_hash
from governance.chain import Chain, address_of
from governance.relay import ChainGovernor
from node.anchoring.chain_home import load_deployment, load_key
from node.campaign.config import Replication
from node.cli.main import main
from node.network import leaderboard
from node.network.provenance import IMPORT_EVENT
from node.runtime import Node, open_node
from node.store import CampaignRow
from node.tlog.log import LogView
from node.tlog.records import EXPERIMENT_KIND, predicate_of

pytestmark = pytest.mark.integration

SUPPLY = 1_000_000 * 10**18  # `chain deploy --profile dev`'s token supply, the deployer's

CONFIG = (
    small_config(3)
    .model_copy(update={"replication": Replication(share=0.3, seeds=(101, 102), spread=0.02)})
    .model_dump(mode="json")
)


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    if not ANVIL.exists():
        pytest.skip("anvil is not installed: run scripts/install.sh")
    node = Anvil(extra=["--block-time", "1"])  # anchors confirm on an otherwise idle chain
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _home(tmp_path: Path, name: str, rpc: str) -> Path:
    home = tmp_path / name
    assert main(["--home", str(home), "init"]) == 0
    text = (home / "config.toml").read_text()
    for old, new in (
        ("checkpoint_every = 100", "checkpoint_every = 4"),
        ('rpc_url = ""', f'rpc_url = "{rpc}"'),
        ("confirmations = 2", "confirmations = 1"),
    ):
        assert old in text
        text = text.replace(old, new)
    (home / "config.toml").write_text(text)
    return home


def _follow(home: Path, *urls: str) -> None:
    text = (home / "config.toml").read_text().replace("peers = []", f"peers = {json.dumps(urls)}")
    (home / "config.toml").write_text(text)


def _run(node: Node) -> CampaignRow:
    """The node's campaign (the shared one), run and anchored."""
    [camp] = node.store.list_campaigns()
    with node.anchoring_followers():
        node.run_campaign(camp.id)
    summary = node.anchor_summary
    assert summary is not None and summary.drained and summary.failed == 0
    return node.store.get_campaign(camp.id)


def _records(node: Node) -> list[dict[str, object]]:
    view = LogView(node.log_db())
    return [
        predicate_of(e.envelope) for e in view.entries(0, view.size) if e.kind == EXPERIMENT_KIND
    ]


def test_three_nodes_replicate_build_on_and_audit_each_others_discoveries(
    tmp_path: Path,
    anvil: Anvil,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(Node, "engineer", lambda self: FakeEngineer(best=0.5))
    homes = {n: _home(tmp_path, n, anvil.url) for n in "abc"}
    address = {n: address_of(load_key(h)) for n, h in homes.items()}
    deployer = tmp_path / "deployer.key"
    deployer.write_text(ANVIL_KEY.hex())
    deploy = ["--home", str(homes["a"]), "chain", "deploy", "--rpc", anvil.url]
    deploy += ["--profile", "dev", "--deployer-key-file", str(deployer), "--fund-node-eth", "1"]
    assert main([*deploy, "--approve", address["b"], "--approve", address["c"]]) == 0
    chain = Chain.connect(anvil.url)
    for n in "bc":
        chain.transfer(ANVIL_KEY, address[n], 10**18)
        (homes[n] / "chain.json").write_text((homes["a"] / "chain.json").read_text())
    deployment = load_deployment(homes["a"])
    controller = deployment.addresses["CampaignController"]
    capsys.readouterr()

    with ExitStack() as stack:
        nodes = {n: open_node(h) for n, h in homes.items()}
        for node in nodes.values():
            stack.callback(node.store.close)
        # The DAO registers A's campaign; A finds candidates.
        shared = nodes["a"].store.create_campaign("shared", CONFIG)
        dao = Dao(chain, deployment, ANVIL_KEY, anvil=True)
        voter = dao.holder(SUPPLY * 6 // 10)
        dao.register([shared], voter, ChainGovernor.from_deployment(chain, deployment, ANVIL_KEY_2))
        camp_a = _run(nodes["a"])
        url_a = stack.enter_context(served(nodes["a"].store, free_port()))
        ids = {n: nodes[n].log().node_id for n in "abc"}

        # B and C join it: the same id and config, checked against the registration.
        for n in "bc":
            assert (
                main(["--home", str(homes[n]), "campaign", "join", shared.id, "--from", url_a]) == 0
            )
            assert "registered on the controller on chain 31337" in capsys.readouterr().out

        # B follows A, imports its three records and re-runs the best on the
        # replication seeds.
        _follow(homes["b"], url_a)
        assert main(["--home", str(homes["b"]), "network", "sync"]) == 0
        assert "imported 3" in capsys.readouterr().out
        _run(nodes["b"])
        [best] = leaderboard.ranked(nodes["b"].store, nodes["b"].store.list_campaigns())
        assert best.discovered_by == url_a and best.replicated_by == [ids["b"]]
        url_b = stack.enter_context(served(nodes["b"].store, free_port()))

        # C follows A and B: before running anything, it sees A's discovery replicated by B.
        _follow(homes["c"], url_a, url_b)
        assert main(["--home", str(homes["c"]), "network", "sync"]) == 0
        capsys.readouterr()
        [seen] = leaderboard.ranked(nodes["c"].store, nodes["c"].store.list_campaigns())
        assert seen.experiment_id == best.experiment_id and seen.discovered_by == url_a
        assert seen.replicated_by == [ids["b"]]
        assert [r.peer for r in seen.replications] == [url_b]
        assert main(["--home", str(homes["c"]), "network", "leaderboard"]) == 0
        board = capsys.readouterr().out
        assert best.experiment_id in board and ids["b"] in board

        # C runs: its Researcher builds on A's candidates, and its records say so.
        camp_c = _run(nodes["c"])
        imports = {
            e.payload["candidate_id"]: e.payload
            for e in nodes["c"].store.list_events(camp_c.id, kind=IMPORT_EVENT)
        }
        children = [r for r in _records(nodes["c"]) if r["peer_parents"]]
        # Their parents came from A's records (and from B's own discoveries, imported too).
        logs = {nodes[n].log().origin: (n, LogView(nodes[n].log_db())) for n in "ab"}
        parents_from = set()
        for child in children:
            assert child["candidate"]["origin"] == "offline"  # type: ignore[index]
            for parent in child["peer_parents"]:  # type: ignore[attr-defined]
                assert parent["candidate_id"] in child["parent_ids"]  # type: ignore[operator]
                found = imports[parent["candidate_id"]]
                assert found["peer_experiment_id"] == parent["experiment_id"]
                name, view = logs[parent["log_origin"]]
                [entry] = view.entries(parent["leaf_index"], parent["leaf_index"] + 1)
                assert leaf_hash(entry.envelope).hex() == parent["leaf_hash"]
                assert entry.subject == parent["experiment_id"]
                parents_from.add(name)
                if name == "a":
                    assert parent["campaign_id"] == camp_a.id
        assert "a" in parents_from, "no child of one of A's candidates was proposed"
        url_c = stack.enter_context(served(nodes["c"].store, free_port()))

        # An auditor with the three URLs and the chain: one command.
        audit = ["audit-network", url_a, url_b, url_c, "--rpc", anvil.url]
        audit += ["--controller", controller]
        code = main(audit)
        out = capsys.readouterr().out
        assert code == 0, out
        assert out.count("[ok  ]") == 3 and out.count("anchored on chain 31337") == 3
        assert f"{best.experiment_id} fitness" in out and f"found by {url_a}" in out
        assert f"replicated by {ids['b']}" in out
        assert "lineage:" in out and "result: PASS" in out
        assert main([*audit, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        ranked = {row["experiment_id"]: row for row in report["leaderboard"]}
        assert ids["b"] in ranked[best.experiment_id]["replicated_by"]
        # C ran the best of A's records on the replication seeds too.
        assert ids["c"] in ranked[best.experiment_id]["replicated_by"]
        of_c = [link for link in report["lineage"] if link["child"] == url_c]
        assert len(of_c) == sum(len(c["peer_parents"]) for c in children)
        assert report["problems"] == []

        # A node whose served leaderboard its peers' logs do not back fails the audit.
        forged = [best.model_copy(update={"replicated_by": [ids["a"]]})]
        monkeypatch.setattr(leaderboard, "ranked", lambda *args: forged)
        assert main(audit) == 1
        out = capsys.readouterr().out
        assert f"ranks {best.experiment_id} replicated by {ids['a']}, which its audited" in out
        assert "result: FAIL" in out
