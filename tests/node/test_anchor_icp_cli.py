"""A campaign anchors its log on both targets (the embedded EVM and the ICP anchor canister
on the loopback replica); `audit --icp URL` checks the certified anchor against the log."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "governance"))
sys.path.insert(0, str(Path(__file__).parents[1] / "attestation" / "icp"))

from fakes import FakeEngineer
from icp_replica import ROOT_KEY_DER, Replica, Server
from icp_vectors import VECTORS
from logfix import small_config

from attestation.icp.principal import from_text
from governance.icp import log_label
from node.cli.main import main
from node.runtime import Node, open_node
from node.store import Outbox
from node.tlog.log import LogView

CANISTER = "uxrrr-q7777-77774-qaaaq-cai"


@dataclass
class Anchored:
    home: Path
    bundle: Path
    replica: Replica
    url: str
    label: str
    size: int
    root: bytes


def _configure(home: Path, url: str, key: Path) -> None:
    config = home / "config.toml"
    text = config.read_text().replace("checkpoint_every = 100", "checkpoint_every = 4")
    text = text.replace('# url = "..."', f'url = "{url}"')
    text = text.replace('# anchor_canister = "..."', f'anchor_canister = "{CANISTER}"')
    text = text.replace('# root_key_path = "..."', f'root_key_path = "{key}"')
    config.write_text(text)


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anchored]:
    tmp = tmp_path_factory.mktemp("icp-anchors")
    home, key = tmp / "home", tmp / "replica.der"
    key.write_bytes(ROOT_KEY_DER)
    replica = Replica(canister_id=from_text(CANISTER), time_ns=time.time_ns(), sync_calls=True)
    with Server(replica) as server, pytest.MonkeyPatch.context() as mp:
        assert main(["--home", str(home), "init"]) == 0
        _configure(home, server.url, key)
        mp.setattr(Node, "engineer", lambda self: FakeEngineer(fail_every=4, best=0.5))
        replica.model.writers.add(from_text(_principal(home)))  # the SNS authorised it
        node = open_node(home)
        node.store.create_campaign("fake", small_config(3).model_dump(mode="json"))
        node.store.close()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):  # anchors by default: [icp] names a canister
            assert main(["--home", str(home), "campaign", "run", "fake"]) == 0
        lines = [line for line in out.getvalue().splitlines() if line.startswith("anchors:")]
        evm, icp = (int(line.split()[1]) for line in lines)
        assert f"confirmed on embedded ({home / 'embedded-chain.txs'})" in lines[0]
        assert lines[1].endswith(f"confirmed on icp canister {CANISTER} at {server.url}")
        assert icp == evm >= 3  # every checkpoint went to both targets, none left queued
        assert f"--rpc embedded --icp {server.url}" in out.getvalue()
        node = open_node(home)
        latest = LogView(node.store).latest_checkpoint()
        assert latest is not None
        label = log_label(latest.log_id)
        rows = Outbox(node.store, "icp").rows()
        assert [r.anchor_count for r in rows] == list(range(1, len(rows) + 1))
        assert [r.tree_size for r in rows] == [r.tree_size for r in Outbox(node.store).rows()]
        node.store.close()
        bundle = tmp / "bundle.json"
        assert main(["--home", str(home), "log", "export", str(bundle)]) == 0
        replica.time_ns = time.time_ns()  # the replica's clock moves on
        yield Anchored(home, bundle, replica, server.url, label, latest.tree_size, latest.root_hash)


def _principal(home: Path) -> str:
    from governance.icp import NodeIdentity

    return NodeIdentity.load_or_create(home / "icp_identity.pem").principal_text


def _audit(
    capsys: pytest.CaptureFixture[str], a: Anchored, *extra: str, home: Path | None = None
) -> tuple[int, str]:
    argv = ["--home", str(home or a.home), "audit", str(a.bundle), "--icp", a.url, *extra]
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_canister_holds_the_latest_checkpoint_and_the_audit_passes(
    anchored: Anchored, capsys: pytest.CaptureFixture[str]
) -> None:
    a = anchored
    assert a.replica.model.logs[a.label][-1] == (a.size, a.root)
    code, out = _audit(capsys, a, "--rpc", "embedded")
    assert code == 0, out
    assert "[ok  ] chain anchors:" in out
    assert f"[ok  ] icp anchor: log {a.label} anchored at size {a.size} on canister" in out
    assert "result: PASS" in out

    code, out = _audit(capsys, a, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] and report["steps"][-1]["name"] == "icp anchor"
    assert report["icp_anchor"]["tree_size"] == a.size
    assert report["icp_anchor"]["root"] == a.root.hex()


def test_chain_status_shows_both_outboxes(
    anchored: Anchored, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(anchored.home), "chain", "status"]) == 0
    out = capsys.readouterr().out
    node = open_node(anchored.home)
    n = len(Outbox(node.store, "icp").rows())
    node.store.close()
    icp = f"icp outbox (canister {CANISTER} at {anchored.url}): 0 pending, {n} confirmed, 0 failed"
    assert f"{icp}; latest confirmed size {anchored.size}" in out
    assert f"0 sent, {n} confirmed, 0 failed; latest confirmed size {anchored.size}" in out


def test_an_auditor_names_canister_and_root_key_and_each_mismatch_fails_with_its_cause(
    anchored: Anchored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a, auditor = anchored, tmp_path / "auditor"
    key = tmp_path / "replica.der"
    key.write_bytes(ROOT_KEY_DER)
    flags = ("--canister", CANISTER, "--root-key", str(key))
    code, out = _audit(capsys, a, *flags, home=auditor)
    assert code == 0 and "[ok  ] icp anchor:" in out, out

    code, out = _audit(capsys, a, "--canister", CANISTER, home=auditor)  # the mainnet key
    assert code == 1 and "[FAIL] icp anchor: the canister's answer failed verification" in out
    assert "(signature)" in out

    kept = list(a.replica.model.logs[a.label])
    try:
        a.replica.model.logs[a.label] = [*kept[:-1], (a.size, bytes(32))]
        code, out = _audit(capsys, a, *flags, home=auditor)
        assert code == 1 and f"differs from the log's root {a.root.hex()}" in out
        assert "result: FAIL" in out

        a.replica.model.logs[a.label] = [*kept, (a.size + 3, bytes(32))]
        code, out = _audit(capsys, a, *flags, home=auditor)
        assert code == 1
        assert f"anchored at size {a.size + 3}, beyond the bundle's {a.size} entries" in out

        a.replica.model.logs[a.label] = [*kept[:1]]  # an older anchor: later ones not yet
        code, out = _audit(capsys, a, *flags, home=auditor)
        assert code == 0 and f"of {a.size} (later ones not yet)" in out

        del a.replica.model.logs[a.label]
        code, out = _audit(capsys, a, *flags, home=auditor)
        assert code == 1 and "has no anchor on canister" in out
    finally:
        a.replica.model.logs[a.label] = kept

    code, out = _audit(capsys, a, home=auditor)
    assert code == 2 and "give --canister ID" in out
    code, out = _audit(capsys, a, "--canister", CANISTER, "--root-key", str(VECTORS / "nope"))
    assert code == 2 and "No such file" in out


def test_the_icp_check_needs_nothing_of_the_train_extra(anchored: Anchored, tmp_path: Path) -> None:
    """An auditor's light install (no torch, numpy, openai) checks the certified anchor,
    naming the canister and root key itself, with no node home of its own."""
    from test_light_verifier import _light

    key = tmp_path / "replica.der"
    key.write_bytes(ROOT_KEY_DER)
    home = tmp_path / "auditor"  # never created: the flags say everything
    done = _light(
        "--home", str(home), "audit", str(anchored.bundle), "--icp", anchored.url,
        "--canister", CANISTER, "--root-key", str(key),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"[ok  ] icp anchor: log {anchored.label} anchored at size {anchored.size}" in done.stdout
    )
    assert "modules of the train extra loaded: []" in done.stdout
    assert not home.exists()
