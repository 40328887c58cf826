"""The discovery rate (node.campaign.discovery): promoted candidates per compute-hour, from
a real store holding experiments of known timings and standings; in `campaign show`,
GET /campaigns/{id} and GET /metrics."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from attestation.schema import ExperimentRole, ExperimentStatus
from loop.proposal import Origin, Proposal
from node.api.app import create_app
from node.campaign import discovery, leaderboard
from node.campaign.config import CampaignConfig
from node.campaign.discovery import ComputeUnit
from node.campaign.leaderboard import Standing
from node.cli.main import main
from node.runtime import open_node
from node.store import CampaignRow, Store

CONFIG = CampaignConfig(
    preset="quick", baselines=("deltanet", "linear"), rerun_seeds=(1, 2), promote_margin=0.01
)
# Wall seconds of the CPU experiments fill_campaign records (the running, queued and
# requeued ones record none).
CPU_WALL_S = 100 + 50 + 3 * 200 + 3 * 200 + 5


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store.open("sqlite://")
    yield store
    store.close()


def add(store: Store, cid: str, name: str, origin: Origin = "offline") -> str:
    code = f"# {name}\nfrom kernels.baselines import DeltaNet as Mixer\n"
    return store.add_candidate(cid, Proposal(name, f"about {name}", code, origin=origin)).id


def finish(
    store: Store,
    cid: str,
    cand: str,
    seed: int,
    *,
    fitness: float | None = None,
    timings: Mapping[str, float] | None = None,
    failure: str | None = None,
    role: ExperimentRole = ExperimentRole.CANDIDATE,
) -> None:
    exp = store.enqueue_experiment(cid, cand, role, seed)
    store.start_experiment(exp.id)
    store.finish_experiment(
        exp.id,
        ExperimentStatus.FAILED if failure else ExperimentStatus.DONE,
        failure_class=failure,
        metrics=None if failure else {"mean_acc": 0.5 + (fitness or 0.0)},
        fitness=fitness,
        fitness_version=None if fitness is None else "fitness-v1",
        timings=timings,
    )


def fill_campaign(store: Store, name: str = "disc") -> CampaignRow:
    """Two baselines; a candidate promoted on three seeds; one whose re-runs pull its mean
    under the margin; one that failed; one running, one queued, one requeued."""
    camp = store.create_campaign(name, CONFIG.model_dump(mode="json"))
    cid = camp.id
    base = ExperimentRole.BASELINE
    finish(store, cid, add(store, cid, "deltanet", "baseline"), 0, fitness=0.0,
           timings={"total_s": 100.0}, role=base)  # fmt: skip
    finish(store, cid, add(store, cid, "linear", "baseline"), 0, fitness=-0.3,
           timings={"total_s": 50.0}, role=base)  # fmt: skip
    winner = add(store, cid, "winner")
    lucky = add(store, cid, "lucky")
    for seed, (won, luck) in enumerate([(0.05, 0.05), (0.04, -0.02), (0.06, -0.03)]):
        role = ExperimentRole.CANDIDATE if seed == 0 else ExperimentRole.RERUN
        finish(store, cid, winner, seed, fitness=won, timings={"total_s": 200.0}, role=role)
        finish(store, cid, lucky, seed, fitness=luck, timings={"total_s": 200.0}, role=role)
    finish(store, cid, add(store, cid, "broken"), 0, failure="future_leak",
           timings={"check_s": 0.1, "total_s": 5.0})  # fmt: skip
    running = store.enqueue_experiment(cid, add(store, cid, "running"), "candidate", 0)
    store.start_experiment(running.id)
    store.enqueue_experiment(cid, add(store, cid, "queued"), "candidate", 0)
    requeued = store.enqueue_experiment(cid, add(store, cid, "requeued"), "candidate", 0)
    store.start_experiment(requeued.id)
    store.requeue_experiment(requeued.id)
    return camp


def test_promoted_per_cpu_hour_counts_every_costed_experiment(store: Store) -> None:
    camp = fill_campaign(store)
    standing = {r.name: r.status for r in leaderboard.for_campaign(store, camp)}
    assert standing["winner"] is Standing.PROMOTED
    assert standing["lucky"] is Standing.SCORED  # 0.05 alone was over the margin
    assert standing["broken"] is Standing.FAILED

    found = discovery.for_campaign(store, camp, threads_per_worker=2)

    assert found.promoted == 1
    assert found.experiments == 2 + 3 + 3 + 1  # baselines, both candidates' seeds, the failure
    assert found.unit is ComputeUnit.CPU
    assert found.gpu_hours == 0
    assert found.cpu_hours == pytest.approx(2 * CPU_WALL_S / 3600)
    assert found.compute_hours == found.cpu_hours
    assert found.rate == pytest.approx(1 / found.cpu_hours)
    assert found.line() == (
        f"discovery: 1 promoted in {found.cpu_hours:.3g} CPU-hours over 9 experiments: "
        f"{found.rate:.3g} per CPU-hour"
    )
    one_thread = discovery.for_campaign(store, camp, threads_per_worker=1)
    assert one_thread.cpu_hours == pytest.approx(found.cpu_hours / 2)


def test_gpu_seconds_make_the_rate_per_gpu_hour(store: Store) -> None:
    camp = store.create_campaign("gpu", CONFIG.model_dump(mode="json"))
    cid = camp.id
    finish(store, cid, add(store, cid, "deltanet", "baseline"), 0, fitness=0.0,
           timings={"total_s": 90.0, "gpu_s": 80.0}, role=ExperimentRole.BASELINE)  # fmt: skip
    winner = add(store, cid, "winner")
    for seed in range(3):
        timings = {"total_s": 400.0, "gpu_s": 360.0}
        finish(store, cid, winner, seed, fitness=0.1, timings=timings)
    # Refused by the static check before it leased a GPU: CPU time only.
    finish(store, cid, add(store, cid, "refused"), 0, failure="forbidden",
           timings={"check_s": 0.2, "total_s": 0.2})  # fmt: skip

    found = discovery.for_campaign(store, camp, threads_per_worker=4)

    assert found.unit is ComputeUnit.GPU
    assert found.gpu_hours == pytest.approx((80 + 3 * 360) / 3600)
    assert found.cpu_hours == pytest.approx(4 * 0.2 / 3600)
    assert found.compute_hours == found.gpu_hours
    assert found.rate == pytest.approx(1 / found.gpu_hours)
    assert "GPU-hours" in found.line() and "CPU-hours off the GPUs" in found.line()


def test_baselines_are_not_discoveries_and_no_compute_has_no_rate(store: Store) -> None:
    # No re-runs and a negative margin: a baseline's one seed stands promoted.
    loose = CONFIG.model_copy(update={"rerun_seeds": (), "promote_margin": -1.0})
    camp = store.create_campaign("loose", loose.model_dump(mode="json"))
    finish(store, camp.id, add(store, camp.id, "deltanet", "baseline"), 0, fitness=0.0,
           timings={"total_s": 10.0}, role=ExperimentRole.BASELINE)  # fmt: skip
    assert [r.status for r in leaderboard.for_campaign(store, camp)] == [Standing.PROMOTED]
    assert discovery.for_campaign(store, camp, 1).promoted == 0

    empty = store.create_campaign("empty", CONFIG.model_dump(mode="json"))
    nothing = discovery.for_campaign(store, empty, 1)
    assert (nothing.promoted, nothing.experiments, nothing.compute_hours) == (0, 0, 0.0)
    assert nothing.rate is None
    assert nothing.line().endswith(": - per CPU-hour")
    with pytest.raises(ValueError, match="threads_per_worker"):
        discovery.for_campaign(store, empty, 0)


def test_metrics_and_campaign_json_report_the_discovery_rate(store: Store) -> None:
    camp = fill_campaign(store)
    empty = store.create_campaign("empty", CONFIG.model_dump(mode="json"))
    client = TestClient(create_app(store, threads_per_worker=2))
    reply = client.get("/metrics")
    assert reply.status_code == 200
    got: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            got[(s.name, frozenset(s.labels.items()))] = s.value

    def value(name: str, campaign: CampaignRow, **labels: str) -> float:
        key = frozenset(({"campaign": campaign.name, "campaign_id": campaign.id} | labels).items())
        return got[(name, key)]

    hours = 2 * CPU_WALL_S / 3600
    assert value("asi_node_promoted_candidates", camp) == 1
    assert value("asi_node_compute_hours", camp, unit="cpu") == pytest.approx(hours)
    assert value("asi_node_compute_hours", camp, unit="gpu") == 0
    assert value("asi_node_promoted_per_compute_hour", camp, unit="cpu") == pytest.approx(1 / hours)
    assert value("asi_node_promoted_candidates", empty) == 0
    assert not any(
        name == "asi_node_promoted_per_compute_hour" and ("campaign_id", empty.id) in labels
        for name, labels in got
    )

    shown = client.get(f"/campaigns/{camp.id}").json()["discovery"]
    assert shown["promoted"] == 1 and shown["unit"] == "cpu" and shown["experiments"] == 9
    assert shown["cpu_hours"] == pytest.approx(hours)
    assert shown["rate"] == pytest.approx(1 / hours)


def test_campaign_show_prints_the_discovery_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    monkeypatch.setenv("ASI_NODE_LOOP__THREADS_PER_WORKER", "2")
    node = open_node(home)
    camp = fill_campaign(node.store)
    node.store.close()
    capsys.readouterr()

    assert main(["--home", str(home), "campaign", "show", camp.id]) == 0

    out = capsys.readouterr().out
    hours = 2 * CPU_WALL_S / 3600
    line = (
        f"discovery: 1 promoted in {hours:.3g} CPU-hours over 9 experiments: "
        f"{1 / hours:.3g} per CPU-hour"
    )
    assert line in out.splitlines()
