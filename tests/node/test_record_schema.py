"""The log's records against their schema: what the node writes validates and audits; a
record edited by hand fails at the named step, naming its field; the published JSON
Schema, checked by an independent validator (jsonschema-rs, in Rust), accepts the records
of a real demo export made before the schema existed, and rejects the edited ones; and
config hashes written before RFC 8785 became the one canonical JSON still verify."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from logfix import run_logged_campaign

from attestation.audit import audit
from attestation.bundle import parse_bundle
from attestation.canonical import HashRule, hash_rule, json_sha256
from attestation.dsse import Envelope
from attestation.keys import NodeKey
from attestation.schema import SCHEMA_ID, json_schema
from node.campaign.config import CampaignConfig
from node.store import Store
from node.tlog.log import NodeLog

DATA = Path(__file__).parent / "data"
# Exported by `asi-node demo` and `asi-node log export` before the schema module existed.
OLD_BUNDLE = DATA / "demo-bundle-2026-12.json"
OLD_CONFIG = DATA / "demo-config-2026-12.json"  # that demo campaign's stored config


def _statements(bundle: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(Envelope.from_bytes(base64.b64decode(e.envelope)).payload)
        for e in parse_bundle(bundle).entries
    ]


@pytest.fixture(scope="module")
def written() -> Iterator[tuple[bytes, NodeKey, list[dict[str, Any]]]]:
    """A campaign's log as the node writes it: its bundle, key and statements."""
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, key, candidates=2)
        data = tlog.export().to_bytes()
        yield data, key, _statements(data)


def _rewritten(key: NodeKey, statements: list[dict[str, Any]]) -> bytes:
    """The same statements signed again by the node's key into a fresh log: what a node
    that wrote a bad record would publish (every signature and proof valid)."""
    with Store.open("sqlite://") as store:
        tlog = NodeLog(store, key, checkpoint_every=1000)
        for stmt in statements:
            kind = "experiment" if stmt["predicateType"].endswith("Record/v1") else "event"
            tlog.append(kind, stmt)
        tlog.checkpoint()
        return tlog.export().to_bytes()


def _edit(
    statements: list[dict[str, Any]], change: Callable[[dict[str, Any]], None]
) -> list[dict[str, Any]]:
    edited = json.loads(json.dumps(statements))
    record = next(s for s in edited if s["predicateType"].endswith("ExperimentRecord/v1"))
    change(record["predicate"])
    return edited


def _drop_seeds(pred: dict[str, Any]) -> None:
    del pred["seeds"]


def _seq_as_text(pred: dict[str, Any]) -> None:
    pred["seq"] = str(pred["seq"])


def _metric_as_text(pred: dict[str, Any]) -> None:
    pred["metrics"]["mean_acc"] = "0.9"


def _unknown_status(pred: dict[str, Any]) -> None:
    pred["status"] = "excellent"


EDITS = [
    (_drop_seeds, "predicate.seeds: missing"),
    (_seq_as_text, "predicate.seq: Input should be a valid integer (got '"),
    (_metric_as_text, "predicate.metrics.mean_acc: Input should be a valid number"),
    (_unknown_status, "predicate.status: Input should be 'queued', 'running', 'done',"),
]


def test_a_peer_candidate_is_a_version_4_record(
    written: tuple[bytes, NodeKey, list[dict[str, Any]]],
) -> None:
    _, key, statements = written

    def peer(pred: dict[str, Any]) -> None:
        assert pred.pop("peer_parents") == []  # written at version 6
        assert pred.pop("replicates") is None  # as version 4 wrote it
        pred["record_version"] = 4
        pred["candidate"]["origin"] = "peer"

    report = audit(_rewritten(key, _edit(statements, peer)), "peer")
    assert report.ok, report.render()

    def peer_in_version_3(pred: dict[str, Any]) -> None:
        peer(pred)
        pred["record_version"] = 3

    # A rule across fields (the published JSON Schema cannot say it): the audit's own.
    report = audit(_rewritten(key, _edit(statements, peer_in_version_3)), "peer in v3")
    assert report.failure is not None and report.failure.name == "record schema"
    assert "a version 3 record cannot name a peer candidate" in report.failure.detail


def test_a_record_the_node_wrote_validates_and_audits(
    written: tuple[bytes, NodeKey, list[dict[str, Any]]],
) -> None:
    data, key, statements = written
    report = audit(data, "written", trusted_fingerprint=key.public.fingerprint)
    assert report.ok, report.render()
    schema_step = next(s for s in report.steps if s.name == "record schema")
    assert schema_step.number == 9 and f"{len(statements)} statements" in schema_step.detail
    assert parse_bundle(data).schema_version == 1


@pytest.mark.parametrize(("change", "message"), EDITS, ids=lambda v: getattr(v, "__name__", ""))
def test_a_hand_edited_record_fails_the_schema_step_naming_its_field(
    written: tuple[bytes, NodeKey, list[dict[str, Any]]],
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    _, key, statements = written
    report = audit(_rewritten(key, _edit(statements, change)), "edited")
    failure = report.failure
    assert failure is not None and (failure.number, failure.name) == (9, "record schema")
    assert message in failure.detail
    assert "result: FAIL at step 9" in report.render()


def _schema_from_the_cli() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    schema: dict[str, Any] = json.loads(out)
    return schema


def test_the_published_schema_accepts_a_real_demo_export_and_rejects_edited_records(
    written: tuple[bytes, NodeKey, list[dict[str, Any]]],
) -> None:
    schema = _schema_from_the_cli()
    assert schema == json.loads(json.dumps(json_schema()))
    assert schema["$id"] == SCHEMA_ID
    validator = jsonschema_rs.validator_for(schema)
    demo = _statements(OLD_BUNDLE.read_bytes())
    kinds = {s["predicateType"].rsplit("/", 2)[-2] for s in demo}
    assert kinds == {"ExperimentRecord", "NodeEvent"} and len(demo) == 12
    for stmt in [*demo, *written[2]]:
        errors = [e.message for e in validator.iter_errors(stmt)]
        assert errors == [], (stmt["predicateType"], errors)
    for change, _ in EDITS:
        edited = next(
            s for s in _edit(demo, change) if s["predicateType"].endswith("ExperimentRecord/v1")
        )
        assert not validator.is_valid(edited), change.__name__


def test_a_bundle_written_before_the_schema_still_audits() -> None:
    report = audit(OLD_BUNDLE.read_bytes(), "old demo")
    assert report.ok, report.render()
    assert "9. [ok  ] record schema: 12 statements of schema version 1" in report.render()
    assert parse_bundle(OLD_BUNDLE.read_bytes()).version == 1


def test_config_hashes_written_before_rfc_8785_still_verify_and_new_ones_use_it() -> None:
    old_text = OLD_CONFIG.read_text().strip()
    config = json.loads(old_text)
    starts = [
        s["predicate"]
        for s in _statements(OLD_BUNDLE.read_bytes())
        if s["predicate"].get("event") == "campaign_start"
    ]
    named = bytes.fromhex(starts[0]["config_hash"].removeprefix("sha256:"))
    assert json_sha256(config, HashRule.SORTED_JSON) == named  # the rule it was written under
    assert hash_rule(config, named) is not None  # (ASCII, plain numbers: both rules agree)
    # Where the rules differ (ECMAScript number text, no ASCII escapes), a hash named
    # under the old rule still verifies, and says which rule it was.
    cfg = CampaignConfig.model_validate(config | {"promote_margin": 1e-05})
    data = cfg.model_dump(mode="json")
    legacy = json_sha256(data, HashRule.SORTED_JSON)
    assert legacy != json_sha256(data)
    assert hash_rule(data, legacy) is HashRule.SORTED_JSON
    # Written now: RFC 8785, by the store and by the config model alike.
    with Store.open("sqlite://") as store:
        camp = store.create_campaign("new", cfg.model_dump(mode="json"))
    current = bytes.fromhex(camp.config_hash.removeprefix("sha256:"))
    assert camp.config_hash == cfg.config_hash()
    assert hash_rule(cfg.model_dump(mode="json"), current) is HashRule.RFC8785
    assert hash_rule({"other": 1}, current) is None
