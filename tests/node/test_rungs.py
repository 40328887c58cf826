"""Early stopping on the learning curve: the cuts, the config, and a campaign that uses them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeEngineer

from loop.engineer import EvalResult, ExperimentJob
from loop.outcome import FailureClass
from loop.train import TrainConfig
from node.campaign.config import Budget, CampaignConfig, Rungs, Verify, parse_config
from node.campaign.leaderboard import build
from node.campaign.rungs import loss_at, peer_curves, rung_cuts, rung_steps
from node.campaign.scheduler import CampaignRunner
from node.errors import ConfigError
from node.store import Store
from scripts import study_rungs


def curve(*losses: float, every: int = 100) -> list[list[float]]:
    return [[every * (i + 1), x] for i, x in enumerate(losses)]


def test_rungs_fall_on_logged_steps_and_skip_the_ends() -> None:
    assert rung_steps(Rungs(at=(0.25, 0.5)), 1500, 25) == (375, 750)
    assert rung_steps(Rungs(at=(0.3,)), 1000, 25) == (300,)
    assert rung_steps(Rungs(at=(0.01, 0.99)), 100, 25) == ()  # to 0 and to the last step


def test_a_cut_is_the_worst_loss_of_the_best_keep_share_at_that_step() -> None:
    peers = [curve(5.0, 4.0), curve(5.5, 3.0), curve(6.0, 2.0), curve(4.5, 1.0)]
    rungs = Rungs(at=(0.25, 0.5), keep=0.5, min_peers=4)
    # losses at 100: 4.5 5.0 5.5 6.0 -> the better half ends at 5.0; at 200: 1 2 3 4 -> 2.0
    assert rung_cuts(rungs, 400, 100, peers) == ((100, 5.0), (200, 2.0))
    quarter = Rungs(at=(0.25,), keep=0.25, min_peers=3)
    assert rung_cuts(quarter, 400, 100, peers) == ((100, 4.5),)  # only the best goes on
    # Too few runs reached the step: no cut there (a run stopped at 100 has no 200).
    short = [curve(5.0), curve(5.5), curve(6.0), curve(4.5, 1.0)]
    assert rung_cuts(rungs, 400, 100, short) == ((100, 5.0),)
    assert loss_at(curve(5.0, float("nan")), 200) is None


def test_peers_are_other_candidates_runs_on_the_same_seed() -> None:
    runs = [
        ("base", 0, {"loss_curve": curve(5.0)}),
        ("base", 1, {"loss_curve": curve(4.0)}),  # a re-run seed: other batches
        ("me", 0, {"loss_curve": curve(3.0)}),  # the candidate itself
        ("other", 0, None),  # queued, never trained
        ("third", 0, {"loss_curve": curve(6.0)}),
    ]
    assert peer_curves(runs, "me", 0) == [curve(5.0), curve(6.0)]


@pytest.mark.parametrize(
    ("rungs", "message"),
    [
        ({"at": [0.5, 0.25]}, "increasing"),
        ({"at": [0.0]}, "strictly between 0 and 1"),
        ({"at": []}, "strictly between 0 and 1"),
        ({"keep": 0}, "rungs.keep"),
        ({"min_peers": 0}, "rungs.min_peers"),
    ],
)
def test_bad_rungs_are_named(rungs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"rungs": rungs})


def test_rungs_hash_into_the_config_and_a_config_without_them_hashes_as_before() -> None:
    plain = CampaignConfig()
    assert "rungs" not in plain.model_dump(mode="json")
    assert CampaignConfig(rungs=Rungs()).config_hash() != plain.config_hash()
    with pytest.raises(ValueError, match="verification stage"):
        CampaignConfig(rungs=Rungs(), verify=Verify(source="explore"))


class CurveEngineer(FakeEngineer):
    """Training curves from the fake score (a better candidate's loss falls faster), held to
    the job's rungs as loop.train holds a real run."""

    def run(self, job: ExperimentJob, cancel: object = None) -> EvalResult:
        with self.lock:
            self.jobs.append(job)
        score = self.score(job) + 0.002 * job.seed
        steps, every = job.train.steps, job.train.log_every
        losses = [(s, 4.0 - 3.0 * score * s / steps) for s in range(every, steps + 1, every)]
        for step, cut in job.train.rungs:
            loss = dict(losses)[step]
            if loss > cut:
                kept = [[s, x] for s, x in losses if s <= step]
                return EvalResult(
                    FailureClass.OUTPACED,
                    f"after {step} steps loss {loss:.3f}, behind the cut {cut:.3f}",
                    train={"loss_curve": kept, "steps_done": step},
                )
        metrics = {"mean_acc": score, "state_size": 4096.0, "params": 20000.0}
        metrics |= {f"acc_{s}": score for s in ("64x8", "128x16", "128x32", "256x64")}
        return EvalResult(
            None,
            "",
            metrics=metrics,
            train={"loss_curve": [[s, x] for s, x in losses], "steps_done": steps},
            timings={"total_s": 1.0, "train_s": 0.9},
        )


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


def test_a_campaign_with_rungs_stops_the_runs_behind_and_never_a_baseline(store: Store) -> None:
    cfg = CampaignConfig(
        preset="quick",
        baselines=("deltanet", "linear"),
        budget=Budget(max_candidates=10),
        rungs=Rungs(at=(0.25, 0.5), keep=0.5, min_peers=3),
    )
    camp = store.create_campaign("t", cfg.model_dump(mode="json"))
    fake = CurveEngineer(best=0.9)
    CampaignRunner(
        store,
        camp,
        fake,
        workers=1,
        threads_per_worker=1,
        node_secret=b"s" * 32,
    ).run()

    exps = {e.id: e for e in store.list_experiments(camp.id)}
    by_code: dict[str, list[ExperimentJob]] = {}
    for job in fake.jobs:
        by_code.setdefault(job.code, []).append(job)
    cut_jobs = [j for j in fake.jobs if j.train.rungs]
    assert cut_jobs, "no run was ever held to a rung"
    for job in fake.jobs:
        exp = exps[job.experiment_id]
        if exp.role != "candidate" or exp.seed != cfg.seed:
            assert job.train.rungs == ()  # baselines and re-runs train to the end
            continue
        # Each first run's cuts are those of the runs that finished before it on seed 0.
        before = [
            e
            for e in exps.values()
            if e.seed == 0 and e.candidate_id != exp.candidate_id and e.seq < exp.seq
        ]
        peers = peer_curves(((e.candidate_id, e.seed, e.train) for e in before), "", 0)
        assert job.train.rungs == rung_cuts(cfg.rungs, 1200, 25, peers)  # type: ignore[arg-type]

    outpaced = [e for e in exps.values() if e.failure_class == "outpaced"]
    assert outpaced and all(e.role == "candidate" and e.seed == 0 for e in outpaced)
    assert all("behind the cut" in e.analysis for e in outpaced)
    # An outpaced candidate has no score: it is no leader and never re-run.
    rows = build(store.list_candidates(camp.id), list(exps.values()), promote_margin=0.01)
    stopped = {e.candidate_id for e in outpaced}
    assert rows[0].candidate_id not in stopped
    assert not [e for e in exps.values() if e.candidate_id in stopped and e.seed != 0]


@pytest.mark.parametrize(
    ("sample", "best_kept", "stopped_at_1000", "best_kept_before"),
    [("mqar_full_curves.json", 3, 5, 1), ("mqar_full_curves_next8.json", 2, 4, 0)],
)
def test_the_default_rungs_on_recorded_full_recipe_curves(
    sample: str, best_kept: int, stopped_at_1000: int, best_kept_before: int
) -> None:
    """Generated candidates trained to the end at the full MQAR recipe (tests/node/data).
    In the first sample the second and third best left the plateau only near 50 % of the
    steps: the default rung lets the best three finish and stops the five that ended
    last. In the second, the second best was behind the cut at step 1,000 (loss 0.19;
    held-out fitness later ranked it above runs with lower training loss) and is stopped.
    The rungs at a quarter and a half that were the default before kept one and none of
    the best three."""
    baselines, cands, steps = study_rungs.first_runs(Path(__file__).parent / "data" / sample)
    best = {r["candidate"] for r in study_rungs.by_fitness(cands)[:3]}
    stopped = dict(study_rungs.replay(Rungs(), baselines, cands, steps))
    assert len(best - set(stopped)) == best_kept
    assert len(stopped) == stopped_at_1000 and set(stopped.values()) == {1000}
    early = dict(study_rungs.replay(Rungs(at=(0.25, 0.5), keep=0.5), baselines, cands, steps))
    assert len(best - set(early)) == best_kept_before


@pytest.mark.parametrize(
    ("sample", "stopped_at_3_5"), [("mqar_full_curves.json", 3), ("mqar_full_curves_next8.json", 2)]
)
def test_a_loss_bound_at_the_abort_step_on_recorded_curves(
    sample: str, stopped_at_3_5: int
) -> None:
    """The hopeless check's loss bound (5.5 nats) stops none of the recorded candidates:
    those that never learnt sat on a plateau near 4.7 nats. A bound of 3.5 at the same
    step stops the ones still above it and none of the best three (training loss only;
    the check reads a probe batch)."""
    _, cands, steps = study_rungs.first_runs(Path(__file__).parent / "data" / sample)
    abort = TrainConfig().abort_step
    assert abort is not None and steps == TrainConfig().steps
    assert study_rungs.bounded(cands, abort, TrainConfig().abort_min_loss) == []
    stopped = dict(study_rungs.bounded(cands, abort, 3.5))
    assert len(stopped) == stopped_at_3_5
    best = {r["candidate"] for r in study_rungs.by_fitness(cands)[:3]}
    assert not best & set(stopped)
    # ... and they are the ones that ended last.
    worst = {r["candidate"] for r in study_rungs.by_fitness(cands)[-stopped_at_3_5:]}
    assert set(stopped) == worst
