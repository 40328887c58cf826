"""GET /metrics: the store's state in the Prometheus text format, read back with the
reference parser (prometheus_client) and compared with the store's own answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from logfix import run_logged_campaign, small_config
from prometheus_client.parser import text_string_to_metric_families

from attestation.keys import NodeKey
from node.api.app import create_app
from node.store import DirectiveLedger, Outbox, Store
from node.tlog.log import LogView

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ODD_NAME = 'a "quoted" name \\ with\na newline'


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store.open("sqlite://")
    yield store
    store.close()


def scrape(store: Store) -> Samples:
    reply = TestClient(create_app(store)).get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        assert family.type == "gauge" and family.documentation
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


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
