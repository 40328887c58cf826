"""The scheduler hands each proposed candidate the probes of the campaign's trained ones, and
a twin ends as a failed experiment before training; baselines and re-runs are never checked."""

from __future__ import annotations

import hashlib
import threading

from fakes import FakeEngineer

from loop.engineer import EvalResult, ExperimentJob
from loop.outcome import FailureClass
from loop.probe import Probe, find_twin
from node.campaign.config import Budget, CampaignConfig
from node.campaign.scheduler import CampaignRunner
from node.store import Store

SAME = Probe((0.25, -0.5, 1.0), 2624, "float64")  # what every generated candidate computes


class ProbingEngineer(FakeEngineer):
    """Baselines compute functions of their own; every generated candidate computes SAME.
    Like the Engineer's sandbox, a candidate whose probe matches a known one stops there."""

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        if "kernels.baselines" in job.code:
            digest = hashlib.sha256(job.code.encode()).digest()
            probe = Probe(tuple(b / 255 for b in digest[:3]), 2624, "float64")
        else:
            probe = SAME
        screen: dict[str, object] = {"checks": [], "failure": None, "message": ""}
        screen["probe"] = probe.to_json()
        twin = find_twin(probe, job.twins)
        if twin is not None:
            with self.lock:
                self.jobs.append(job)
            message = f"behaviour_twin: computes what {twin} computes"
            return EvalResult(
                FailureClass.BEHAVIOUR_TWIN, message, screen=screen | {"failure": "behaviour_twin"}
            )
        result = super().run(job, cancel)
        return EvalResult(
            result.failure,
            result.message,
            screen=screen,
            metrics=result.metrics,
            timings=result.timings,
        )


def test_a_behaviour_twin_is_rejected_before_training_and_the_campaign_goes_on() -> None:
    engineer = ProbingEngineer(best=0.95)  # the first candidate beats DeltaNet: re-runs
    config = CampaignConfig(
        preset="quick", baselines=("deltanet", "linear"), budget=Budget(max_candidates=4)
    )
    with Store.open("sqlite://") as store:
        camp = store.create_campaign("twins", config.model_dump(mode="json"))
        runner = CampaignRunner(store, camp, engineer, 1, 1, b"s" * 32)  # type: ignore[arg-type]
        runner.run()
        exps = {e.id: e for e in store.list_experiments(camp.id)}
        cands = {c.id: c for c in store.list_candidates(camp.id)}

    by_role: dict[str, list[ExperimentJob]] = {}
    for job in engineer.jobs:
        by_role.setdefault(exps[job.experiment_id].role, []).append(job)
    assert all(job.twins == () for job in by_role["baseline"] + by_role.get("rerun", []))
    first, *later = by_role["candidate"]
    assert [label for label, _ in first.twins] == [
        f"{cands[exps[j.experiment_id].candidate_id].name} ({exps[j.experiment_id].candidate_id})"
        for j in by_role["baseline"][:2]
    ]
    assert len(later) == 3
    first_exp = exps[first.experiment_id]
    first_name = f"{cands[first_exp.candidate_id].name} ({first_exp.candidate_id})"
    for job in later:
        exp = exps[job.experiment_id]
        assert first_name in [label for label, _ in job.twins]
        assert exp.status == "failed" and exp.failure_class == "behaviour_twin"
        assert first_name in exp.analysis
    assert first_exp.status == "done"
    reruns = [e for e in exps.values() if e.role == "rerun"]
    assert reruns and all(e.status == "done" for e in reruns)  # a re-run is never a twin
