"""GET /metrics: the store's state in the Prometheus text format, read back with the
reference parser (prometheus_client) and compared with the store's own answers."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from logfix import run_logged_campaign, small_config
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from attestation.keys import NodeKey
from node.api.app import create_app
from node.api.gpu_metrics import GpuCollector
from node.campaign.config import Budget
from node.store import DirectiveLedger, Outbox, Store
from node.tlog.log import LogView

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ODD_NAME = 'a "quoted" name \\ with\na newline'


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store.open("sqlite://")
    yield store
    store.close()


# The families read from the store as gauges; the others have their own types.
STORE_GAUGES = {
    "asi_node_campaigns",
    "asi_node_experiments",
    "asi_node_best_fitness",
    "asi_node_promoted_candidates",
    "asi_node_compute_hours",
    "asi_node_promoted_per_compute_hour",
    "asi_node_log_entries",
    "asi_node_log_checkpoint_size",
    "asi_node_anchor_outbox",
    "asi_node_anchor_confirmed_size",
    "asi_node_directives_applied",
    "asi_node_directives_unacknowledged",
    "asi_node_llm_spent",
    "asi_node_llm_budget",
}


def scrape(store: Store, **app: Any) -> Samples:
    return scrape_families(store, **app)[0]


def scrape_families(store: Store, **app: Any) -> tuple[Samples, dict[str, str]]:
    """The samples, and each family's type, as the reference parser reads them."""
    reply = TestClient(create_app(store, **app)).get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(reply.text):
        assert family.documentation
        assert family.type == "gauge" or family.name not in STORE_GAUGES
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def test_metrics_report_what_the_store_holds(store: Store) -> None:
    _, cid = run_logged_campaign(store, NodeKey.generate(), name="x", fail_every=3)
    odd = store.create_campaign(ODD_NAME, small_config(1).model_dump(mode="json"))
    outbox = Outbox(store)
    latest = LogView(store).latest_checkpoint()
    assert latest is not None
    outbox.enqueue(latest.log_id, latest.tree_size, latest.root_hash)
    icp = Outbox(store, "icp")
    icp.enqueue(latest.log_id, latest.tree_size, latest.root_hash)
    ledger = DirectiveLedger(store)
    ledger.record(source="evm", campaign_id=cid, epoch=1, kind="pause", ref="0x1")
    acked = ledger.record(source="evm", campaign_id=cid, epoch=2, kind="resume", ref="0x2")
    ledger.mark_acknowledged(acked.id, "0xack")
    ledger.record(source="sns", campaign_id="*", epoch=1, kind="pause", ref="7")

    got = scrape(store)

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    campaign = {"campaign": "x", "campaign_id": cid}
    for status in ("done", "failed"):
        expected = store.count_experiments(cid, status=status)
        assert expected > 0
        assert value("asi_node_experiments", **campaign, status=status) == expected
    fitness = [e.fitness for e in store.list_experiments(cid) if e.fitness is not None]
    assert value("asi_node_best_fitness", **campaign) == pytest.approx(max(fitness))
    assert not any(k[0] == "asi_node_experiments" and ("campaign_id", odd.id) in k[1] for k in got)
    assert value("asi_node_campaigns", status="created") == 1  # the odd name parsed back
    assert value("asi_node_campaigns", status="done") == 1
    assert value("asi_node_log_entries") == LogView(store).size
    assert value("asi_node_log_checkpoint_size") == latest.tree_size
    assert value("asi_node_anchor_outbox", target="evm", status="pending") == 1
    assert value("asi_node_anchor_outbox", target="icp", status="pending") == 1
    assert value("asi_node_directives_applied", source="evm", kind="pause") == 1
    assert value("asi_node_directives_applied", source="sns", kind="pause") == 1
    assert value("asi_node_directives_unacknowledged", source="evm") == 1
    assert value("asi_node_directives_unacknowledged", source="sns") == 1


def test_label_values_are_escaped_and_confirmed_sizes_reported(store: Store) -> None:
    run_logged_campaign(store, NodeKey.generate(), name=ODD_NAME, candidates=1)
    icp = Outbox(store, "icp")
    checkpoints = LogView(store).checkpoints()
    assert len(checkpoints) >= 2
    for n, cp in enumerate(checkpoints[:-1], 1):  # all but the latest confirmed
        row = icp.enqueue(cp.log_id, cp.tree_size, cp.root_hash)
        icp.published(row, anchor_count=n, certified_at_ns=0)
    icp.enqueue(checkpoints[-1].log_id, checkpoints[-1].tree_size, checkpoints[-1].root_hash)
    got = scrape(store)
    names = {dict(labels).get("campaign") for (_, labels) in got}
    assert ODD_NAME in names  # backslash, quote and newline survive the round trip
    confirmed = got[("asi_node_anchor_confirmed_size", frozenset({("target", "icp")}))]
    assert confirmed == checkpoints[-2].tree_size
    assert (
        got[("asi_node_anchor_outbox", frozenset({("target", "icp"), ("status", "pending")}))] == 1
    )
    assert ("asi_node_anchor_confirmed_size", frozenset({("target", "evm")})) not in got

    empty = Store.open("sqlite://")
    assert scrape(empty)[("asi_node_log_checkpoint_size", frozenset())] == 0
    empty.close()


def exchange(tokens: int, usd: float, status: str = "ok") -> dict[str, Any]:
    return {
        "role": "researcher",
        "purpose": "propose",
        "model": "m",
        "status": status,
        "prompt": "p",
        "completion": "c",
        "prompt_tokens": tokens,
        "completion_tokens": 10,
        "cost_usd": usd,
        "latency_s": 0.5,
    }


def test_metrics_add_durations_llm_spend_governance_build_and_process(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML here: no GPU families
    _, cid = run_logged_campaign(store, NodeKey.generate(), name="x", fail_every=3)
    capped = small_config(1).model_copy(
        update={"budget": Budget(max_candidates=1, max_llm_calls=10, max_llm_cost_usd=2.0)}
    )
    llm = store.create_campaign("llm", capped.model_dump(mode="json"))
    store.add_llm_exchanges(llm.id, None, [exchange(100, 0.25), exchange(50, 0.5, "error")])
    polled = datetime.now(UTC) - timedelta(seconds=5)
    status = {"polled_at": polled.isoformat(), "sources": {"evm": {"age_s": 2.0}}, "stale": False}

    got, kinds = scrape_families(store, node_status=lambda: status, isolation_mode="namespaces")

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    new = {
        "asi_node_experiment_duration_seconds": "histogram",
        "asi_node_llm_spent": "gauge",
        "asi_node_llm_budget": "gauge",
        "asi_node_governance_source_age_seconds": "gauge",
        "asi_node_governance_stale": "gauge",
        "asi_node_build_info": "gauge",
        "asi_node_sandbox_isolation": "gauge",
        "process_cpu_seconds": "counter",
        "process_resident_memory_bytes": "gauge",
        "python_info": "gauge",
    }
    assert {name: kinds.get(name) for name in new} == new
    assert not any(name.startswith("asi_node_gpu") for name in kinds)

    campaign = {"campaign": "x", "campaign_id": cid}
    finished = [e for e in store.list_experiments(cid) if e.timings and "total_s" in e.timings]
    assert finished  # the fake engineer takes 1 s per experiment
    seconds = sum(e.timings["total_s"] for e in finished if e.timings)
    hist = "asi_node_experiment_duration_seconds"
    assert value(f"{hist}_count", **campaign) == len(finished)
    assert value(f"{hist}_sum", **campaign) == pytest.approx(seconds)
    assert value(f"{hist}_bucket", **campaign, le="10.0") == len(finished)
    assert value(f"{hist}_bucket", **campaign, le="+Inf") == len(finished)

    spent = {"campaign": "llm", "campaign_id": llm.id}
    assert value("asi_node_llm_spent", **spent, resource="calls") == 2
    assert value("asi_node_llm_spent", **spent, resource="tokens") == 170
    assert value("asi_node_llm_spent", **spent, resource="usd") == pytest.approx(0.75)
    assert value("asi_node_llm_budget", **spent, resource="calls") == 10
    assert value("asi_node_llm_budget", **spent, resource="usd") == 2.0
    assert ("asi_node_llm_budget", frozenset((spent | {"resource": "tokens"}).items())) not in got
    assert value("asi_node_llm_spent", **campaign, resource="calls") == 0

    assert 7.0 <= value("asi_node_governance_source_age_seconds", source="evm") < 60
    assert value("asi_node_governance_stale") == 0
    assert value("asi_node_sandbox_isolation", mode="namespaces") == 1
    build = next(dict(k[1]) for k in got if k[0] == "asi_node_build_info")
    assert build["version"] and build["python"] == ".".join(map(str, sys.version_info[:3]))
    assert value("process_cpu_seconds_total") > 0


def test_metrics_leave_out_what_the_app_was_not_given(store: Store) -> None:
    _, kinds = scrape_families(store)
    assert "asi_node_sandbox_isolation" not in kinds
    assert "asi_node_governance_source_age_seconds" not in kinds


class FakeNVMLError(Exception):
    pass


def fake_nvml(count: int, fail_init: bool = False) -> types.ModuleType:
    """The slice of pynvml the GPU collector calls, for `count` 80 GB devices."""
    nvml = types.ModuleType("pynvml")
    calls = {"init": 0}

    def init() -> None:
        calls["init"] += 1
        if fail_init:
            raise FakeNVMLError("NVML Shared Library Not Found")

    memory = types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30, free=77 * 2**30)
    names = {"handle0": b"NVIDIA H100", "handle1": "NVIDIA H200"}  # older bindings: bytes
    parts = {
        "NVMLError": FakeNVMLError,
        "nvmlInit": init,
        "nvmlDeviceGetCount": lambda: count,
        "nvmlDeviceGetHandleByIndex": lambda i: f"handle{i}",
        "nvmlDeviceGetName": names.get,
        "nvmlDeviceGetMemoryInfo": lambda h: memory,
        "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(
            gpu=37 if h == "handle0" else 0, memory=5
        ),
        "calls": calls,
    }
    for name, value in parts.items():
        setattr(nvml, name, value)
    return nvml


def gpu_samples(collector: GpuCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_gpu_collector_reports_each_device(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml(2)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    collector = GpuCollector()
    got = gpu_samples(collector)
    h100 = frozenset({("gpu", "0"), ("name", "NVIDIA H100")})
    h200 = frozenset({("gpu", "1"), ("name", "NVIDIA H200")})
    assert got[("asi_node_gpu_utilization_ratio", h100)] == pytest.approx(0.37)
    assert got[("asi_node_gpu_utilization_ratio", h200)] == 0
    assert got[("asi_node_gpu_memory_used_bytes", h100)] == 3 * 2**30
    assert got[("asi_node_gpu_memory_total_bytes", h200)] == 80 * 2**30
    gpu_samples(collector)
    assert nvml.calls["init"] == 1

    store = Store.open("sqlite://")  # and through the app's registry
    _, kinds = scrape_families(store)
    store.close()
    assert kinds["asi_node_gpu_memory_used_bytes"] == "gauge"


@pytest.mark.parametrize("nvml", [None, fake_nvml(0), fake_nvml(1, fail_init=True)])
def test_gpu_families_are_absent_without_devices(
    nvml: types.ModuleType | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", nvml)  # None: not installed
    collector = GpuCollector()
    assert gpu_samples(collector) == {}
    assert gpu_samples(collector) == {}
    if nvml is not None and nvml.nvmlDeviceGetCount():
        assert nvml.calls["init"] == 1  # not asked again
