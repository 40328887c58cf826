"""The streaming audit: line-delimited bundles, the same verdicts as the whole-document
audit, and `audit URL --state DIR` going on from a kept checkpoint over HTTP."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from logfix import run_logged_campaign
from test_audit import TAMPER, Bundle, _load

from attestation.audit import audit_with, verify_bundle, verify_stream
from attestation.bundle import BundleHeader
from attestation.dsse import Envelope
from attestation.keys import NodeKey
from attestation.schema import NodeEventKind
from governance.anvil import free_port
from node.api.app import create_app
from node.cli.main import main
from node.store import Store
from node.tlog.log import NodeLog
from node.tlog.records import EVENT_KIND, EXPERIMENT_KIND, event_statement


def _lines(bundle: Bundle) -> bytes:
    """A version 2 bundle (as a dict) written as version 3 lines, tampering and all."""
    header = BundleHeader(
        origin=bundle["origin"],
        public_key=bundle["public_key"],
        size=len(bundle["entries"]),
        checkpoints=bundle["checkpoints"],
        consistency=bundle["consistency"],
    )
    out = [header.to_line()]
    for e in bundle["entries"]:
        line = {"index": e["index"], "envelope": e["envelope"]}
        out.append(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return b"".join(out)


@pytest.fixture(scope="module")
def honest() -> Iterator[tuple[bytes, bytes, NodeKey]]:
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, key, fail_every=3)
        yield tlog.export().to_bytes(), b"".join(tlog.export_lines(batch=4)), key


def test_a_line_bundle_passes_with_the_same_findings_as_the_whole_document(
    honest: tuple[bytes, bytes, NodeKey],
) -> None:
    whole, lines, key = honest
    a = verify_bundle(whole, key.public.fingerprint)
    b = verify_stream(io.BytesIO(lines), key.public.fingerprint)
    assert (a.size, a.root_hash, a.records, a.checkpoints) == (
        b.size,
        b.root_hash,
        b.records,
        b.checkpoints,
    )
    assert b.statements == () and b.leaves == ()  # a streaming audit keeps no entry
    assert _lines(_load(whole)) == lines


@pytest.mark.parametrize("case", [c for c in TAMPER if "inclusion" not in c])
def test_tampering_fails_the_same_step_in_a_line_bundle(
    honest: tuple[bytes, bytes, NodeKey], case: str
) -> None:
    tamper, step, detail = TAMPER[case]
    bundle = _load(honest[0])
    tamper(bundle)
    report = audit_with(
        case, lambda passed: verify_stream(io.BytesIO(_lines(bundle)), None, passed)
    )
    failed = report.failure
    assert failed is not None and failed.name == step, report.render()
    assert detail in failed.detail
    numbers = [s.number for s in report.steps]
    assert numbers == list(range(1, numbers[-1] + 1))  # the steps before it passed


def test_two_tamperings_name_the_lower_step_as_the_whole_document_does(
    honest: tuple[bytes, bytes, NodeKey],
) -> None:
    bundle = _load(honest[0])
    TAMPER["edited record"][0](bundle)  # step 5, at entry 3
    del bundle["entries"][6]  # step 4, later in the stream
    whole = audit_with("w", lambda p: verify_bundle(json.dumps(bundle).encode(), None, p))
    streamed = audit_with("s", lambda p: verify_stream(io.BytesIO(_lines(bundle)), None, p))
    assert whole.failure is not None and streamed.failure is not None
    assert whole.failure.name == streamed.failure.name == "entry sequence"
    assert whole.failure.detail == streamed.failure.detail


def test_a_truncated_line_bundle_is_a_format_failure(honest: tuple[bytes, bytes, NodeKey]) -> None:
    lines = honest[1]
    report = audit_with("t", lambda p: verify_stream(io.BytesIO(lines[: len(lines) - 40]), None, p))
    assert report.failure is not None and report.failure.number == 1
    assert "truncated?" in report.failure.detail


# --- audit URL --state DIR over HTTP ---------------------------------------------------


class Served:
    """A node's log API on loopback, over a store that the test appends to."""

    def __init__(self, store: Store) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(store), host="127.0.0.1", port=self.port, log_level="error")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _audit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["audit", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _grow(tlog: NodeLog, n: int) -> None:
    for _ in range(n):
        tlog.append(EVENT_KIND, event_statement(tlog.node_id, NodeEventKind.NODE_KEY_CREATED))
    tlog.checkpoint()


@pytest.mark.integration
def test_state_keeps_the_checkpoint_and_the_next_audit_reads_only_new_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = NodeKey.generate()
    state = tmp_path / "state"
    state.mkdir()
    with Store.open(f"sqlite:///{tmp_path}/node.db") as store, Served(store) as url:
        tlog, _ = run_logged_campaign(store, key, candidates=2)
        first = tlog.size
        code, out, _ = _audit(capsys, url, "--state", str(state), "--key", key.public.fingerprint)
        assert code == 0 and "result: PASS" in out, out
        assert "kept state: " in out and "audited whole" in out
        [kept] = state.glob("*.json")
        assert json.loads(kept.read_text())["tree_size"] == first
        # One 8-byte digest per experiment record, each once.
        [seen] = state.glob("*.seen")
        count = json.loads(kept.read_text())["seen_count"]
        records = len(tlog.db.subjects(EXPERIMENT_KIND))
        assert count == records > 0 and seen.stat().st_size == 8 * count
        assert len(set(array("Q", seen.read_bytes()))) == count
        _grow(NodeLog(store, key, checkpoint_every=3), 7)
        code, out, _ = _audit(capsys, url, "--state", str(state))
        assert code == 0 and "result: PASS" in out, out
        assert f"from the kept checkpoint at size {first}" in out
        assert "1. [ok  ] bundle format: 7 new entries" in out
        assert f"entries {first}..{first + 6} in order" in out
        assert json.loads(kept.read_text())["tree_size"] == first + 7
        # Nothing new: still a pass, the state stays at the same size.
        code, out, _ = _audit(capsys, url, "--state", str(state), "--json")
        report = json.loads(out)
        assert code == 0 and report["ok"] and report["log"]["tree_size"] == first + 7
        # The incremental summary carries the earlier records' counts.
        assert report["log"]["events"]["node_key_created"] >= 7


@pytest.mark.integration
def test_a_log_inconsistent_with_the_kept_checkpoint_fails_and_keeps_the_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = NodeKey.generate()
    state = tmp_path / "state"
    state.mkdir()
    with Store.open(f"sqlite:///{tmp_path}/a.db") as store, Served(store) as url:
        tlog, _ = run_logged_campaign(store, key, candidates=1)
        honest = _load(tlog.export().to_bytes())
        assert _audit(capsys, url, "--state", str(state))[0] == 0
        kept_size, kept_root = tlog.size, tlog.root(tlog.size).hex()
    [kept] = state.glob("*.json")
    before = kept.read_bytes()
    # The same key's node serves a rewritten history, longer than the kept checkpoint.
    with Store.open(f"sqlite:///{tmp_path}/b.db") as store:
        forged = NodeLog(store, key, checkpoint_every=1000)
        for pos, entry in enumerate(honest["entries"]):
            stmt = json.loads(Envelope.from_bytes(base64.b64decode(entry["envelope"])).payload)
            if pos == 2:
                stmt["predicate"]["metrics"]["mean_acc"] = 0.99
            forged.append("record", stmt)
        _grow(forged, 3)
        with Served(store) as url2:
            code, out, err = _audit(capsys, url2, "--state", str(state))
    assert code == 1 and "Traceback" not in out + err
    assert "forked or rewritten" in out
    assert f"kept checkpoint (size {kept_size}, root {kept_root})" in out
    assert f"size {kept_size + 3}" in out
    assert "kept state unchanged" in out
    assert kept.read_bytes() == before


def test_a_bad_state_directory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], honest: tuple[bytes, bytes, NodeKey]
) -> None:
    bundle = tmp_path / "b.jsonl"
    bundle.write_bytes(honest[1])
    code, _, err = _audit(capsys, str(bundle), "--state", str(tmp_path / "nope"))
    assert code == 2 and "no such directory" in err and "Traceback" not in err
    code, _, err = _audit(capsys, str(bundle), "--state", str(bundle))
    assert code == 2 and "not a directory" in err
    state = tmp_path / "state"
    state.mkdir()
    code, out, _ = _audit(capsys, str(bundle), "--state", str(state))
    assert code == 0 and "kept state:" in out
    [kept] = state.glob("*.json")
    kept.write_text("{not json")
    code, _, err = _audit(capsys, str(bundle), "--state", str(state))
    assert code == 2 and "cannot be read" in err and "remove it" in err


def test_a_compact_range_gives_the_trees_root_at_every_size() -> None:
    from attestation.merkle import CompactRange, Tree, leaf_hash

    tree, compact = Tree(), CompactRange()
    for i in range(70):
        leaf = leaf_hash(i.to_bytes(2, "big"))
        tree.append(leaf)
        compact.append(leaf)
        assert compact.root() == tree.root()
        assert len(compact.hashes) == compact.size.bit_count()
    assert CompactRange(compact.size, compact.hashes).root() == tree.root()
    with pytest.raises(ValueError, match="holds"):
        CompactRange(5, compact.hashes)


def test_the_nodes_own_audit_goes_on_from_the_last_one_that_passed() -> None:
    """GET /log/audit: whole the first time; after more entries and a checkpoint, only
    the entries since (from the kept state), with the same findings as a whole audit."""
    from fastapi.testclient import TestClient

    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, key, name="first")
        client = TestClient(create_app(store))
        first = client.get("/log/audit").json()
        assert first["ok"] and first["from_size"] == 0
        audited = tlog.latest_checkpoint()
        assert audited is not None
        assert client.get("/log/audit").json() == first  # the same checkpoint: kept
        run_logged_campaign(store, key, name="second")
        tlog.checkpoint()
        second = client.get("/log/audit").json()
        assert second["ok"] and second["from_size"] == audited.tree_size
        assert second["log"]["tree_size"] == tlog.size > audited.tree_size
        formats = [s for s in second["steps"] if s["name"] == "bundle format"]
        assert f"{tlog.size - audited.tree_size} new entries" in formats[0]["detail"]
        # A whole audit of the same log reports the same records.
        whole = audit_with("whole", lambda p: verify_stream(io.BytesIO(
            b"".join(tlog.export_lines())), on_step=p)).as_json()  # fmt: skip
        assert whole["ok"]
        same = ("tree_size", "root_hash", "campaigns", "experiment_records", "events")
        assert {k: second["log"][k] for k in same} == {k: whole["log"][k] for k in same}
