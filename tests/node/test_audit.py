"""`audit` accepts an honest node's log and names every kind of tampering."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from logfix import run_logged_campaign

from attestation.audit import audit, verify_bundle
from attestation.dsse import Envelope, sign_statement
from attestation.errors import VerificationError
from attestation.keys import NodeKey
from attestation.merkle import Tree, leaf_hash
from attestation.note import Checkpoint
from attestation.schema import RECORD_VERSIONS, NodeEventKind
from node.store import Store
from node.tlog.log import NodeLog
from node.tlog.records import EVENT_KIND, EXPERIMENT_KIND, event_statement

Bundle = dict[str, Any]


@pytest.fixture(scope="module")
def honest() -> Iterator[tuple[bytes, NodeKey, str]]:
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, cid = run_logged_campaign(store, key, fail_every=3)
        yield tlog.export().to_bytes(), key, cid


def _load(data: bytes) -> Bundle:
    out: Bundle = json.loads(data)
    return out


def _dump(bundle: Bundle) -> bytes:
    return json.dumps(bundle).encode()


def _flip_b64(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_an_honest_log_passes_every_step(honest: tuple[bytes, NodeKey, str]) -> None:
    data, key, cid = honest
    verified = verify_bundle(data, trusted_fingerprint=key.public.fingerprint)
    assert verified.records.campaigns.keys() == {cid}
    assert verified.records.experiments[cid] >= 5
    assert verified.records.events == {"campaign_start": 1, "campaign_stop": 1}
    assert len(verified.checkpoints) >= 2
    report = audit(data, "honest")
    assert report.ok and [s.number for s in report.steps] == list(range(1, 12))
    # No TEE evidence in this log: it passes, but the node is flagged.
    assert report.attestation is not None and report.attestation["status"] == "missing"
    assert "FLAGGED missing" in report.render()
    assert "result: PASS" in report.render()


def _envelope_byte(b: Bundle) -> None:
    entry = b["entries"][3]
    entry["envelope"] = _flip_b64(entry["envelope"], -30)  # inside the signature's base64


def _record_field(b: Bundle) -> None:
    entry = b["entries"][3]
    env = json.loads(base64.b64decode(entry["envelope"]))
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["metrics"]["mean_acc"] = 0.99
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    entry["envelope"] = base64.b64encode(json.dumps(env).encode()).decode()


def _checkpoint_byte(b: Bundle) -> None:
    lines = b["checkpoints"][1].split("\n")
    lines[2] = _flip_b64(lines[2], 5)
    b["checkpoints"][1] = "\n".join(lines)


def _inclusion_proof(b: Bundle) -> None:
    b["inclusion"][2]["proof"][1] = _flip_b64(b["inclusion"][2]["proof"][1], 0)


def _consistency_proof(b: Bundle) -> None:
    b["consistency"][0]["proof"][0] = _flip_b64(b["consistency"][0]["proof"][0], 7)


def _dropped(b: Bundle) -> None:
    del b["entries"][4]


def _reordered(b: Bundle) -> None:
    e = b["entries"]
    e[3]["envelope"], e[4]["envelope"] = e[4]["envelope"], e[3]["envelope"]


def _renumbered_drop(b: Bundle) -> None:
    del b["entries"][4]
    for i, e in enumerate(b["entries"]):
        e["index"] = i
    b["entries"].append(dict(b["entries"][-1], index=len(b["entries"])))


TAMPER: dict[str, tuple[Callable[[Bundle], None], str, str]] = {
    "flipped envelope byte": (_envelope_byte, "envelope signatures", "entry 3"),
    "edited record": (_record_field, "envelope signatures", "does not verify"),
    "flipped checkpoint byte": (_checkpoint_byte, "checkpoint signatures", "checkpoint 1"),
    "flipped inclusion proof": (_inclusion_proof, "inclusion proofs", "entry 2"),
    "flipped consistency proof": (_consistency_proof, "consistency proofs", "->"),
    "dropped entry": (_dropped, "entry sequence", "dropped or reordered"),
    "reordered entries": (_reordered, "checkpoint roots", "forked or rewritten"),
    "dropped and renumbered": (_renumbered_drop, "checkpoint roots", "forked or rewritten"),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_tampering_is_caught_and_the_failing_step_named(
    honest: tuple[bytes, NodeKey, str], case: str
) -> None:
    tamper, step, detail = TAMPER[case]
    bundle = _load(honest[0])
    tamper(bundle)
    report = audit(_dump(bundle), case)
    assert not report.ok
    failed = report.failure
    assert failed is not None and failed.name == step, report.render()
    assert detail in failed.detail
    assert f"[FAIL] {step}" in report.render()


def _log(store: Store, key: NodeKey) -> NodeLog:
    return NodeLog(store, key, checkpoint_every=1000)


def test_a_record_signed_by_another_key_is_named() -> None:
    key, intruder = NodeKey.generate(), NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, key, candidates=1)
        bundle = _load(tlog.export().to_bytes())
    entry = bundle["entries"][2]
    env = Envelope.from_bytes(base64.b64decode(entry["envelope"]))
    forged = sign_statement(json.loads(env.payload), intruder)
    entry["envelope"] = base64.b64encode(forged.to_bytes()).decode()
    report = audit(_dump(bundle), "intruder")
    assert report.failure is not None and report.failure.name == "envelope signatures"
    assert intruder.public.fingerprint in report.failure.detail
    assert "not by the node key" in report.failure.detail


def test_a_record_replayed_from_another_campaign_is_named() -> None:
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, cid = run_logged_campaign(store, key, name="a", candidates=1)
        other = _load(tlog.export().to_bytes())
    # The same key's record of campaign "a", appended (and properly signed) into a fresh
    # log that only started campaign "b": every signature and proof is good.
    statements = [
        json.loads(Envelope.from_bytes(base64.b64decode(e["envelope"])).payload)
        for e in other["entries"]
    ]
    record = next(s for s in statements if s["predicateType"].endswith("ExperimentRecord/v1"))
    with Store.open("sqlite://") as store:
        tlog = _log(store, key)
        tlog.append(
            EVENT_KIND,
            event_statement(tlog.node_id, "campaign_start", campaign_id="c-0000beef",
                            config_hash=record["predicate"]["config_hash"]),
        )  # fmt: skip
        tlog.append(EXPERIMENT_KIND, record, subject="replayed")
        tlog.checkpoint()
        data = tlog.export().to_bytes()
    report = audit(data, "replay")
    assert report.failure is not None and report.failure.name == "record rules"
    assert cid in report.failure.detail and "replayed" in report.failure.detail


def test_a_record_recorded_twice_is_named() -> None:
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, key, candidates=1)
        entry = next(e for e in tlog.entries(0, tlog.size) if e.kind == EXPERIMENT_KIND)
        again = json.loads(Envelope.from_bytes(entry.envelope).payload)
        tlog.append(EXPERIMENT_KIND, again, subject="dup")
        tlog.checkpoint()
        report = audit(tlog.export().to_bytes(), "dup")
    assert report.failure is not None and report.failure.name == "record rules"
    assert "second time" in report.failure.detail


def test_a_checkpoint_that_forks_the_history_is_named() -> None:
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, key, candidates=1)
        bundle = _load(tlog.export().to_bytes())
        size = tlog.size
        # A second history of the same length, signed by the same key: a split view.
        fork = Tree(tlog.db.leaf_hashes())
        forked = Tree(fork.leaf(i) for i in range(size - 1))
        forked.append(leaf_hash(b"another last entry"))
        note = Checkpoint(tlog.origin, size, forked.root()).sign(tlog.origin, key)
    bundle["checkpoints"].append(note)
    report = audit(_dump(bundle), "fork")
    assert report.failure is not None
    assert report.failure.name == "checkpoint signatures"
    assert "fork" in report.failure.detail


def test_a_pinned_key_that_differs_is_refused(honest: tuple[bytes, NodeKey, str]) -> None:
    other = NodeKey.generate().public.fingerprint
    with pytest.raises(VerificationError, match="not the trusted"):
        verify_bundle(honest[0], trusted_fingerprint=other)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[: len(d) // 2], "not valid JSON (truncated?)"),
        (lambda d: b"[1, 2, 3]", "not a JSON object"),
        (lambda d: b'{"hello": "world"}', "not an asi-node log bundle"),
        (lambda d: d.replace(b'"version":2', b'"version":7'), "version 7 is not supported"),
        (lambda d: d.replace(b'"entries":', b'"entrees":'), "bundle field"),
        (lambda d: b"\xff\xfe", "not UTF-8"),
    ],
    ids=["truncated", "array", "foreign", "version", "field", "binary"],
)
def test_bad_input_gives_a_clear_step_one_failure(
    honest: tuple[bytes, NodeKey, str], mangle: Callable[[bytes], bytes], message: str
) -> None:
    report = audit(mangle(honest[0]), "bad")
    assert report.failure is not None and report.failure.number == 1
    assert message in report.failure.detail


def test_a_record_of_an_unknown_version_is_named() -> None:
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, key, candidates=1)
        entry = next(e for e in tlog.entries(0, tlog.size) if e.kind == EXPERIMENT_KIND)
        future = json.loads(Envelope.from_bytes(entry.envelope).payload)
        version = max(RECORD_VERSIONS) + 1
        future["predicate"] |= {"record_version": version, "experiment_id": "exp-future"}
        tlog.append(EXPERIMENT_KIND, future, subject="future")
        tlog.checkpoint()
        report = audit(tlog.export().to_bytes(), "future")
    assert report.failure is not None and report.failure.name == "record schema"
    assert f"of version {version}" in report.failure.detail and "upgrade" in report.failure.detail


def test_a_rewritten_history_that_drops_its_old_checkpoints_fails_a_seen_checkpoint() -> None:
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, key, candidates=1)
        seen = tlog.checkpoint().note
        honest = _load(tlog.export().to_bytes())
    # The operator rewrites entry 2 and re-signs: a bundle that holds only new checkpoints.
    with Store.open("sqlite://") as store:
        forged = NodeLog(store, key, checkpoint_every=1000)
        for pos, entry in enumerate(honest["entries"]):
            stmt = json.loads(Envelope.from_bytes(base64.b64decode(entry["envelope"])).payload)
            if pos == 2:
                stmt["predicate"]["metrics"]["mean_acc"] = 0.99
            forged.append("record", stmt)
        forged.checkpoint()
        data = forged.export().to_bytes()
    assert audit(data, "forged alone").ok  # internally consistent on its own
    report = audit(data, "forged", seen_checkpoints=[seen])
    assert report.failure is not None and report.failure.name == "checkpoint roots"
    assert "forked or rewritten" in report.failure.detail
    assert audit(_dump(honest), "honest", seen_checkpoints=[seen]).ok


def test_a_bundle_older_than_a_seen_checkpoint_is_named() -> None:
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, key, candidates=1)
        old = tlog.export().to_bytes()
        tlog.append(EVENT_KIND, event_statement(tlog.node_id, NodeEventKind.NODE_KEY_CREATED))
        newer = tlog.checkpoint().note
    report = audit(old, "old", seen_checkpoints=[newer])
    assert report.failure is not None and report.failure.name == "checkpoint signatures"
    assert "stale or truncated" in report.failure.detail
