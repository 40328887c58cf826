"""`asi-node gov ...` and the lineage in `campaign show`, against the API with a fake Governor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from governor_fake import ControllerFake as FakeGovernor
from pydantic import SecretStr

import node.cli.gov as gov_cli
from node.api.app import create_app
from node.cli.main import main
from node.runtime import open_node
from node.store import DirectiveLedger

KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    return home


def wire(monkeypatch: pytest.MonkeyPatch, home: Path, gov: FakeGovernor) -> None:
    """Route the CLI's HTTP calls into the app in process (no server needed)."""
    node = open_node(home)
    client = TestClient(create_app(node.store, governor=gov, operator_token=SecretStr("tok")))

    def call(url: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = client.request(method, path, json=body, headers=headers)
        if r.status_code >= 400:
            raise gov_cli.GovRequestError(f"{method} {path} answered {r.status_code}: {r.text}")
        return r.json()

    monkeypatch.setattr(gov_cli, "_call", call)


def test_vote_signs_a_ballot_and_the_node_relays_it(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gov = FakeGovernor()
    key_file = tmp_path / "voter.key"
    key_file.write_text("0x" + KEY)
    from governance.ballots import voter_address

    gov.power[voter_address(bytes.fromhex(KEY)).lower()] = 3
    wire(monkeypatch, home, gov)
    assert main(["--home", str(home), "gov", "vote", "7", "for", "--key-file", str(key_file)]) == 0
    assert "relayed" in capsys.readouterr().out
    (ballot,) = gov.relayed
    assert ballot.support == 1 and ballot.proposal_id == 7  # type: ignore[attr-defined]
    # A second vote (with the next nonce) is refused: the voter has voted already.
    assert main(["--home", str(home), "gov", "vote", "7", "for", "--key-file", str(key_file)]) == 2
    assert "already voted" in capsys.readouterr().err
    assert main(["--home", str(home), "gov", "proposals"]) == 0
    assert "active" in capsys.readouterr().out


def test_propose_prints_calldata_and_unknown_campaigns_are_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    camp = open_node(home).store.create_campaign("x", {"preset": "quick"})
    gov = FakeGovernor()
    gov.campaigns[camp.id] = "active"
    wire(monkeypatch, home, gov)
    argv = ["--home", str(home), "gov", "propose", "pause", "x", "--description", "d"]
    assert main([*argv, "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out)
    assert prepared["calls"][0]["function"] == "pauseCampaign"
    assert main(argv) == 0
    out = capsys.readouterr().out
    # How to submit it: the Governor's propose calldata for a wallet, or Tally's actions.
    assert f"proposal {prepared['proposal_id']} (prepared; nothing was sent)" in out
    assert f"1. pauseCampaign(campaignId={camp.id}) on {prepared['targets'][0]}" in out
    assert f"to the Governor {gov.domain().verifying_contract}, value 0" in out
    assert prepared["propose_calldata"] in out and "Tally" in out
    assert f"target {prepared['targets'][0]} calldata {prepared['calldatas'][0]}" in out
    assert main(["--home", str(home), "gov", "propose", "stop", "nope", "--description", "d"]) == 2
    assert "404" in capsys.readouterr().err
    gov.campaigns[camp.id] = "paused"  # the controller would revert: refused, with the reason
    assert main(argv) == 2
    assert "InvalidTransition" in capsys.readouterr().err


def test_propose_register_reads_the_local_config_hash(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    camp = open_node(home).store.create_campaign("x", {"preset": "quick"})
    gov = FakeGovernor()
    wire(monkeypatch, home, gov)
    argv = ["--home", str(home), "gov", "propose", "register", "x", "--description", "reg"]
    proposer = "0x" + "ab" * 20
    assert main([*argv, "--proposer", proposer, "--config-uri", "ipfs://c", "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out)
    (call,) = prepared["calls"]
    assert call["function"] == "registerCampaign"
    assert call["args"] == {
        "campaignId": camp.id,
        "configHash": "0x" + camp.config_hash.removeprefix("sha256:"),
        "configURI": "ipfs://c",
    }
    assert prepared["description"].lower() == f"reg#proposer={proposer}"
    assert main([*argv, "--config-hash", "0x" + "00" * 32]) == 2
    assert "nodes run it only under the hash registered" in capsys.readouterr().err
    gov.campaigns[camp.id] = "active"
    assert main(argv) == 2
    assert "CampaignExists" in capsys.readouterr().err
    other = ["--home", str(home), "gov", "propose", "register", "c-other", "--description", "r"]
    assert main(other) == 2
    assert "--config-hash" in capsys.readouterr().err
    assert main([*other, "--config-hash", "0x" + "01" * 32, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calls"][0]["args"]["campaignId"] == "c-other"


def test_propose_covers_every_controller_function(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node = open_node(home)
    camp = node.store.create_campaign("x", {"preset": "quick"})
    gov = FakeGovernor()
    gov.campaigns[camp.id] = "active"
    wire(monkeypatch, home, gov)
    some = "0x" + "12" * 20
    gov.nodes.add(some)
    measurement = "0x" + "34" * 32
    runs = {
        ("resume", "x"): "resumeCampaign",
        ("stop", "x"): "stopCampaign",
        ("pause-all",): "pauseAll",
        ("set-measurement", measurement, "--remove"): "setMeasurement",
        ("approve-node", some, "--measurement", measurement): "approveNode",
        ("revoke-node", some): "revokeNode",
    }
    gov.campaigns[camp.id] = "paused"
    for extra, function in runs.items():
        argv = ["--home", str(home), "gov", "propose", *extra, "--description", "d", "--json"]
        assert main(argv) == 0, (extra, capsys.readouterr().err)
        (call,) = json.loads(capsys.readouterr().out)["calls"]
        assert call["function"] == function
    assert call["args"] == {"node": "0x" + "12" * 20}
    base = ["--home", str(home), "gov", "propose"]
    assert main([*base, "unpause-all", "--description", "d"]) == 2  # not paused globally
    assert "not paused globally" in capsys.readouterr().err
    assert main([*base, "pause-all", "x", "--description", "d"]) == 2
    assert main([*base, "approve-node", "--description", "d"]) == 2
    assert "the node's address" in capsys.readouterr().err


def test_propose_fork_defaults_to_this_nodes_log_and_can_resume_the_child(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from governance.chain import address_of, chain_log_id
    from node.anchoring.chain_home import load_key
    from node.tlog.log import log_id
    from node.tlog.records import Recorder

    node = open_node(home)
    camp = node.store.create_campaign("x", {"preset": "quick"})
    Recorder(node.log(), node.store).catch_up(camp, unscored=True)  # the log has entries
    size = node.log().size
    key = load_key(home)
    gov = FakeGovernor()
    gov.campaigns[camp.id] = "active"
    wire(monkeypatch, home, gov)
    argv = ["--home", str(home), "gov", "propose", "fork", "x", "--child", "x-wide"]
    argv += ["--from-tree-size", str(size), "--config-hash", "0x" + "02" * 32]
    assert main([*argv, "--resume-child", "--description", "fork x and run it"]) == 0
    out = capsys.readouterr().out
    expected_log = chain_log_id(address_of(key), log_id(node.log().origin))
    assert f"log id: this node's log as its chain key anchors it, 0x{expected_log.hex()}" in out
    assert "1. forkCampaign(parent=" + camp.id + ", child=x-wide, logId=0x" in out
    assert "succeeds on the latest block" in out
    assert "2. resumeCampaign(campaignId=x-wide)" in out and "not run" in out
    assert f"checkpointRoot=0x{node.log().root(size).hex()}" in out
    assert gov.simulated == ["forkCampaign"]  # the child's resume acts on the fork's result
    too_far = [*argv[:-4], "--from-tree-size", str(size + 5), "--config-hash", "0x" + "02" * 32]
    assert main([*too_far, "--description", "d"]) == 2
    assert "give --checkpoint-root" in capsys.readouterr().err


def test_proposals_show_decoded_calls_and_whether_a_voter_voted(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    from governance.proposals import ControllerCall

    gov = FakeGovernor()
    data = ControllerCall("stopCampaign", ("c-1",)).calldata()
    gov.infos[7] = replace(
        gov.infos[7],
        proposer="0x" + "ab" * 20,
        quorum=40,
        targets=(gov.controller_address,),
        values=(0,),
        calldatas=(data,),
    )
    voter = "0x" + "cd" * 20
    gov.voted.add((7, voter))
    wire(monkeypatch, home, gov)
    assert main(["--home", str(home), "gov", "proposals", "--voter", voter]) == 0
    out = capsys.readouterr().out
    assert "(quorum 40)" in out and "  - stopCampaign(campaignId=c-1)" in out
    assert "  voted" in out and "not voted yet" in out  # 7 voted, 8 not
    assert main(["--home", str(home), "gov", "show", "7", "--voter", voter]) == 0
    out = capsys.readouterr().out
    assert out.startswith("7  ") and "stopCampaign(campaignId=c-1)" in out and "  voted" in out
    assert main(["--home", str(home), "gov", "show", "9"]) == 2
    assert "answered 404" in capsys.readouterr().err


def test_queue_uses_the_operator_token(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gov = FakeGovernor()
    wire(monkeypatch, home, gov)
    assert main(["--home", str(home), "gov", "queue", "7"]) == 2  # no token configured
    monkeypatch.setenv("ASI_NODE_API__OPERATOR_TOKEN", "tok")
    assert main(["--home", str(home), "gov", "queue", "7"]) == 0
    assert gov.kept == [("queue", 7)]
    capsys.readouterr()
    assert main(["--home", str(home), "gov", "execute", "seven"]) == 2
    assert "'seven' is no proposal id" in capsys.readouterr().err
    assert gov.kept == [("queue", 7)]


def test_campaign_show_prints_lineage_and_directives(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = open_node(home)
    parent = node.store.create_campaign("x", {"preset": "quick"})
    ledger = DirectiveLedger(node.store)
    ledger.record(source="evm", campaign_id=parent.id, epoch=2, kind="pause", ref="0xabc")
    child = ledger.fork(parent.id, "x-child", {"preset": "quick", "seed": 1}, tree_size=3)
    assert main(["--home", str(home), "campaign", "show", child.id]) == 0
    out = capsys.readouterr().out
    assert f"forked from {parent.id} (x) at log size 3" in out
    assert main(["--home", str(home), "campaign", "show", parent.id]) == 0
    out = capsys.readouterr().out
    assert f"forked to {child.id} (x-child) at log size 3" in out
    assert "directive pause epoch 2 from evm" in out and "not yet acknowledged" in out
    assert "refused" not in out
    why = "the fork's checkpoint root 0x00 is not this node's log root at size 9"
    detail = {"parent": parent.id, "refused": why}
    ledger.record(source="evm", campaign_id="x-bad", epoch=1, kind="fork", ref="0x1", detail=detail)
    assert main(["--home", str(home), "campaign", "show", parent.id]) == 0
    assert f"fork to x-bad refused (epoch 1 from evm): {why}" in capsys.readouterr().out
    assert main(["--home", str(home), "campaign", "show", child.id]) == 0
    assert "x-bad" not in capsys.readouterr().out
    assert main(["--home", str(home), "gov", "directives", child.id]) == 0
    assert f"forked from {parent.id} (x) at log size 3" in capsys.readouterr().out


def test_gov_audit_passes_a_clean_campaign(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    camp = open_node(home).store.create_campaign("x", {"preset": "quick"})
    assert main(["--home", str(home), "gov", "audit", camp.id]) == 0
    assert "0 experiment(s) started while paused" in capsys.readouterr().out


def test_gov_run_without_a_source_says_what_to_configure(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_node(home).store.create_campaign("x", {"preset": "quick"})
    assert main(["--home", str(home), "gov", "run", "x"]) == 2
    assert "sns_governance_canister" in capsys.readouterr().err


def test_the_sns_source_is_built_from_the_icp_settings(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.governed.obey import sources_from_settings

    monkeypatch.setenv("ASI_NODE_ICP__URL", "http://127.0.0.1:1")
    monkeypatch.setenv("ASI_NODE_ICP__SNS_GOVERNANCE_CANISTER", "ryjl3-tyaaa-aaaaa-aaaba-cai")
    monkeypatch.setenv("ASI_NODE_ICP__SNS_PAUSE_FUNCTION", "1001")
    (source,) = sources_from_settings(open_node(home).settings)
    assert source.name == "sns"


def test_a_restarted_governed_node_keeps_what_was_applied(home: Path) -> None:
    from governance.directives import DirectiveKind, QueueSource
    from node.governed.obey import governed_node
    from node.tlog.records import DIRECTIVE_KIND, predicate_of

    node = open_node(home)
    camp = node.store.create_campaign("x", {"preset": "quick"})
    DirectiveLedger(node.store).record(source="local", campaign_id=camp.id, epoch=3, kind="pause")
    source = QueueSource("local")
    governed = governed_node(node, ["x"], [source])
    assert governed.step().started == []  # still paused: nothing runs
    assert node.store.get_campaign(camp.id).status == "paused"
    # The pause applied before directives were logged is logged on the first step.
    (old,) = DirectiveLedger(node.store).list_applied(camp.id)
    entry = node.log().entries(old.detail["log_index"], old.detail["log_index"] + 1)[0]
    assert entry.kind == DIRECTIVE_KIND and predicate_of(entry.envelope)["epoch"] == 3
    for _ in range(3):
        source.issue(DirectiveKind.RESUME, camp.id)  # epochs 1..3: already applied, stale
    assert governed.step().applied == []
    source.issue(DirectiveKind.FORK, "x-child", parent_id=camp.id, config_hash=b"\x01" * 32)
    (row,) = governed.step().applied
    assert "no fork config" in row.detail["refused"]
    logged = node.log().entries(row.detail["log_index"], row.detail["log_index"] + 1)[0]
    assert predicate_of(logged.envelope)["fork"]["refused"] == row.detail["refused"]
    assert governed.runs == {}


def test_the_readme_governance_settings_load(tmp_path: Path) -> None:
    import re

    from node.settings import load_settings

    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text().split("## Governance")[1].split("\n## ")[0]
    (block,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    (tmp_path / "config.toml").write_text(block)
    settings = load_settings(tmp_path, env={}).governance
    assert settings.confirmations == 2 and settings.stop_deadline_seconds == 30.0
