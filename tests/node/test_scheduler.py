"""The campaign scheduler with a fake Engineer: ordering, budgets, scoring, resume, stop."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator

import pytest
from fakes import FakeEngineer

from loop.archive import sample_parents
from loop.engineer import EvalResult, ExperimentJob
from loop.outcome import FailureClass
from node.campaign.config import Budget, CampaignConfig
from node.campaign.leaderboard import build
from node.campaign.scheduler import CampaignRunner
from node.store import Store


def config(candidates: int = 4, **kw: object) -> CampaignConfig:
    return CampaignConfig(
        preset="quick",
        baselines=("deltanet", "linear"),
        budget=Budget(max_candidates=candidates),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


def runner(store: Store, cfg: CampaignConfig, engineer: object, **kw: object) -> CampaignRunner:
    camps = [c for c in store.list_campaigns() if c.name == "t"]
    camp = camps[0] if camps else store.create_campaign("t", cfg.model_dump(mode="json"))
    return CampaignRunner(
        store,
        store.get_campaign(camp.id),
        engineer,  # type: ignore[arg-type]
        workers=2,
        threads_per_worker=1,
        node_secret=b"s" * 32,
        **kw,  # type: ignore[arg-type]
    )


def test_baselines_run_first_then_candidates_until_the_budget(store: Store) -> None:
    fake = FakeEngineer(best=0.5)  # nobody beats DeltaNet: no re-runs
    summary = runner(store, config(candidates=4), fake).run()
    assert summary.reason == "budget"
    camp = store.list_campaigns()[0]
    exps = sorted(store.list_experiments(camp.id), key=lambda e: e.seq)
    assert [e.role for e in exps[:2]] == ["baseline", "baseline"]
    assert [e.role for e in exps[2:]] == ["candidate"] * 4
    assert all(e.status == "done" and e.fitness is not None for e in exps)
    deltanet = next(
        e for e in exps if "DeltaNet" in store.get_code(store.get_candidate(e.candidate_id).digest)
    )
    assert deltanet.fitness == pytest.approx(0.0)
    assert all(e.fitness_version == "fitness-v1" for e in exps)


def test_candidates_that_beat_the_reference_rerun_on_two_more_seeds(store: Store) -> None:
    fake = FakeEngineer(best=0.95)
    runner(store, config(candidates=3), fake).run()
    camp = store.list_campaigns()[0]
    exps = store.list_experiments(camp.id)
    by_cand: dict[str, set[int]] = {}
    for e in exps:
        by_cand.setdefault(e.candidate_id, set()).add(e.seed)
    cands = {c.id: c for c in store.list_candidates(camp.id)}
    winners = [
        cid
        for cid, c in cands.items()
        if c.origin == "offline"
        and any(
            e.fitness and e.fitness > 0.01 and e.seed == 0 for e in exps if e.candidate_id == cid
        )
    ]  # above the promote margin (0.01): what earns re-runs
    assert winners, "the fake should produce at least one candidate above DeltaNet"
    for cid in winners:
        assert by_cand[cid] == {0, 1, 2}
    deltanet = next(cid for cid, c in cands.items() if c.name == "deltanet")
    assert by_cand[deltanet] == {0, 1, 2}  # the reference runs on the same seeds
    rows = build(list(cands.values()), exps, seeds_needed=3)
    promoted = [r for r in rows if r.status == "promoted"]
    assert promoted and all(r.seeds == 3 for r in promoted)
    assert store.list_insights(camp.id)


def test_failures_are_recorded_with_their_class_and_the_campaign_goes_on(store: Store) -> None:
    fake = FakeEngineer(fail_every=3, best=0.5)
    runner(store, config(candidates=5), fake).run()
    camp = store.list_campaigns()[0]
    failed = store.list_experiments(camp.id, status="failed")
    assert failed and all(e.failure_class == "future_leak" for e in failed)
    assert len([c for c in store.list_candidates(camp.id) if c.origin == "offline"]) == 5


def test_a_second_run_of_a_finished_campaign_does_no_work(store: Store) -> None:
    fake = FakeEngineer(best=0.5)
    runner(store, config(candidates=2), fake).run()
    ran = len(fake.jobs)
    summary = runner(store, config(candidates=2), fake).run()
    assert summary.finished == 0 and len(fake.jobs) == ran


def test_a_crash_mid_experiment_reruns_it_once_and_loses_nothing(store: Store) -> None:
    fake = FakeEngineer(best=0.5)
    cfg = config(candidates=2)
    camp = store.create_campaign("t", cfg.model_dump(mode="json"))
    first = runner(store, cfg, fake)
    first._ensure_baselines()
    crashed = store.claim_next_experiment(camp.id)  # "running" when the process died
    assert crashed is not None
    runner(store, cfg, fake).run()
    exps = store.list_experiments(camp.id)
    again = store.get_experiment(crashed.id)
    assert again.status == "done" and again.attempts == 2
    assert len([j for j in fake.jobs if j.experiment_id == crashed.id]) == 1
    keys = [(e.candidate_id, e.seed) for e in exps]
    assert len(keys) == len(set(keys)), "no experiment duplicated"


def test_stop_puts_in_flight_work_back_in_the_queue(store: Store) -> None:
    stop = threading.Event()

    class Blocking(FakeEngineer):
        def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
            self.jobs.append(job)
            stop.set()
            assert cancel is not None and cancel.wait(5)
            return EvalResult(FailureClass.INTERRUPTED, "stopped")

    summary = runner(store, config(candidates=1), Blocking(), stop=stop).run()
    assert summary.reason == "stopped" and summary.finished == 0  # interrupted is not finished
    camp = store.list_campaigns()[0]
    assert store.get_campaign(camp.id).status == "paused"
    queued = store.list_experiments(camp.id, status="queued")
    assert queued and all(e.attempts == 0 for e in queued)
    runner(store, config(candidates=1), FakeEngineer(best=0.5)).run()
    assert store.count_experiments(camp.id, status="queued") == 0


def test_proposals_are_the_same_for_the_same_seed() -> None:
    names = []
    for _ in range(2):
        with Store.open("sqlite://") as s:
            runner(s, config(candidates=3), FakeEngineer(best=0.5)).run()
            camp = s.list_campaigns()[0]
            names.append([c.name for c in s.list_candidates(camp.id)])
    assert names[0] == names[1]


def test_experiment_jobs_carry_a_secret_heldout_seed_per_experiment(store: Store) -> None:
    fake = FakeEngineer(best=0.5)
    runner(store, config(candidates=2), fake).run()
    seeds = [j.heldout_seed for j in fake.jobs]
    assert len(set(seeds)) == len(seeds)
    assert all(j.train.seed == j.seed for j in fake.jobs)
    camp = store.list_campaigns()[0]
    stored = json.dumps([e.__dict__ for e in store.list_experiments(camp.id)], default=str)
    assert all(str(s) not in stored for s in seeds)


def test_the_rerun_budget_limits_how_many_candidates_earn_reruns(store: Store) -> None:
    fake = FakeEngineer(best=0.95)
    cfg = config(candidates=4).model_copy(
        update={"budget": Budget(max_candidates=4, max_rerun_candidates=1)}
    )
    runner(store, cfg, fake).run()
    camp = store.list_campaigns()[0]
    rerun = {e.candidate_id for e in store.list_experiments(camp.id) if e.role == "rerun"}
    assert len(rerun) == 1


class LuckyEngineer(FakeEngineer):
    """The best first seed so far is luck: its re-runs score far below DeltaNet, while
    every other candidate's re-runs hold up."""

    def __init__(self) -> None:
        super().__init__(best=0.95)
        self.first_seed: dict[str, float] = {}
        self.lucky: set[str] = set()

    def score(self, job: ExperimentJob) -> float:
        score = super().score(job)
        if "kernels.baselines" in job.code:
            return score
        if job.seed == 0:
            self.first_seed[job.code] = score
            return score
        if self.first_seed.get(job.code) == max(self.first_seed.values()):
            self.lucky.add(job.code)
        return 0.1 if job.code in self.lucky else score


def test_a_candidate_that_won_on_a_lucky_seed_is_neither_parent_nor_leader(
    store: Store,
) -> None:
    fake = LuckyEngineer()
    run = runner(store, config(candidates=6), fake)
    run.run()
    camp = store.list_campaigns()[0]
    cands = {c.id: c for c in store.list_candidates(camp.id)}
    lucky = {cid for cid, c in cands.items() if store.get_code(c.digest) in fake.lucky}
    assert lucky, "the lucky engineer never found a best first seed to re-run"
    exps = store.list_experiments(camp.id)
    lucky_first = max(e.fitness or 0.0 for e in exps if e.candidate_id in lucky and e.seed == 0)
    others_first = [
        e.fitness or 0.0
        for e in exps
        if e.candidate_id not in lucky and e.seed == 0 and e.role == "candidate"
    ]
    assert lucky_first > max(others_first)  # it did win its first seed

    ranked = sorted(
        (v for v in run.archive() if v.fitness is not None), key=lambda v: -(v.fitness or 0.0)
    )
    assert ranked[0].candidate_id not in lucky
    view = next(v for v in ranked if v.candidate_id in lucky)
    assert view.seeds == 3 and view.fitness is not None and view.fitness < 0
    assert view.fitness_spread > 0.3  # +0.3 on its first seed, -0.5 on the others
    # Parents are drawn by rank: it now ranks below every candidate that held up.
    held_up = [v for v in ranked if v.fitness is not None and v.fitness > 0]
    assert held_up and ranked.index(view) > max(ranked.index(v) for v in held_up)
    assert sample_parents(run.archive(), random.Random(0), k=1, top=len(held_up)) != [view]
    rows = build(list(cands.values()), exps, promote_margin=0.01)
    assert rows[0].candidate_id not in lucky
    row = next(r for r in rows if r.candidate_id in lucky)
    assert row.fitness == pytest.approx(view.fitness) and row.status == "scored"


def test_a_tick_with_no_new_result_reads_nothing_and_a_result_is_scored(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = runner(store, config(candidates=2), FakeEngineer(best=0.5))
    run.run()
    reads: list[str] = []
    listing = store.list_experiments

    def counted(*args: object, **kwargs: object) -> object:
        reads.append("list_experiments")
        return listing(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "list_experiments", counted)
    run._finalize_scores()  # the run's own last pass left nothing unscored
    assert reads == []

    done = listing(run.campaign.id)[-1]
    store.enqueue_experiment(run.campaign.id, done.candidate_id, "rerun", 0)
    claimed = store.claim_next_experiment(run.campaign.id, run.lease)  # as the run claims
    assert claimed is not None
    run.record_result(claimed, EvalResult(None, "", metrics=dict(done.metrics or {})))
    run._finalize_scores()
    assert reads  # a result came in: the pass reads the campaign and scores it
    assert store.get_experiment(claimed.id).fitness == pytest.approx(done.fitness)
