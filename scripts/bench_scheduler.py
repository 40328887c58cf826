"""Benchmark the scheduler's cost per tick as a campaign's archive grows.

The campaign runner ticks every 0.5 s at most while its workers train. A tick with no new
result should cost the same with 500 archived experiments as with 5,000; a pass that
scores a new result reads the campaign (the archive, each candidate's code) and grows
with it, but runs once per result, not once per tick.

For each archive size: a campaign in a SQLite file with that many scored candidate
experiments, then the mean time of an idle tick (nothing finished since the last pass),
of a pass that scores one new result (what every tick cost before: each read the whole
campaign) and of `archive()`; ratios against the smallest size.

    python scripts/bench_scheduler.py [--sizes 500,1000,2000,5000] [--ticks 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

from attestation.schema import ExperimentRole, ExperimentStatus  # noqa: E402
from loop.proposal import Proposal  # noqa: E402
from node.campaign.config import Budget, CampaignConfig  # noqa: E402
from node.campaign.scheduler import CampaignRunner, baseline_code  # noqa: E402
from node.store import Store  # noqa: E402

SETS = ("32x4", "64x8", "64x16", "128x32")


def metrics(score: float) -> dict[str, float]:
    return {f"acc_{s}": score for s in SETS} | {
        "mean_acc": score,
        "state_size": 4352.0,
        "params": 42000.0,
    }


def finished(store: Store, cid: str, proposal: Proposal, role: str, score: float) -> str:
    """A done experiment of a new candidate, not scored yet: its id."""
    cand = store.add_candidate(cid, proposal)
    store.enqueue_experiment(cid, cand.id, role, 0)
    exp = store.claim_next_experiment(cid)
    assert exp is not None
    store.finish_experiment(exp.id, ExperimentStatus.DONE, metrics=metrics(score))
    return exp.id


def scored(store: Store, cid: str, proposal: Proposal, role: str, fitness: float) -> None:
    exp_id = finished(store, cid, proposal, role, 0.5 + fitness)
    store.set_experiment_score(exp_id, fitness, "fitness-v1", "scored by the bench")


def candidate(i: int) -> Proposal:
    code = f"# candidate {i}\nfrom kernels.baselines import LinearAttention as Mixer\n"
    return Proposal(f"cand-{i}", "bench", code)


def archive_of(store: Store, size: int) -> CampaignRunner:
    """A campaign with two scored baselines and `size` scored candidates."""
    config = CampaignConfig(
        preset="quick", baselines=("deltanet", "linear"), budget=Budget(max_candidates=size)
    )
    camp = store.create_campaign(f"bench-{size}", config.model_dump(mode="json"))
    for name in config.baselines:
        proposal = Proposal(name, f"baseline {name}", baseline_code(name), origin="baseline")
        scored(store, camp.id, proposal, ExperimentRole.BASELINE, 0.0)
    for i in range(size):
        scored(store, camp.id, candidate(i), ExperimentRole.CANDIDATE, (i % 200 - 100) / 1000)
    return CampaignRunner(store, camp, None, 2, 1, b"s" * 32)  # type: ignore[arg-type]


def mean_seconds(fn: Callable[[], object], reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def scoring_seconds(runner: CampaignRunner, reps: int) -> float:
    """The mean time of a pass that scores one new result (added untimed before each)."""
    total = 0.0
    for rep in range(reps):
        cid = runner.campaign.id
        finished(runner.store, cid, candidate(10**6 + rep), ExperimentRole.CANDIDATE, 0.5)
        runner._unscored = True  # as record_result marks it
        start = time.perf_counter()
        runner._finalize_scores()
        total += time.perf_counter() - start
    return total / reps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,1000,2000,5000")
    parser.add_argument("--ticks", type=int, default=2000, help="idle ticks timed per size")
    parser.add_argument("--passes", type=int, default=3, help="scoring passes timed per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"scheduler ticks: archive sizes {sizes}, SQLite file, 1 process")
    print(
        f"{'archived':>9} {'idle tick':>11} {'x':>6} {'scoring pass':>13} {'x':>6}"
        f" {'archive()':>10}"
    )
    base: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory(prefix="bench_scheduler_") as tmp:
        for size in sizes:
            with Store.open(f"sqlite:///{Path(tmp) / f'{size}.db'}") as store:
                built = time.perf_counter()
                runner = archive_of(store, size)
                built = time.perf_counter() - built
                runner._finalize_scores()  # the pass at start; nothing is left to score

                idle = mean_seconds(runner._finalize_scores, args.ticks)
                full = scoring_seconds(runner, args.passes)
                arch = mean_seconds(runner.archive, args.passes)
                base = base or (idle, full)
                print(
                    f"{size:>9} {idle * 1e6:>9.2f}us {idle / base[0]:>6.2f} "
                    f"{full * 1e3:>11.1f}ms {full / base[1]:>6.2f} {arch * 1e3:>8.1f}ms"
                    f"   (built in {built:.0f} s)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
