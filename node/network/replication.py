"""Judging the replication of a peer's record: once every run of an imported candidate on
the campaign's replication seeds is finished and scored here, their mean fitness is
compared with the fitness the peer's record states. Within the campaign's `spread` the
record is replicated by this node; outside it, or with a run that failed, it is a failed
replication and the discovery stays unreplicated. Each outcome is a `replication` event
of the campaign, written once per imported candidate.
"""

from __future__ import annotations

import logging
from typing import Any

from attestation.network import Outcome, judge_runs
from attestation.schema import ExperimentStatus
from node.campaign.config import CampaignConfig
from node.network.provenance import IMPORT_EVENT, REPLICATION_EVENT
from node.store import CampaignRow, ExperimentRow, Store

log = logging.getLogger(__name__)


def outcome_of(
    runs: list[ExperimentRow] | list[tuple[ExperimentStatus, float | None]],
    stated: float | None,
    spread: float,
) -> tuple[Outcome, float | None]:
    """The outcome of finished runs (rows, or each a status and a fitness) against a
    stated fitness, as an auditor of the network judges it (`judge_runs`)."""
    pairs = [(r.status, r.fitness) if isinstance(r, ExperimentRow) else r for r in runs]
    return judge_runs(pairs, stated, spread)


def _finished(exp: ExperimentRow) -> bool:
    """A run whose outcome is known: failed, or done and scored."""
    if exp.status is ExperimentStatus.FAILED:
        return True
    return exp.status is ExperimentStatus.DONE and exp.fitness is not None


def judge(store: Store, campaign: CampaignRow) -> list[dict[str, Any]]:
    """Judge the campaign's imported records whose replication runs have all finished
    and are not judged yet; return the `replication` events written."""
    rule = CampaignConfig.model_validate(campaign.config).replication
    if rule is None:
        return []
    cid = campaign.id
    judged = {e.payload["candidate_id"] for e in store.list_events(cid, kind=REPLICATION_EVENT)}
    exps = store.list_experiments(cid)
    written = []
    for event in store.list_events(cid, kind=IMPORT_EVENT):
        found = event.payload
        if not found.get("replicate") or found["candidate_id"] in judged:
            continue
        seeds = set(found["seeds"])
        runs = [e for e in exps if e.candidate_id == found["candidate_id"] and e.seed in seeds]
        if len(runs) < len(seeds) or not all(_finished(e) for e in runs):
            continue
        outcome, mean = outcome_of(runs, found["peer_fitness"], rule.spread)
        payload = {
            "candidate_id": found["candidate_id"],
            "outcome": outcome,
            "fitness": mean,
            "peer_fitness": found["peer_fitness"],
            "spread": rule.spread,
            "experiment_ids": [e.id for e in runs],
            "seeds": sorted(seeds),
            "node_id": runs[0].recorded_by,  # this node, as its log's records name it
            "peer": found["peer"],
            "key_fingerprint": found["key_fingerprint"],
            "log_origin": found["log_origin"],
            "leaf_index": found["leaf_index"],
            "leaf_hash": found["leaf_hash"],
            "peer_experiment_id": found["peer_experiment_id"],
        }
        store.add_event(cid, REPLICATION_EVENT, payload)
        judged.add(found["candidate_id"])
        written.append(payload)
        log.info(
            "replication judged", extra={"candidate": found["candidate_id"], "outcome": outcome}
        )
    return written
