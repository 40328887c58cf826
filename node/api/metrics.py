"""GET /metrics: the node's state in the Prometheus text format (version 0.0.4).

One `prometheus_client` collector reads the store on each scrape, so the figures survive
restarts and need no instrumentation in the workers; each app has a registry of its own
(several apps in one process do not clash), with the process and platform collectors
and, where NVIDIA's management library reports devices, the GPUs' (node.api.gpu_metrics).

Gauges: campaigns by status; experiments by campaign and status with each campaign's
best fitness; the transparency log's size and latest checkpoint; the anchoring outbox by
target and status with the largest confirmed tree size (the log size minus it is what is
not anchored yet); governance directives applied and not yet acknowledged, by source.
Discovery, by campaign (node.campaign.discovery): the generated candidates promoted, the
compute the campaign's experiments held in GPU-hours and in CPU-hours (wall time x the
node's threads per worker), and promoted candidates per compute-hour in the campaign's
unit (GPU when any experiment trained on a GPU; absent until some compute is recorded):

    asi_node_promoted_candidates{campaign, campaign_id}
    asi_node_compute_hours{campaign, campaign_id, unit="gpu"|"cpu"}
    asi_node_promoted_per_compute_hour{campaign, campaign_id, unit}

The LLM agents' spending against the campaign's budget, with the same labels on both so
that `spent / budget` is the fraction used (a budget is absent where it is not capped):

    asi_node_llm_spent{campaign, campaign_id, resource="calls"|"tokens"|"usd"}
    asi_node_llm_budget{campaign, campaign_id, resource}

Also: finished experiments' durations (a histogram of `timings.total_s` per campaign),
the build (`asi_node_build_info{version, python, torch}`), and, when the app is given
them, the sandbox's isolation mode and each governance source's age (seconds since its
last fresh reading, as the daemon's governed runs report it) with the stale flag.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from attestation.schema import ExperimentStatus
from node.api.gpu_metrics import GpuCollector
from node.campaign import discovery, leaderboard
from node.campaign.config import CampaignConfig
from node.store import (
    CAMPAIGN_STATUSES,
    CampaignRow,
    DirectiveLedger,
    LogStore,
    Store,
    outbox_stats,
)
from node.store.outbox import OutboxStatus

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CAMPAIGN = ["campaign", "campaign_id"]
# Experiment wall time, seconds: a quick CPU screen to a long GPU run.
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
FINISHED = (ExperimentStatus.DONE, ExperimentStatus.FAILED)

NodeStatus = Callable[[], Mapping[str, Any]]


def metrics_router(
    store: Store,
    threads_per_worker: int = 1,
    log_store: Store | None = None,
    *,
    node_status: NodeStatus | None = None,
    isolation_mode: str | None = None,
) -> APIRouter:
    """`threads_per_worker` (the node's setting) costs CPU experiments in CPU-hours; the
    log and its outbox are read from `log_store` (default: `store`); `node_status` (the
    daemon's governed runs) gives the governance sources' ages; `isolation_mode` is how
    the sandbox jails candidates on this host."""
    registry = metrics_registry(
        store, threads_per_worker, log_store, node_status=node_status, isolation_mode=isolation_mode
    )
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)

    return router


def metrics_registry(
    store: Store,
    threads_per_worker: int = 1,
    log_store: Store | None = None,
    *,
    node_status: NodeStatus | None = None,
    isolation_mode: str | None = None,
) -> CollectorRegistry:
    """A registry of this app's own: the node's families, the GPUs', process and platform."""
    registry = CollectorRegistry()
    registry.register(
        NodeCollector(store, threads_per_worker, log_store, node_status, isolation_mode)
    )
    registry.register(GpuCollector())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class NodeCollector:
    """The node's families, read from the store (and the daemon's status) at scrape time."""

    def __init__(
        self,
        store: Store,
        threads_per_worker: int = 1,
        log_store: Store | None = None,
        node_status: NodeStatus | None = None,
        isolation_mode: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.threads = threads_per_worker
        self.log_store = log_store or store
        self.node_status = node_status
        self.isolation_mode = isolation_mode
        self.clock = clock
        self.build = build_info()

    def collect(self) -> Iterator[Metric]:
        store = self.store
        campaigns = store.list_campaigns()
        runs = {c.id: store.list_experiments(c.id) for c in campaigns}
        names = {c.id: c.name for c in campaigns}

        def labels(cid: str) -> list[str]:
            return [names.get(cid, cid), cid]

        by_status = Counter(c.status for c in campaigns)
        yield _gauge(
            "asi_node_campaigns",
            "Campaigns by status.",
            ["status"],
            (([s], by_status[s]) for s in CAMPAIGN_STATUSES),
        )
        yield from self._experiments(labels)
        yield from self._discovery(campaigns, runs, labels)
        yield _durations(runs, labels)
        yield from self._llm(campaigns, labels)
        yield from self._log()
        yield from self._governance()
        info = InfoMetricFamily("asi_node_build", "The node's version and runtime.")
        info.add_metric([], self.build)
        yield info
        if self.isolation_mode is not None:
            yield _gauge(
                "asi_node_sandbox_isolation",
                "How the sandbox jails candidates on this host (the mode is the label).",
                ["mode"],
                [([self.isolation_mode], 1)],
            )

    def _experiments(self, labels: Callable[[str], list[str]]) -> Iterator[Metric]:
        stats = self.store.experiment_stats()
        best: dict[str, float] = {}
        for cid, _, _, fitness in stats:
            if fitness is not None:
                best[cid] = max(fitness, best.get(cid, fitness))
        yield _gauge(
            "asi_node_experiments",
            "Experiments by campaign and status.",
            [*CAMPAIGN, "status"],
            (([*labels(cid), status], n) for cid, status, n, _ in stats),
        )
        yield _gauge(
            "asi_node_best_fitness",
            "Highest fitness of a scored experiment, by campaign.",
            CAMPAIGN,
            ((labels(cid), value) for cid, value in sorted(best.items())),
        )

    def _discovery(
        self,
        campaigns: list[CampaignRow],
        runs: Mapping[str, list[Any]],
        labels: Callable[[str], list[str]],
    ) -> Iterator[Metric]:
        found = {
            c.id: discovery.measure(
                leaderboard.for_campaign(self.store, c), runs[c.id], self.threads
            )
            for c in campaigns
        }
        yield _gauge(
            "asi_node_promoted_candidates",
            "Generated candidates promoted (every seed scored, mean fitness over the margin).",
            CAMPAIGN,
            ((labels(cid), d.promoted) for cid, d in found.items()),
        )
        yield _gauge(
            "asi_node_compute_hours",
            "Compute the campaign's experiments held: GPU-hours leased, CPU-hours as wall x "
            "threads.",
            [*CAMPAIGN, "unit"],
            (
                ([*labels(cid), unit], hours)
                for cid, d in found.items()
                for unit, hours in (
                    (discovery.ComputeUnit.GPU, d.gpu_hours),
                    (discovery.ComputeUnit.CPU, d.cpu_hours),
                )
            ),
        )
        yield _gauge(
            "asi_node_promoted_per_compute_hour",
            "Promoted candidates per compute-hour, in the campaign's unit (gpu when it used GPUs).",
            [*CAMPAIGN, "unit"],
            (([*labels(cid), d.unit], d.rate) for cid, d in found.items() if d.rate is not None),
        )

    def _llm(
        self, campaigns: list[CampaignRow], labels: Callable[[str], list[str]]
    ) -> Iterator[Metric]:
        spent = GaugeMetricFamily(
            "asi_node_llm_spent",
            "What the campaign's LLM agents spent: calls, tokens, and cost in USD.",
            labels=[*CAMPAIGN, "resource"],
        )
        budget = GaugeMetricFamily(
            "asi_node_llm_budget",
            "The campaign's LLM budget by resource (absent where it is not capped).",
            labels=[*CAMPAIGN, "resource"],
        )
        for c in campaigns:
            used = self.store.llm_usage(c.id)
            for resource, value in (
                ("calls", used.calls),
                ("tokens", used.tokens),
                ("usd", used.cost_usd),
            ):
                spent.add_metric([*labels(c.id), resource], value)
            for resource, cap in _caps(c).items():
                budget.add_metric([*labels(c.id), resource], cap)
        yield spent
        yield budget

    def _log(self) -> Iterator[Metric]:
        log_store = LogStore(self.log_store)  # sizes only: no Merkle tree is built for a scrape
        latest = log_store.latest_checkpoint()
        outbox = outbox_stats(self.log_store)
        ledger = DirectiveLedger(self.store)
        applied = Counter((d.source, d.kind) for d in ledger.list_applied())
        unacked = Counter(d.source for d in ledger.unacknowledged())
        yield _gauge(
            "asi_node_log_entries", "Entries in the transparency log.", [], [([], log_store.size())]
        )
        yield _gauge(
            "asi_node_log_checkpoint_size",
            "Tree size of the latest signed checkpoint (0: none yet).",
            [],
            [([], latest.tree_size if latest is not None else 0)],
        )
        yield _gauge(
            "asi_node_anchor_outbox",
            "Anchoring outbox rows by target and status.",
            ["target", "status"],
            (([t, status], n) for t, status, n, _ in outbox),
        )
        yield _gauge(
            "asi_node_anchor_confirmed_size",
            "Largest tree size whose root is confirmed, by anchoring target.",
            ["target"],
            (([t], size) for t, status, _, size in outbox if status == OutboxStatus.CONFIRMED),
        )
        yield _gauge(
            "asi_node_directives_applied",
            "Governance directives applied, by source and kind.",
            ["source", "kind"],
            (([src, kind], n) for (src, kind), n in sorted(applied.items())),
        )
        yield _gauge(
            "asi_node_directives_unacknowledged",
            "Applied directives not yet acknowledged on their source.",
            ["source"],
            (([src], n) for src, n in sorted(unacked.items())),
        )

    def _governance(self) -> Iterator[Metric]:
        """The sources' ages at the daemon's last poll, aged by the time since it."""
        status = dict(self.node_status()) if self.node_status is not None else {}
        sources = status.get("sources")
        if not isinstance(sources, Mapping):
            return
        since = 0.0
        try:
            polled = datetime.fromisoformat(str(status["polled_at"])).timestamp()
            since = max(0.0, self.clock() - polled)
        except (KeyError, ValueError):
            log.warning("governance poll time unreadable", extra={"status": status})
        ages = GaugeMetricFamily(
            "asi_node_governance_source_age_seconds",
            "Seconds since each governance source's last fresh reading.",
            labels=["source"],
        )
        for name, facts in sorted(sources.items()):
            age = facts.get("age_s") if isinstance(facts, Mapping) else None
            if isinstance(age, int | float):
                ages.add_metric([str(name)], float(age) + since)
        yield ages
        yield _gauge(
            "asi_node_governance_stale",
            "1 while no governance source is fresh (every campaign is paused), else 0.",
            [],
            [([], 1 if status.get("stale") else 0)],
        )


def _gauge(
    name: str,
    help_text: str,
    labels: list[str],
    samples: Iterable[tuple[list[str], float]],
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for values, value in samples:
        family.add_metric([str(v) for v in values], float(value))
    return family


def build_info() -> dict[str, str]:
    """The node's version, Python's, and torch's where it is installed (read from the
    installed distributions: a scrape never imports torch)."""
    info = {"version": _version("asi-node") or "unknown", "python": platform.python_version()}
    torch = _version("torch")
    if torch is not None:
        info["torch"] = torch
    return info


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _caps(campaign: CampaignRow) -> dict[str, float]:
    b = CampaignConfig.model_validate(campaign.config).budget
    caps = {"calls": b.max_llm_calls, "tokens": b.max_llm_tokens, "usd": b.max_llm_cost_usd}
    return {k: float(v) for k, v in caps.items() if v is not None}


def _durations(runs: Mapping[str, list[Any]], labels: Callable[[str], list[str]]) -> Metric:
    family = HistogramMetricFamily(
        "asi_node_experiment_duration_seconds",
        "Wall time of finished experiments (done or failed), by campaign.",
        labels=CAMPAIGN,
    )
    for cid, exps in runs.items():
        seconds = [
            float(e.timings["total_s"])
            for e in exps
            if e.status in FINISHED and e.timings and "total_s" in e.timings
        ]
        if not seconds:
            continue
        counts: defaultdict[float, int] = defaultdict(int)
        for s in seconds:
            for bound in DURATION_BUCKETS:
                if s <= bound:
                    counts[bound] += 1
        buckets = [(repr(b), counts[b]) for b in DURATION_BUCKETS]
        family.add_metric(labels(cid), [*buckets, ("+Inf", len(seconds))], sum(seconds))
    return family
