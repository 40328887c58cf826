"""What a node keeps of peers' discoveries, as campaign events of its store: the names of
those events and the reads of them that the log writer, the replication judge and the
network leaderboard share.

`peer_import`: a peer's record imported as a candidate here (by `node.network.follow`).
`replication`: the outcome of re-running an imported record here (`node.network.replication`).
`replicated_by`: a peer's signed record that re-ran one of this node's own records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from node.store import Store

IMPORT_EVENT = "peer_import"  # a store event per imported candidate: its provenance
REPLICATION_EVENT = "replication"  # a store event per judged replication run here
CLAIM_EVENT = "replicated_by"  # a store event per peer record replicating one of ours


def import_of(store: Store, campaign_id: str, candidate_id: str) -> dict[str, Any] | None:
    """The provenance of a peer candidate of the campaign (None if it came from no peer)."""
    for event in store.list_events(campaign_id, kind=IMPORT_EVENT):
        if event.payload.get("candidate_id") == candidate_id:
            return dict(event.payload)
    return None


def replicates_of(store: Store, campaign_id: str, candidate_id: str) -> dict[str, Any] | None:
    """The `replicates` link of a run of this candidate: the peer's record it re-trains
    (None for a candidate of this node's own)."""
    found = import_of(store, campaign_id, candidate_id)
    if found is None:
        return None
    return {
        "log_origin": found["log_origin"],
        "leaf_index": found["leaf_index"],
        "leaf_hash": found["leaf_hash"],
        "campaign_id": found["peer_campaign_id"],
        "experiment_id": found["peer_experiment_id"],
        "fitness": found["peer_fitness"],
    }


def peer_parents_of(
    store: Store, campaign_id: str, parent_ids: Iterable[str]
) -> list[dict[str, Any]]:
    """The parents among `parent_ids` imported from peers, each with the record it was
    imported from (an empty list when none was)."""
    parents = set(parent_ids)
    out = []
    for event in store.list_events(campaign_id, kind=IMPORT_EVENT):
        found = event.payload
        if found.get("candidate_id") in parents:
            out.append(
                {
                    "candidate_id": found["candidate_id"],
                    "log_origin": found["log_origin"],
                    "leaf_index": found["leaf_index"],
                    "leaf_hash": found["leaf_hash"],
                    "campaign_id": found["peer_campaign_id"],
                    "experiment_id": found["peer_experiment_id"],
                }
            )
    return out
