"""Replay rung settings over loss curves that ran to the end: what each would have cut.

Reads the curves `scripts/bench_throughput.py --curves FILE` writes, takes the arm whose
candidates all trained to the end ("today"), and replays `node.campaign.rungs` over its
first-seed runs in the order they were made: the baselines' curves first, then each
candidate held to the cuts of the runs before it (a stopped one's curve cut at its
rung). For each setting it prints who would have been stopped where, how many of the
best K by final fitness would have finished, and the share of training steps saved.
Then the same for a loss bound at the recipe's early-abort step (`loop.train`'s
hopeless check, whose bound is 5.5 nats): a run whose training loss there is above the
bound stops there, whatever the others did. The check itself reads a probe batch's loss
and accuracy, which the curves do not hold: the replay reads training loss alone.
Figures, not a verdict: a handful of candidates is a small sample.

    .venv/bin/python scripts/study_rungs.py CURVES.json [--arm today] [--top K]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from loop.train import TrainConfig
from node.campaign.config import Rungs
from node.campaign.rungs import loss_at, rung_cuts

SETTINGS = [(0.25,), (0.25, 0.5), (0.4,), (0.5,), (0.4, 0.67), (0.67,)]
KEEPS = [0.5, 0.67, 0.75]
BOUNDS = [5.5, 4.5, 4.0, 3.5, 3.0, 2.0]  # nats of training loss at the abort step
Run = dict[str, Any]  # one run of bench_throughput's --curves file


def replay(
    rungs: Rungs, baselines: list[Run], cands: list[Run], steps: int
) -> list[tuple[str, int]]:
    """(candidate, step) for each candidate the rungs would have stopped, in run order."""
    every = int(baselines[0]["loss_curve"][0][0])
    pool = [r["loss_curve"] for r in baselines]
    stopped = []
    for run in cands:
        cuts = rung_cuts(rungs, steps, every, pool)
        curve = run["loss_curve"]
        stop = next((s for s, c in cuts if (x := loss_at(curve, s)) is not None and x > c), None)
        if stop is None:
            pool.append(curve)
        else:
            stopped.append((run["candidate"], stop))
            pool.append([p for p in curve if p[0] <= stop])
    return stopped


def bounded(cands: list[Run], step: int, bound: float) -> list[tuple[str, int]]:
    """(candidate, step) for each candidate whose training loss at `step` is above
    `bound`, in run order."""
    return [
        (r["candidate"], step)
        for r in cands
        if (x := loss_at(r["loss_curve"], step)) is not None and x > bound
    ]


def first_runs(path: Path, arm: str = "today") -> tuple[list[Run], list[Run], int]:
    """The arm's first-seed runs with a curve, in run order: (baselines, candidates, the
    recipe's steps)."""
    runs = json.loads(path.read_text())[arm]
    first = [r for r in runs if r["seed"] == 0 and r["loss_curve"]]
    steps = int(max(p[0] for r in first for p in r["loss_curve"]))
    baselines = [r for r in first if r["role"] == "baseline"]
    return baselines, [r for r in first if r["role"] == "candidate"], steps


def by_fitness(cands: list[Run]) -> list[Run]:
    """The scored candidates, best fitness first."""
    return sorted(
        (r for r in cands if r["fitness"] is not None), key=lambda r: -float(r["fitness"])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", type=Path)
    parser.add_argument("--arm", default="today")
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()

    baselines, cands, steps = first_runs(args.curves, args.arm)
    best = by_fitness(cands)
    top = [r["candidate"] for r in best[: args.top]]
    print(f"{len(cands)} candidates, {len(baselines)} baselines, {steps} steps")
    for run in best:
        print(f"  {run['candidate']:<44} fitness {run['fitness']:+.3f}")
    # Steps each run really trained (one stopped early anyway ended before `steps`).
    ran = {r["candidate"]: int(r["loss_curve"][-1][0]) for r in cands}

    def row(first: str, second: str, stopped: list[tuple[str, int]]) -> None:
        gone = {name for name, _ in stopped}
        saved = sum(ran[name] - step for name, step in stopped) / sum(ran.values())
        kept = f"{sum(t not in gone for t in top)}/{len(top)}"
        shown = ", ".join(f"{name}@{step}" for name, step in stopped) or "-"
        print(f"{first:<13} {second:<5} {kept:>9} {saved:6.0%}  {shown}")

    print(f"\n{'rungs':<13} {'keep':<5} {'best kept':>9} {'saved':>6}  stopped (step)")
    for at, keep in itertools.product(SETTINGS, KEEPS):
        row(str(at), str(keep), replay(Rungs(at=at, keep=keep), baselines, cands, steps))
    # The abort step of the recipe these curves ran (steps: the full recipe's or fewer).
    abort = TrainConfig().with_steps(steps).abort_step
    if abort is not None:
        print(f"\n{'loss bound':<13} {'step':<5} {'best kept':>9} {'saved':>6}  stopped (step)")
        for bound in BOUNDS:
            row(f"{bound:.1f} nats", str(abort), bounded(cands, abort, bound))


if __name__ == "__main__":
    main()
