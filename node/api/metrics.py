"""GET /metrics: the node's state in the Prometheus text format (version 0.0.4).

Gauges read from the store on each scrape, so they survive restarts and need no
instrumentation in the workers: campaigns by status; experiments by campaign and status
with each campaign's best fitness; the transparency log's size and latest checkpoint;
the anchoring outbox by target and status with the largest confirmed tree size (the log
size minus it is what is not anchored yet); governance directives applied and not yet
acknowledged, by source. Discovery, by campaign (node.campaign.discovery): the generated
candidates promoted, the compute the campaign's experiments held in GPU-hours and in
CPU-hours (wall time x the node's threads per worker), and promoted candidates per
compute-hour in the campaign's unit (GPU when any experiment trained on a GPU; absent
until some compute is recorded):

    asi_node_promoted_candidates{campaign, campaign_id}
    asi_node_compute_hours{campaign, campaign_id, unit="gpu"|"cpu"}
    asi_node_promoted_per_compute_hour{campaign, campaign_id, unit}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from node.campaign import discovery
from node.store import CAMPAIGN_STATUSES, DirectiveLedger, LogStore, Store, outbox_stats
from node.store.outbox import OutboxStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Sample = tuple[Mapping[str, str], float]


def metrics_router(
    store: Store, threads_per_worker: int = 1, log_store: Store | None = None
) -> APIRouter:
    """`threads_per_worker` (the node's setting) costs CPU experiments in CPU-hours."""
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            render(store, threads_per_worker, log_store), media_type=CONTENT_TYPE
        )

    return router


def render(store: Store, threads_per_worker: int = 1, log_store: Store | None = None) -> str:
    """Every family, HELP and TYPE lines first, one sample per line; the log and its
    outbox are read from `log_store` (default: `store`)."""
    campaigns = store.list_campaigns()
    found = {c.id: discovery.for_campaign(store, c, threads_per_worker) for c in campaigns}
    names = {c.id: c.name for c in campaigns}
    by_status = Counter(c.status for c in campaigns)
    stats = store.experiment_stats()
    best: dict[str, float] = {}
    for cid, _, _, fitness in stats:
        if fitness is not None:
            best[cid] = max(fitness, best.get(cid, fitness))
    log = LogStore(log_store or store)  # sizes only: no Merkle tree is built for a scrape
    latest = log.latest_checkpoint()
    outbox = outbox_stats(log_store or store)
    ledger = DirectiveLedger(store)
    applied = Counter((d.source, d.kind) for d in ledger.list_applied())
    unacked = Counter(d.source for d in ledger.unacknowledged())

    def campaign(cid: str) -> dict[str, str]:
        return {"campaign": names.get(cid, cid), "campaign_id": cid}

    out: list[str] = []
    _family(
        out,
        "asi_node_campaigns",
        "Campaigns by status.",
        [({"status": s}, by_status[s]) for s in CAMPAIGN_STATUSES],
    )
    _family(
        out,
        "asi_node_experiments",
        "Experiments by campaign and status.",
        [(campaign(cid) | {"status": status}, n) for cid, status, n, _ in stats],
    )
    _family(
        out,
        "asi_node_best_fitness",
        "Highest fitness of a scored experiment, by campaign.",
        [(campaign(cid), value) for cid, value in sorted(best.items())],
    )
    _family(
        out,
        "asi_node_promoted_candidates",
        "Generated candidates promoted (every seed scored, mean fitness over the margin).",
        [(campaign(cid), d.promoted) for cid, d in found.items()],
    )
    _family(
        out,
        "asi_node_compute_hours",
        "Compute the campaign's experiments held: GPU-hours leased, CPU-hours as wall x threads.",
        [
            (campaign(cid) | {"unit": unit}, hours)
            for cid, d in found.items()
            for unit, hours in (
                (discovery.ComputeUnit.GPU, d.gpu_hours),
                (discovery.ComputeUnit.CPU, d.cpu_hours),
            )
        ],
    )
    _family(
        out,
        "asi_node_promoted_per_compute_hour",
        "Promoted candidates per compute-hour, in the campaign's unit (gpu when it used GPUs).",
        [
            (campaign(cid) | {"unit": d.unit}, d.rate)
            for cid, d in found.items()
            if d.rate is not None
        ],
    )
    _family(out, "asi_node_log_entries", "Entries in the transparency log.", [({}, log.size())])
    _family(
        out,
        "asi_node_log_checkpoint_size",
        "Tree size of the latest signed checkpoint (0: none yet).",
        [({}, latest.tree_size if latest is not None else 0)],
    )
    _family(
        out,
        "asi_node_anchor_outbox",
        "Anchoring outbox rows by target and status.",
        [({"target": t, "status": status}, n) for t, status, n, _ in outbox],
    )
    _family(
        out,
        "asi_node_anchor_confirmed_size",
        "Largest tree size whose root is confirmed, by anchoring target.",
        [
            ({"target": t}, size)
            for t, status, _, size in outbox
            if status == OutboxStatus.CONFIRMED
        ],
    )
    _family(
        out,
        "asi_node_directives_applied",
        "Governance directives applied, by source and kind.",
        [({"source": src, "kind": kind}, n) for (src, kind), n in sorted(applied.items())],
    )
    _family(
        out,
        "asi_node_directives_unacknowledged",
        "Applied directives not yet acknowledged on their source.",
        [({"source": src}, n) for src, n in sorted(unacked.items())],
    )
    return "\n".join(out) + "\n"


def _family(out: list[str], name: str, help_text: str, samples: Iterable[Sample]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} gauge")
    for labels, value in samples:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}")


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
