"""The network leaderboard: the discoveries of each campaign this node runs (its own
scored candidates and the peers' records it imported) with who replicated what. A
discovery is replicated when a node with another key re-ran it on the campaign's
replication seeds within the campaign's spread: a peer's record re-run here (a
`replication` event), or a record of this node re-run by a peer whose signed records say
so (`replicated_by` events, their leaf hashes checked against this node's log when the
peer was synced). Only replicated discoveries are ranked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from attestation.network import Outcome
from attestation.schema import CandidateOrigin, ExperimentStatus
from node.campaign.config import CampaignConfig
from node.errors import NotFoundError
from node.network.provenance import CLAIM_EVENT, IMPORT_EVENT, REPLICATION_EVENT
from node.network.replication import outcome_of
from node.store import CampaignRow, Store

THIS_NODE = "this node"  # who discovered or replicated, when this node's records lack an id


class Replication(BaseModel):
    """One node's re-run of a discovery."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    peer: str | None  # the URL it was synced from; None: this node
    outcome: Outcome
    fitness: float | None  # its mean over its replication seeds
    experiment_ids: list[str]
    attested: bool = False  # the node's log carries verified TEE evidence


class Discovery(BaseModel):
    """A candidate's record with its replications."""

    model_config = ConfigDict(frozen=True)

    campaign_id: str
    candidate_id: str  # here
    name: str
    discovered_by: str  # the peer's URL, or THIS_NODE
    experiment_id: str  # the record, in the discoverer's log
    leaf_hash: str | None  # its entry's leaf hash (known here for peers' records and claims)
    fitness: float | None  # what the record states
    replications: list[Replication]
    replicated_by: list[str]  # node ids whose re-runs reproduced it

    @property
    def replicated(self) -> bool:
        return bool(self.replicated_by)


def discoveries(
    store: Store, campaign: CampaignRow, attested_here: bool = False
) -> list[Discovery]:
    """Every discovery of the campaign, replicated or not; this node's own replications
    count as attested with `attested_here` (it runs under a TEE provider)."""
    cid = campaign.id
    config = CampaignConfig.model_validate(campaign.config)
    attested = config.replication is not None and config.replication.attested
    cands = {c.id: c for c in store.list_candidates(cid)}
    exps = store.list_experiments(cid)
    imports = {
        e.payload["candidate_id"]: e.payload for e in store.list_events(cid, kind=IMPORT_EVENT)
    }
    judged = {
        e.payload["candidate_id"]: e.payload for e in store.list_events(cid, kind=REPLICATION_EVENT)
    }
    claims = [e.payload for e in store.list_events(cid, kind=CLAIM_EVENT)]
    out = []
    for cand in cands.values():
        if cand.origin is CandidateOrigin.PEER and cand.id in imports:
            found = imports[cand.id]
            reps = list(_claimed(_third(claims, found), config, found["peer_fitness"]))
            if cand.id in judged:
                j = judged[cand.id]
                reps.append(
                    Replication(
                        node_id=j["node_id"] or THIS_NODE,
                        peer=None,
                        outcome=Outcome(j["outcome"]),
                        fitness=j["fitness"],
                        experiment_ids=j["experiment_ids"],
                        attested=attested_here,
                    )
                )
            out.append(
                _row(
                    cid,
                    cand.id,
                    cand.name,
                    found["peer"],
                    found["peer_experiment_id"],
                    found["leaf_hash"],
                    found["peer_fitness"],
                    reps,
                    attested,
                )
            )
            continue
        if cand.origin in (CandidateOrigin.BASELINE, CandidateOrigin.PEER):
            continue
        first = next((e for e in exps if e.candidate_id == cand.id and e.seed == config.seed), None)
        if first is None or first.status is not ExperimentStatus.DONE or first.fitness is None:
            continue
        ids = {e.id for e in exps if e.candidate_id == cand.id}
        mine = [c for c in claims if c["experiment_id"] in ids]
        reps = list(_claimed(mine, config, first.fitness))
        leaf = next((c["leaf_hash"] for c in mine if c["experiment_id"] == first.id), None)
        row = _row(
            cid, cand.id, cand.name, THIS_NODE, first.id, leaf, first.fitness, reps, attested
        )
        out.append(row)
    return out


def _row(
    cid: str,
    candidate_id: str,
    name: str,
    by: str,
    experiment_id: str,
    leaf: str | None,
    fitness: float | None,
    reps: list[Replication],
    attested: bool,
) -> Discovery:
    """A discovery's row; with `attested` (the campaign's rule), only attested nodes'
    replications count."""
    return Discovery(
        campaign_id=cid,
        candidate_id=candidate_id,
        name=name,
        discovered_by=by,
        experiment_id=experiment_id,
        leaf_hash=leaf,
        fitness=fitness,
        replications=reps,
        replicated_by=sorted(
            {
                r.node_id
                for r in reps
                if r.outcome is Outcome.REPLICATED and (r.attested or not attested)
            }
        ),
    )


def _third(claims: list[dict[str, Any]], found: dict[str, Any]) -> list[dict[str, Any]]:
    """The claims on a peer's record imported here (`found`) made by a third node: by
    another key than the discoverer's, naming the record's log and leaf hash."""
    return [
        c
        for c in claims
        if c["experiment_id"] is None
        and c.get("record_origin") == found["log_origin"]
        and c["leaf_hash"] == found["leaf_hash"]
        and c["key_fingerprint"] != found["key_fingerprint"]
    ]


def _claimed(
    claims: list[dict[str, Any]], config: CampaignConfig, stated: float | None
) -> Iterable[Replication]:
    """Other nodes' re-runs of one record, one per replicating node: judged here from their
    signed records, against the fitness the record states, once they cover the
    campaign's replication seeds."""
    rule = config.replication
    by_node: dict[str, list[dict[str, Any]]] = {}
    for claim in claims:
        by_node.setdefault(str(claim["node_id"]), []).append(claim)
    for node_id, runs in by_node.items():
        seeds = {int(str(r["seed"])) for r in runs}
        outcome, mean = Outcome.PENDING, None
        if rule is not None and set(rule.seeds) <= seeds:
            last = {int(str(r["seed"])): r for r in runs if int(str(r["seed"])) in rule.seeds}
            pairs = [
                (ExperimentStatus(str(r["status"])), _float(r["fitness"])) for r in last.values()
            ]
            outcome, mean = outcome_of(pairs, stated, rule.spread)
        yield Replication(
            node_id=node_id,
            peer=str(runs[0]["peer"]),
            outcome=outcome,
            fitness=mean,
            experiment_ids=[str(r["peer_experiment_id"]) for r in runs],
            attested=all(r.get("attested", False) for r in runs),
        )


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def ranked(
    store: Store, campaigns: Iterable[CampaignRow], attested_here: bool = False
) -> list[Discovery]:
    """The replicated discoveries of `campaigns`, best stated fitness first."""
    found = [d for camp in campaigns for d in discoveries(store, camp, attested_here)]
    rows = [d for d in found if d.replicated]
    return sorted(rows, key=lambda d: d.fitness if d.fitness is not None else float("-inf"),
                  reverse=True)  # fmt: skip


def find(store: Store, record: str, attested_here: bool = False) -> Discovery:
    """The discovery whose record is `record`: an experiment id (this node's or a peer's)
    or an entry's leaf hash; NotFoundError if none is known here."""
    for camp in store.list_campaigns():
        for d in discoveries(store, camp, attested_here):
            own = {d.experiment_id, d.leaf_hash}
            ran = {i for r in d.replications for i in r.experiment_ids}
            if record in own or record in ran:
                return d
    raise NotFoundError(
        f"no discovery with record {record}: give an experiment id or a leaf hash that "
        "`asi-node network leaderboard` or a sync has shown"
    )
