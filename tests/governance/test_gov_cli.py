"""`asi-node gov ...` and the lineage in `campaign show`, against the API with a fake Governor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gov_fakes import FakeGovernor
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
    open_node(home).store.create_campaign("x", {"preset": "quick"})
    wire(monkeypatch, home, FakeGovernor())
    assert main(["--home", str(home), "gov", "propose", "pause", "x", "--description", "d"]) == 0
    assert '"proposal_id"' in capsys.readouterr().out
    assert main(["--home", str(home), "gov", "propose", "stop", "nope", "--description", "d"]) == 2
    assert "404" in capsys.readouterr().err


def test_queue_uses_the_operator_token(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gov = FakeGovernor()
    wire(monkeypatch, home, gov)
    assert main(["--home", str(home), "gov", "queue", "7"]) == 2  # no token configured
    monkeypatch.setenv("ASI_NODE_API__OPERATOR_TOKEN", "tok")
    assert main(["--home", str(home), "gov", "queue", "7"]) == 0
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
