"""The record rules' replay of governance directives: who holds a campaign, and when.

Statements are built here as a node writes them (the envelope checks come earlier in the
audit and are tested with real logs in tests/governance/test_directive_audit.py).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from attestation.errors import VerificationError
from attestation.records import RecordRules, check_records
from attestation.schema import (
    DIRECTIVE_PREDICATE,
    EVENT_PREDICATE,
    EXPERIMENT_PREDICATE,
    STATEMENT_TYPE,
    SchemaError,
    parse_statement,
)

NODE = "sha256:" + "ab" * 32
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CID = "c-1"
CODE = "22" * 32
DIGEST = "sha256:" + "33" * 32


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def _statement(digest: str, predicate_type: str, pred: dict[str, Any]) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "s", "digest": {"sha256": digest}}],
        "predicateType": predicate_type,
        "predicate": pred,
    }


def start(cid: str = CID) -> dict[str, Any]:
    pred = {
        "node_id": NODE,
        "event": "campaign_start",
        "at": at(0),
        "campaign_id": cid,
        "config_hash": "h",
    }
    return _statement("00", EVENT_PREDICATE, pred)


def directive(
    kind: str, epoch: int, minutes: float, source: str = "evm", cid: str = CID, **extra: Any
) -> dict[str, Any]:
    pred = {
        "node_id": NODE,
        "source": source,
        "campaign_id": cid,
        "epoch": epoch,
        "kind": kind,
        "ref": f"0x{epoch}",
        "height": None,
        "config_hash": None,
        "applied_at": at(minutes),
        **extra,
    }
    return _statement("11", DIRECTIVE_PREDICATE, pred)


def experiment(n: int, minutes: float | None, cid: str = CID, version: int = 2) -> dict[str, Any]:
    pred: dict[str, Any] = {
        "record_version": version,
        "node_id": NODE,
        "campaign_id": cid,
        "config_hash": "h",
        "experiment_id": f"exp-{cid}-{n}",
        "seq": n,
        "role": "candidate",
        "candidate": {"id": f"cand-{n}", "name": f"m{n}", "origin": "offline"},
        "parent_ids": [],
        "code_digest": "sha256:" + CODE,
        "motivation": "",
        "screening": None,
        "training": None,
        "train_config_digest": DIGEST,
        "seeds": {"train": 0, "heldout": "secret"},
        "task_spec_digest": DIGEST,
        "metrics": {"mean_acc": 0.5},
        "fitness": None,
        "timings": None,
        "environment": {
            "python": "3.11",
            "implementation": "cpython",
            "packages": {},
            "device": {},
        },
        "researcher": {"mode": "offline", "models": [], "llm": None},
        "status": "done",
        "failure_class": None,
        "attempts": 1,
        "finished_at": at(60),
    }
    if version >= 2:
        pred["started_at"] = at(minutes) if minutes is not None else None
    return _statement(CODE, EXPERIMENT_PREDICATE, pred)


def typed(stmt: dict[str, Any]) -> Any:
    return parse_statement(json.dumps(stmt).encode())


def check(*stmts: dict[str, Any]) -> Any:
    return check_records([(i, typed(s)) for i, s in enumerate(stmts)], NODE)


def held(*stmts: dict[str, Any]) -> str:
    with pytest.raises(VerificationError) as exc:
        check(*stmts)
    return exc.value.detail


def test_starts_between_a_pause_and_its_resume_are_caught_and_the_edges_are_exact() -> None:
    log = [start(), directive("pause", 1, 10), directive("resume", 2, 20)]
    summary = check(*log, experiment(1, 5), experiment(2, 20), experiment(3, 30))
    assert summary.directives == 2 and summary.starts_checked == 3
    detail = held(*log, experiment(4, 10))  # at the very moment the pause applied
    assert "exp-c-1-4 (#4)" in detail and at(10) in detail and "evm epoch 1 pause (0x1)" in detail
    assert "log entry 1" in detail
    # Recorded after the resume (records are appended at finish), started before it.
    assert "exp-c-1-5" in held(*log, experiment(5, 19.9))


def test_every_source_holds_its_own_pause_and_pause_all_applies_to_every_campaign() -> None:
    log = [
        start(),
        start("c-2"),
        directive("pause", 1, 10, source="guardian", cid="*"),
        directive("resume", 5, 15, source="evm"),  # another source cannot lift it
    ]
    assert "guardian epoch 1 pause" in held(*log, experiment(1, 16))
    assert "exp-c-2-1" in held(*log, experiment(1, 16, cid="c-2"))
    lifted = [*log, directive("resume", 2, 20, source="guardian", cid="*")]
    assert check(*lifted, experiment(1, 21), experiment(1, 21, cid="c-2")).starts_checked == 2


def test_a_stop_is_final_and_outranks_a_pause() -> None:
    log = [start(), directive("pause", 1, 5, source="sns"), directive("stop", 1, 10)]
    log.append(directive("resume", 2, 20))  # a forged resume after the stop changes nothing
    log.append(directive("resume", 2, 21, source="sns"))
    detail = held(*log, experiment(1, 30))
    assert "stopped by evm epoch 1 stop" in detail


def test_a_fork_that_pauses_its_parent_holds_the_parent_and_not_the_child() -> None:
    fork = {"parent": CID, "child": "c-9", "position": 4, "pause_parent": True}
    log = [start(), start("c-9"), directive("fork", 1, 10, cid="c-9", fork=fork)]
    assert "paused by evm epoch 1 fork" in held(*log, experiment(1, 11))
    assert check(*log, experiment(2, 11, cid="c-9")).starts_checked == 1


def test_old_records_are_not_checked_and_new_ones_must_say_when_they_started() -> None:
    log = [start(), directive("pause", 1, 10)]
    assert check(*log, experiment(1, None, version=1)).starts_checked == 0
    assert check(*log, experiment(2, None)).starts_checked == 0  # never started (null)
    bad = experiment(3, 12)
    del bad["predicate"]["started_at"]
    with pytest.raises(SchemaError, match="must carry started_at"):
        typed(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"applied_at": "2025-06-01T12:00:00"}, "predicate.applied_at: Input should have timezone"),
        ({"applied_at": "yesterday"}, "predicate.applied_at: Input should be a valid datetime"),
        ({"kind": "dissolve"}, "predicate.kind: Input should be 'pause', 'resume', 'stop' or"),
        ({"epoch": 0}, "predicate.epoch: Input should be greater than or equal to 1"),
        ({"epoch": "1"}, "predicate.epoch: Input should be a valid integer"),
        ({"source": ""}, "predicate.source: String should have at least 1 character"),
        ({"colour": "red"}, "predicate.colour: not a field of this record"),
    ],
)
def test_a_malformed_directive_entry_fails_the_schema_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    bad = directive("pause", 1, 10)
    bad["predicate"] |= change
    with pytest.raises(SchemaError) as exc:
        typed(bad)
    assert message in str(exc.value)


def test_an_entry_naming_another_node_breaks_the_rules() -> None:
    bad = directive("pause", 1, 10)
    bad["predicate"]["node_id"] = "sha256:" + "cd" * 32
    assert "not the signer" in held(start(), bad)


def test_a_directive_logged_twice_is_a_replay() -> None:
    detail = held(start(), directive("pause", 1, 10), directive("pause", 1, 12))
    assert "again (first at entry 1)" in detail


def test_rules_resumed_from_a_state_refuse_a_replay_of_a_kept_experiment() -> None:
    # The kept digests are consulted, not copied: a state goes on from them as they are
    # and holds those seen since apart.
    first = RecordRules(NODE)
    for i, stmt in enumerate([start(), experiment(1, 1), experiment(2, 2)]):
        first.add(i, typed(stmt))
    first.finish()
    kept = first.state(3)
    assert kept.seen == frozenset() and len(kept.added) == 2
    # As read back from the state directory: every digest in `seen`.
    loaded = dataclasses.replace(kept, seen=kept.all_seen(), added=frozenset())
    second = RecordRules(NODE, loaded)
    second.add(3, typed(experiment(3, 3)))
    second.finish()
    after = second.state(4)
    assert after.seen is loaded.seen and len(after.added) == 1
    assert len(after.all_seen()) == 3
    third = RecordRules(NODE, after)
    with pytest.raises(VerificationError, match="'exp-c-1-2' of c-1 a second time"):
        third.add(4, typed(experiment(2, 4)))
