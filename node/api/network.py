"""HTTP routes of the network view: the replicated leaderboard and one record's
provenance and replications (`asi-node network leaderboard|show`)."""

from __future__ import annotations

from fastapi import APIRouter

from node.network import leaderboard
from node.network.leaderboard import Discovery
from node.store import Store


def network_router(store: Store, attested: bool = False) -> APIRouter:
    """The routes over `store`; `attested`: this node runs under a TEE provider (its own
    replications count where a campaign counts only attested ones)."""
    router = APIRouter(prefix="/network", tags=["network"])

    @router.get("/leaderboard")
    def board(campaign: str | None = None) -> list[Discovery]:
        """The replicated discoveries (of one campaign, by id or name), best first."""
        camps = [store.get_campaign(campaign)] if campaign else store.list_campaigns()
        return leaderboard.ranked(store, camps, attested)

    @router.get("/records/{record}")
    def record(record: str) -> Discovery:
        """A record (an experiment id or a leaf hash) with its provenance and replications."""
        return leaderboard.find(store, record, attested)

    return router
