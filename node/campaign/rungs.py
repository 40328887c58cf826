"""Early stopping on the learning curve: asynchronous successive halving over a campaign.

A screening campaign spends most of its compute on candidates that end below the field.
With `[rungs]` in its config, a generated candidate's first run is held, at each rung (a
fraction of the recipe's steps, rounded to a logged step), to a cut: the loss below which
the best `keep` share of the campaign's runs on the same seed were at that step (every run
that got there counts, stopped ones included, as in ASHA: Li et al., 2020, "A System for
Massively Parallel Hyperparameter Tuning"). Same seed means the same training batches, so
the losses compare like for like. A run above the cut stops as 'outpaced'.

The cuts are computed when the job is built, from what the store holds then, and travel
in the job's recipe (`TrainConfig.rungs`), so the run's record says what it was held to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from node.campaign.config import Rungs


def rung_steps(rungs: Rungs, steps: int, log_every: int) -> tuple[int, ...]:
    """The logged steps the rungs fall on: each fraction of `steps`, rounded to a multiple
    of `log_every`; rungs that round to 0 or to the last step (or past it) are dropped."""
    picked = {round(f * steps / log_every) * log_every for f in rungs.at}
    return tuple(sorted(s for s in picked if 0 < s < steps))


def loss_at(curve: Sequence[Sequence[float]], step: int) -> float | None:
    """The curve's entry at exactly `step` (the mean loss of the interval ending there)."""
    for at, loss in curve:
        if int(at) == step:
            return float(loss) if math.isfinite(loss) else None
    return None


def rung_cuts(
    rungs: Rungs,
    steps: int,
    log_every: int,
    curves: Iterable[Sequence[Sequence[float]]],
) -> tuple[tuple[int, float], ...]:
    """(step, cut) per rung that at least `rungs.min_peers` of `curves` reached: the
    largest loss among the best `keep` share of theirs at that step."""
    peers = [list(c) for c in curves]
    cuts = []
    for step in rung_steps(rungs, steps, log_every):
        losses = sorted(x for c in peers if (x := loss_at(c, step)) is not None)
        if len(losses) >= rungs.min_peers:
            cuts.append((step, losses[max(1, math.ceil(rungs.keep * len(losses))) - 1]))
    return tuple(cuts)


def peer_curves(
    runs: Iterable[tuple[str, int, Mapping[str, Any] | None]], candidate_id: str, seed: int
) -> list[Sequence[Sequence[float]]]:
    """The loss curves of runs (candidate id, seed, train log) on `seed` by other
    candidates than `candidate_id`."""
    return [
        train["loss_curve"]
        for cand, run_seed, train in runs
        if cand != candidate_id and run_seed == seed and train and train.get("loss_curve")
    ]
