"""The node key, `node show`, `log export`, `audit` and the log's HTTP routes, end to end."""

from __future__ import annotations

import base64
import json
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fakes import FakeEngineer
from fastapi.testclient import TestClient
from logfix import small_config

from attestation.merkle import leaf_hash, verify_consistency, verify_inclusion
from governance.anvil import free_port
from node.api.app import create_app
from node.cli.main import main
from node.runtime import Node, open_node


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    monkeypatch.setattr(Node, "engineer", lambda self: FakeEngineer(fail_every=4, best=0.5))
    node = open_node(home)
    camp = node.store.create_campaign("fake", small_config(3).model_dump(mode="json"))
    node.run_campaign(camp.id)
    node.store.close()
    return home


def test_init_creates_a_private_key_and_node_show_prints_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = home / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    code, out, _ = run(capsys, "--home", str(home), "node", "show")
    assert code == 0
    fingerprint = re.search(r"node id \(key fingerprint\): (sha256:[0-9a-f]{64})", out)
    assert fingerprint is not None
    assert "public key (C2SP verifier key): asi-node.log/" in out
    code, out, _ = run(capsys, "--home", str(home), "init", "--force")
    assert code == 0 and f"node key kept: {fingerprint.group(1)}" in out


def test_a_run_records_every_finished_experiment_and_its_start_and_stop(home: Path) -> None:
    node = open_node(home)
    tlog = node.log()
    camp = node.store.list_campaigns()[0]
    finished = [e for e in node.store.list_experiments(camp.id) if e.status in ("done", "failed")]
    kinds = [e.kind for e in tlog.entries(0, tlog.size)]
    assert kinds.count("experiment") == len(finished) >= 5
    assert kinds[0] == "event" and kinds[-1] == "event"  # key created ... campaign stop
    cp = tlog.latest_checkpoint()
    assert cp is not None and cp.tree_size == tlog.size  # stop writes a checkpoint


def test_export_then_audit_passes_and_tampering_fails_with_exit_1(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.json"
    code, out, _ = run(capsys, "--home", str(home), "log", "export", str(bundle))
    assert code == 0 and "entries" in out
    code, out, _ = run(capsys, "audit", str(bundle))
    assert code == 0 and "result: PASS" in out and "10. [ok  ] record rules" in out
    code, out, _ = run(capsys, "audit", str(bundle), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["log"]["tree_size"] > 5
    data = json.loads(bundle.read_text())
    data["entries"].pop(2)
    bundle.write_text(json.dumps(data))
    code, out, err = run(capsys, "audit", str(bundle))
    assert code == 1 and "FAIL at step 4" in out and "Traceback" not in out + err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"format": "asi-node/log-bundle", "version": 1, "orig', "truncated?"),
        (b"not json at all", "not valid JSON"),
        (b'{"format": "asi-node/log-bundle", "version": 99}', "version 99 is not supported"),
    ],
    ids=["truncated", "garbage", "version"],
)
def test_bad_bundles_give_a_clear_message_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(content)
    code, out, err = run(capsys, "audit", str(path))
    assert code == 1 and message in out and "Traceback" not in out + err
    code, out, _ = run(capsys, "audit", str(path), "--json")
    assert code == 1 and json.loads(out)["steps"][0]["name"] == "bundle format"


def test_a_missing_bundle_or_unreachable_node_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "audit", str(tmp_path / "nope.json"))
    assert code == 2 and "no bundle at" in err
    code, _, err = run(capsys, "audit", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "cannot fetch" in err


def test_http_routes_serve_checkpoint_entries_and_verifiable_proofs(home: Path) -> None:
    node = open_node(home)
    client = TestClient(create_app(node.store))
    cp = client.get("/log/checkpoint").json()
    size, root = cp["tree_size"], base64.b64decode(cp["root_hash"])
    assert cp["note"].startswith(cp["origin"] + "\n")
    entries = client.get("/log/entries", params={"start": 0, "end": size}).json()
    assert [e["index"] for e in entries] == list(range(size))
    leaf = leaf_hash(base64.b64decode(entries[3]["envelope"]))
    proof = client.get("/log/proof/inclusion", params={"index": 3, "tree_size": size}).json()
    verify_inclusion(3, size, leaf, [base64.b64decode(h) for h in proof["proof"]], root)
    older = client.get("/log/checkpoints").json()[0]
    c = client.get(
        "/log/proof/consistency", params={"first": older["tree_size"], "second": size}
    ).json()
    verify_consistency(
        older["tree_size"],
        size,
        base64.b64decode(older["root_hash"]),
        root,
        [base64.b64decode(h) for h in c["proof"]],
    )
    assert (
        client.get("/log/proof/inclusion", params={"index": size, "tree_size": size}).status_code
        == 404
    )
    assert client.get("/log/entries", params={"start": 5, "end": 2}).status_code == 400


@pytest.fixture
def served(home: Path) -> Iterator[str]:
    node = open_node(home)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(node.store), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.integration
def test_audit_by_url_verifies_a_running_nodes_log(
    served: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--home", str(home), "node", "show")
    fingerprint = out.split("node id (key fingerprint): ")[1].split()[0]
    code, out, _ = run(capsys, "audit", served, "--key", fingerprint)
    assert code == 0 and "result: PASS" in out
    code, out, _ = run(capsys, "audit", served, "--key", "sha256:" + "0" * 64)
    assert code == 1 and "not the trusted" in out


def test_a_passphrase_encrypts_the_key_and_its_absence_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "enc"
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse battery staple\n")
    monkeypatch.setenv("ASI_NODE_TLOG__KEY_PASSPHRASE_FILE", str(secret))
    code, out, _ = run(capsys, "--home", str(home), "init")
    assert code == 0 and "node key created" in out
    assert b"ENCRYPTED" in (home / "node.key").read_bytes()
    code, out, _ = run(capsys, "--home", str(home), "node", "show")
    assert code == 0 and "sha256:" in out
    monkeypatch.delenv("ASI_NODE_TLOG__KEY_PASSPHRASE_FILE")
    code, _, err = run(capsys, "--home", str(home), "node", "show")
    assert code == 2 and "is encrypted" in err and "Traceback" not in err


def test_audit_checks_the_log_extends_a_checkpoint_seen_before(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = open_node(home)
    first = node.log().latest_checkpoint()
    assert first is not None
    seen = tmp_path / "seen.note"
    seen.write_text(first.note)
    node.store.close()
    bundle = tmp_path / "bundle.json"
    assert run(capsys, "--home", str(home), "log", "export", str(bundle))[0] == 0
    code, out, _ = run(capsys, "audit", str(bundle), "--checkpoint", str(seen))
    assert code == 0 and "1 seen before" in out
    seen.write_text(first.note.replace(first.origin, first.origin + "x", 1))
    code, out, _ = run(capsys, "audit", str(bundle), "--checkpoint", str(seen))
    assert code == 1 and "seen checkpoint 0" in out


def test_candidates_left_unscored_by_a_failed_reference_are_still_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loop.engineer import EvalResult, ExperimentJob
    from loop.outcome import FailureClass

    class ReferenceFails(FakeEngineer):
        def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
            if "DeltaNet as Mixer" in job.code:
                return EvalResult(FailureClass.TIMEOUT, "too slow")
            return super().run(job, cancel)

    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    monkeypatch.setattr(Node, "engineer", lambda self: ReferenceFails(best=0.5))
    node = open_node(home)
    camp = node.store.create_campaign("fake", small_config(2).model_dump(mode="json"))
    node.run_campaign(camp.id)
    exps = node.store.list_experiments(camp.id)
    assert any(e.status == "done" and e.fitness is None for e in exps)
    tlog = node.log()
    recorded = {e.subject for e in tlog.entries(0, tlog.size) if e.kind == "experiment"}
    assert recorded == {e.id for e in exps if e.status in ("done", "failed")}
