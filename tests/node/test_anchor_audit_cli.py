"""A campaign anchors its log on the embedded chain; `audit --rpc` checks every anchor."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes import FakeEngineer
from logfix import small_config

from node.cli.main import main
from node.runtime import Node, open_node
from node.store import Outbox


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    (home / "config.toml").write_text(
        (home / "config.toml").read_text().replace("checkpoint_every = 100", "checkpoint_every = 4")
    )
    monkeypatch.setattr(Node, "engineer", lambda self: FakeEngineer(fail_every=4, best=0.5))
    node = open_node(home)
    camp = node.store.create_campaign("fake", small_config(3).model_dump(mode="json"))
    with node.anchoring_followers():
        node.run_campaign(camp.id)
    summary = node.anchor_summary
    assert summary is not None and summary.drained and summary.failed == 0
    assert summary.confirmed >= 3  # several checkpoints of 4 entries, and the one at stop
    node.store.close()
    return home


def test_audit_with_chain_checks_passes_on_the_embedded_chain(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.json"
    assert run(capsys, "--home", str(home), "log", "export", str(bundle))[0] == 0
    code, out, _ = run(capsys, "--home", str(home), "audit", str(bundle), "--rpc", "embedded")
    assert code == 0, out
    assert "[ok  ] chain anchors:" in out and "result: PASS" in out
    # The controller never heard of the campaign: a warning, never a plain [ok  ].
    assert "13. [WARN] obedience: FLAGGED ungoverned: controller" in out


def test_audit_names_an_unanchored_checkpoint_and_an_unapproved_key(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = open_node(home)
    # A second run with anchoring off: its checkpoints never reach the chain.
    camp = node.store.create_campaign("unanchored", small_config(1).model_dump(mode="json"))
    node.run_campaign(camp.id)
    cp = node.log().latest_checkpoint()
    assert cp is not None
    node.store.close()
    bundle = tmp_path / "bundle.json"
    assert run(capsys, "--home", str(home), "log", "export", str(bundle))[0] == 0
    code, out, _ = run(capsys, "--home", str(home), "audit", str(bundle), "--rpc", "embedded")
    assert code == 1
    assert "[FAIL] chain anchors: step 3 (missing anchor): checkpoint of size" in out
    other = "0x" + "12" * 20
    code, out, _ = run(
        capsys,
        "--home",
        str(home),
        "audit",
        str(bundle),
        "--rpc",
        "embedded",
        "--approved-node",
        other,
    )
    assert code == 1 and "which is not an approved node key" in out


def test_demo_anchors_its_log_and_its_export_audits_with_chain_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "demo-home"
    monkeypatch.setattr(Node, "engineer", lambda self: FakeEngineer(fail_every=5, best=0.5))
    code, out, _ = run(capsys, "--home", str(home), "demo")
    assert code == 0, out
    assert "checkpoint(s) confirmed on embedded" in out and "still queued" not in out
    bundle = tmp_path / "demo.json"
    assert run(capsys, "--home", str(home), "log", "export", str(bundle))[0] == 0
    code, out, _ = run(capsys, "--home", str(home), "audit", str(bundle), "--rpc", "embedded")
    assert code == 0 and "[ok  ] chain anchors:" in out, out


def test_chain_status_reports_the_embedded_chain_and_its_outbox(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = open_node(home)
    outbox = Outbox(node.store)
    rows = outbox.rows()
    latest = max(r.tree_size for r in rows)
    waiting = outbox.enqueue(rows[0].log_id, latest + 4, bytes(32))
    outbox.retry(waiting, "the RPC endpoint timed out", datetime.now(UTC))
    node.store.close()
    code, out, _ = run(capsys, "--home", str(home), "chain", "status")
    assert code == 0 and "at embedded (" in out
    assert f"outbox: 1 pending, 0 sent, {len(rows)} confirmed, 0 failed" in out
    assert f"latest confirmed size {latest}; size {latest + 4} waits: the RPC endpoint" in out
    assert "icp outbox" not in out  # no canister configured and nothing queued for one
