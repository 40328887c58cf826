"""The node's HTTP API: health, campaigns, leaderboards, experiment detail, Prometheus
metrics, log records with proofs, anchors and the log's audit; governance routes from
`governance.api`; the dashboard at `/` and the API docs, served without a CDN."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from attestation.schema import ExperimentStatus
from governance.api import governance_router
from governance.ballots import GovernorClient
from governance.errors import GovernanceError
from node.api.attestation import attestation_router
from node.api.dashboard import dashboard_router
from node.api.log import log_router
from node.api.metrics import metrics_router
from node.api.models import CampaignDetail, ExperimentDetail, Health
from node.api.network import network_router
from node.api.proofs import proofs_router
from node.campaign import discovery, leaderboard
from node.errors import AsiNodeError, CorruptStoreError, NotFoundError, StoreError
from node.store import CampaignRow, CandidateRow, ExperimentRow, Store
from node.tlog.log import LogView

HEALTH_PROBLEMS = {
    "stale": "no fresh reading from a governance source: every campaign is paused",
    "revoked": (
        "this node may not act on the controller (revoked, or its TEE measurement removed): "
        "every campaign is paused until it is approved again"
    ),
}

# Domain errors mapped to HTTP statuses in one place.
STATUS_OF: dict[type[AsiNodeError], int] = {
    NotFoundError: 404,
    CorruptStoreError: 500,
    StoreError: 503,
}


def create_app(
    store: Store,
    *,
    governor: GovernorClient | None = None,
    operator_token: SecretStr | None = None,
    attestation_evidence: Path | None = None,
    node_status: Callable[[], Mapping[str, Any]] | None = None,
    threads_per_worker: int = 1,
    log_store: Store | None = None,
    cors_origins: Sequence[str] = (),
    isolation_mode: str | None = None,
    attested: bool = False,
) -> FastAPI:
    """The app over one store; the caller owns the store's lifetime. The governance
    routes (`/gov`) relay to `governor` when one is given; with `attestation_evidence` the
    node's TEE evidence bundle is published at /attestation; `node_status` (the daemon's
    governed runs, `GovernedNode.status`) goes into /health; `threads_per_worker` (the
    node's setting) costs CPU experiments in the discovery rate's CPU-hours; the node's
    log is read from `log_store` (its `log_database_url`; default: `store`); browser
    apps served from `cors_origins` may call the API (none by default); `isolation_mode`
    (how the sandbox jails candidates here) is reported in /metrics; `attested` (the node
    runs under a TEE provider) lets its own replications count where a campaign counts
    only attested ones."""
    app = FastAPI(
        title="asi-node",
        version="0.1.0",
        summary="Read-only view of a research node",
        docs_url=None,  # served by dashboard_router from local assets
        redoc_url=None,
    )
    if cors_origins:
        # The operator token travels in the Authorization header, never in a cookie.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    if attestation_evidence is not None:
        app.include_router(attestation_router(attestation_evidence))

    @app.exception_handler(AsiNodeError)
    async def domain_error(_: Request, exc: AsiNodeError) -> JSONResponse:
        status = next((s for t, s in STATUS_OF.items() if isinstance(exc, t)), 400)
        return JSONResponse(
            status_code=status, content={"error": type(exc).__name__, "detail": str(exc)}
        )

    @app.exception_handler(GovernanceError)
    async def governance_error(_: Request, exc: GovernanceError) -> JSONResponse:
        # The /gov routes' own refusals carry a status; a chain that fails under a read
        # (unreachable, wrong answer) is the upstream's fault: 502/503, never a bare 500.
        status = getattr(exc, "status", 502)
        body = {"error": type(exc).__name__, "detail": str(exc)}
        return JSONResponse(status_code=status, content={"detail": body})

    @app.get("/health", response_model=Health, response_model_exclude_none=True)
    def health() -> dict[str, Any]:
        """ "ok", or "degraded" with the problems when the daemon's governance is stale
        (it paused every campaign) or this node is revoked (it stopped them)."""
        body: dict[str, Any] = {"status": "ok", "campaigns": len(store.list_campaigns())}
        live = dict(node_status()) if node_status is not None else {}
        if live:
            body["node"] = live
            problems = [text for key, text in HEALTH_PROBLEMS.items() if live.get(key)]
            if problems:
                body |= {"status": "degraded", "problems": problems}
        return body

    @app.get("/campaigns")
    def campaigns() -> list[CampaignRow]:
        return store.list_campaigns()

    @app.get("/campaigns/{campaign_id}")
    def campaign(campaign_id: str) -> CampaignDetail:
        row = store.get_campaign(campaign_id)
        counts = {s: store.count_experiments(row.id, status=s) for s in ExperimentStatus}
        found = discovery.for_campaign(store, row, threads_per_worker)
        return CampaignDetail(**vars(row), experiments=counts, discovery=found)

    @app.get("/campaigns/{campaign_id}/leaderboard")
    def board(campaign_id: str) -> list[leaderboard.Row]:
        return leaderboard.for_campaign(store, store.get_campaign(campaign_id))

    @app.get("/campaigns/{campaign_id}/experiments")
    def experiments(campaign_id: str) -> list[ExperimentRow]:
        return store.list_experiments(store.get_campaign(campaign_id).id)

    @app.get("/campaigns/{campaign_id}/candidates")
    def candidates(campaign_id: str) -> list[CandidateRow]:
        """The campaign's candidates with their parents (its lineage)."""
        return store.list_candidates(store.get_campaign(campaign_id).id)

    @app.get("/experiments/{experiment_id}")
    def experiment(experiment_id: str) -> ExperimentDetail:
        exp = store.get_experiment(experiment_id)
        cand = store.get_candidate(exp.candidate_id)
        return ExperimentDetail(**vars(exp), code=store.get_code(cand.digest), candidate=cand)

    log_view = LogView(log_store or store)
    app.include_router(log_router(log_view))
    app.include_router(proofs_router(log_view, log_store or store))
    app.include_router(
        metrics_router(
            store,
            threads_per_worker,
            log_store,
            node_status=node_status,
            isolation_mode=isolation_mode,
        )
    )
    from node.governed.records import StoreGovernanceView

    app.include_router(governance_router(StoreGovernanceView(store), governor, operator_token))
    app.include_router(network_router(store, attested))
    app.include_router(dashboard_router(app.title))
    return app
