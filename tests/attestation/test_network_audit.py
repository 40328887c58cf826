"""The network's replicated leaderboard recomputed from audited records
(`attestation.network`): replications judged on the campaign's seeds and spread, misquoted
or self-made claims refused, unattested replicators left out when asked, served
leaderboards compared, parents checked against the named log.

Records are built here as nodes write them, already typed (the audit of each log, which
comes first, is tested with real logs elsewhere: tests/node/test_network_three_nodes.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from test_record_rules import experiment, typed

from attestation.canonical import json_sha256
from attestation.network import AuditedLog, Outcome, Rule, compare_served, recompute
from attestation.schema import ExperimentStatus

CONFIG_HASH = "h"
RULE = Rule(seeds=(101, 102), spread=0.02)
A, B, C = (f"asi-node.log/{c * 32}" for c in "abc")
NODE_ID = {A: "sha256:" + "a1" * 32, B: "sha256:" + "b1" * 32, C: "sha256:" + "c1" * 32}


def _leaf(origin: str, index: int) -> bytes:
    return hashlib.sha256(f"{origin}/{index}".encode()).digest()


def record(
    origin: str,
    n: int,
    fitness: float | None,
    seed: int = 0,
    origin_of_candidate: str = "offline",
    replicates: dict[str, Any] | None = None,
    peer_parents: list[dict[str, Any]] | None = None,
    status: str = "done",
) -> dict[str, Any]:
    stmt = experiment(n + 1, 1, version=6)
    pred = stmt["predicate"]
    pred |= {
        "node_id": NODE_ID[origin],
        "experiment_id": f"exp-{origin[-1]}{n}",
        "config_hash": CONFIG_HASH,
        "fitness": {"version": "v", "value": fitness} if fitness is not None else None,
        "seeds": {"train": seed, "heldout": "secret"},
        "status": status,
        "verifies": None,
        "replicates": replicates,
        "peer_parents": peer_parents or [],
    }
    pred["candidate"]["origin"] = origin_of_candidate
    if peer_parents:
        pred["parent_ids"] = [p["candidate_id"] for p in peer_parents]
    return stmt


def link(origin: str, index: int, experiment_id: str, fitness: float | None) -> dict[str, Any]:
    return {
        "log_origin": origin,
        "leaf_index": index,
        "leaf_hash": _leaf(origin, index).hex(),
        "campaign_id": "c-1",
        "experiment_id": experiment_id,
        "fitness": fitness,
    }


def audited(origin: str, stmts: list[dict[str, Any]], attested: bool = True) -> AuditedLog:
    return AuditedLog(
        f"http://{origin[-1]}",
        origin,
        NODE_ID[origin],
        attested,
        [(i, typed(s)) for i, s in enumerate(stmts)],
        [_leaf(origin, i) for i in range(len(stmts))],
    )


def reruns(origin: str, fitnesses: list[float], stated: float = 0.1) -> list[dict[str, Any]]:
    """A peer's import of A's entry 0 run on the replication seeds."""
    return [
        record(origin, i, f, seed, "peer", link(A, 0, "exp-a0", stated))
        for i, (seed, f) in enumerate(zip(RULE.seeds, fitnesses, strict=False))
    ]


def test_a_replication_within_the_spread_ranks_the_discovery() -> None:
    a = audited(A, [record(A, 0, 0.1), record(A, 1, 0.05)])
    b = audited(B, reruns(B, [0.11, 0.1]))
    found = recompute([a, b], {CONFIG_HASH: RULE})
    assert found.problems == [] and found.notes == []
    [row] = found.ranked()
    assert row.record.experiment_id == "exp-a0" and row.replicated_by == [NODE_ID[B]]
    [rep] = row.replications
    assert rep.outcome is Outcome.REPLICATED and rep.fitness == pytest.approx(0.105)
    assert rep.experiment_ids == ["exp-b0", "exp-b1"]
    assert len(found.discoveries) == 2  # exp-a1 found, never replicated


@pytest.mark.parametrize(
    ("fitnesses", "outcome"),
    [([0.2, 0.2], Outcome.FAILED), ([0.1], Outcome.PENDING)],
)
def test_outside_the_spread_or_short_of_seeds_nothing_is_ranked(
    fitnesses: list[float], outcome: Outcome
) -> None:
    found = recompute([audited(A, [record(A, 0, 0.1)]), audited(B, reruns(B, fitnesses))],
                      {CONFIG_HASH: RULE})  # fmt: skip
    assert found.ranked() == []
    assert [r.outcome for r in found.discoveries[0].replications] == [outcome]


def test_a_failed_rerun_is_a_failed_replication() -> None:
    runs = reruns(B, [0.1, 0.1])
    runs[1]["predicate"] |= {"status": "failed", "fitness": None}
    found = recompute([audited(A, [record(A, 0, 0.1)]), audited(B, runs)], {CONFIG_HASH: RULE})
    [rep] = found.discoveries[0].replications
    assert rep.outcome is Outcome.FAILED and rep.fitness is None


def test_a_misquoted_or_self_made_claim_fails_the_network_audit() -> None:
    a = audited(A, [record(A, 0, 0.1), *reruns(A, [0.1, 0.1])[:1]])
    b = audited(B, reruns(B, [0.3, 0.3], stated=0.3))  # states 0.3: A's record says 0.1
    found = recompute([a, b], {CONFIG_HASH: RULE})
    assert any("claims to replicate an entry of its own log" in p for p in found.problems)
    assert any("stating fitness 0.3; the entry it names is exp-a0, stating 0.1" in p
               for p in found.problems)  # fmt: skip
    assert found.ranked() == []


def test_unattested_replicators_count_only_when_attestation_is_not_required() -> None:
    logs = [audited(A, [record(A, 0, 0.1)]), audited(B, reruns(B, [0.1, 0.1]), attested=False)]
    assert len(recompute(logs, {CONFIG_HASH: RULE}).ranked()) == 1
    strict = recompute(logs, {CONFIG_HASH: RULE}, require_attested=True)
    assert strict.ranked() == [] and "is not attested" in strict.notes[0]
    # The campaign's rule can ask for it too.
    asks = Rule(RULE.seeds, RULE.spread, attested=True)
    assert recompute(logs, {CONFIG_HASH: asks}).ranked() == []


def test_links_to_logs_not_audited_are_notes_and_a_wrong_parent_a_problem() -> None:
    parent = {**link(A, 0, "exp-a0", None), "candidate_id": "cand-p"}
    del parent["fitness"]
    wrong = {**parent, "experiment_id": "exp-zz"}
    b = audited(B, [record(B, 0, 0.1, peer_parents=[parent]), *reruns(B, [0.1, 0.1])])
    alone = recompute([b], {CONFIG_HASH: RULE})
    assert alone.problems == [] and len(alone.notes) == 3  # a parent, two re-runs
    a = audited(A, [record(A, 0, 0.1)])
    assert recompute([a, b], {CONFIG_HASH: RULE}).problems == []
    bad = audited(B, [record(B, 0, 0.1, peer_parents=[wrong])])
    [problem] = recompute([a, bad], {CONFIG_HASH: RULE}).problems
    assert "names parent exp-zz at entry 0 of http://a, which does not hold it" in problem


def test_a_served_leaderboard_is_held_to_the_records() -> None:
    logs = [audited(A, [record(A, 0, 0.1)]), audited(B, reruns(B, [0.1, 0.1]))]
    found = recompute(logs, {CONFIG_HASH: RULE})
    audited_ids = {NODE_ID[A], NODE_ID[B]}
    honest = [{"experiment_id": "exp-a0", "replicated_by": [NODE_ID[B]]}]
    assert compare_served(found, audited_ids, "http://b", honest) == ([], [])
    inflated = [{"experiment_id": "exp-a0", "replicated_by": [NODE_ID[A], NODE_ID[C]]}]
    problems, notes = compare_served(found, audited_ids, "http://b", inflated)
    assert problems == [
        f"http://b's leaderboard ranks exp-a0 replicated by {NODE_ID[A]}, which its audited "
        "log does not show"
    ]
    assert notes and "whose log was not audited here" in notes[0]


def test_a_rule_is_read_only_from_a_config_with_the_records_hash() -> None:
    config = {"task": "mqar", "replication": {"share": 0.5, "seeds": [7, 8], "spread": 0.01}}
    digest = "sha256:" + json_sha256(config).hex()
    assert Rule.of_config(config, digest) == Rule((7, 8), 0.01)
    config["replication"]["attested"] = True
    digest = "sha256:" + json_sha256(config).hex()
    assert Rule.of_config(config, digest) == Rule((7, 8), 0.01, attested=True)
    assert Rule.of_config({"task": "mqar"}, "sha256:" + json_sha256({"task": "mqar"}).hex()) is None
    with pytest.raises(ValueError, match="the config served hashes to sha256:"):
        Rule.of_config(config, "sha256:" + "00" * 32)


def test_runs_are_judged_as_the_node_judges_them() -> None:
    from attestation.network import judge_runs

    done = ExperimentStatus.DONE
    assert judge_runs([(done, 0.1), (done, 0.12)], 0.1, 0.02) == (Outcome.REPLICATED, 0.11)
    assert judge_runs([(done, 0.1)], None, 0.02)[0] is Outcome.FAILED
    assert judge_runs([], 0.1, 0.02) == (Outcome.FAILED, None)
