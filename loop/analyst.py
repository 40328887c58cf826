"""The Analyst: a versioned fitness function, promotion, written analysis and insights.

Every score is relative to a baseline trained on the same seed (DeltaNet by default), so
seed luck cancels out, and a larger recurrent state costs fitness: recall grows with state,
and a mixer that wins only by holding more state has found nothing. On MQAR the score is
mean recall accuracy; on the language-model task it is minus the held-out loss (nats per
token on the campaign's held-out windows, the same for every experiment), so fitness-v1
is the reference's loss minus the candidate's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

FITNESS_VERSION = "fitness-v1"
STATE_PENALTY = 0.05  # fitness lost per doubling of state over the reference's


@dataclass(frozen=True)
class Scores:
    """The evaluator's numbers for one trained model, as the Analyst reads them."""

    score: float  # higher is better: mean accuracy (MQAR) or minus held-out loss (LM)
    per_set: Mapping[str, float] = field(default_factory=dict)
    state_size: int | None = None
    params: int | None = None
    heldout_loss: float | None = None  # the LM task's; None on MQAR

    def describe(self) -> str:
        if self.heldout_loss is None:
            return f"{self.score:.3f}"
        ppl = math.exp(self.heldout_loss) if self.heldout_loss < 700 else math.inf
        return f"heldout_loss {self.heldout_loss:.3f} (ppl {ppl:.1f})"

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> Scores:
        """Read the evaluator's flat metric dict (see loop.evaluate)."""
        loss = None
        if "mean_acc" in metrics:
            score = metrics["mean_acc"]
        elif "heldout_loss" in metrics:
            loss = float(metrics["heldout_loss"])
            score = -loss
        else:
            raise ValueError("metrics have neither mean_acc nor heldout_loss")
        per_set = {k.removeprefix("acc_"): v for k, v in metrics.items() if k.startswith("acc_")}
        state = metrics.get("state_size")
        params = metrics.get("params")
        return cls(
            score=float(score),
            per_set=per_set,
            state_size=int(state) if state else None,
            params=int(params) if params else None,
            heldout_loss=loss,
        )


@dataclass(frozen=True)
class Fitness:
    """A fitness value with the version of the function that computed it and its parts."""

    version: str
    value: float
    components: Mapping[str, float]


def fitness(candidate: Scores, reference: Scores) -> Fitness:
    """fitness-v1 = (score - reference score) - 0.05 * max(0, log2(state / reference state))."""
    gain = candidate.score - reference.score
    ratio = 1.0
    if candidate.state_size and reference.state_size:
        ratio = candidate.state_size / reference.state_size
    penalty = STATE_PENALTY * max(0.0, math.log2(ratio))
    return Fitness(
        version=FITNESS_VERSION,
        value=gain - penalty,
        components={"gain": gain, "state_ratio": ratio, "state_penalty": penalty},
    )


@dataclass(frozen=True)
class Promotion:
    """Whether a candidate is promoted after its re-runs, and why."""

    promoted: bool
    mean_fitness: float
    seeds: int
    reason: str


def needs_reruns(first: Fitness, margin: float) -> bool:
    """A first run above the margin earns re-runs on more seeds before anyone trusts it."""
    return first.value > margin


def promotion(fitnesses: Sequence[float], margin: float, seeds_needed: int) -> Promotion:
    """Promote when every seed has run and the mean fitness stays above the margin."""
    if len(fitnesses) < seeds_needed:
        return Promotion(False, math.nan, len(fitnesses), "waiting for re-runs")
    mean = sum(fitnesses) / len(fitnesses)
    if mean > margin:
        return Promotion(True, mean, len(fitnesses), f"mean fitness {mean:+.3f} over {margin:+.3f}")
    return Promotion(
        False, mean, len(fitnesses), f"mean fitness {mean:+.3f} not over {margin:+.3f}"
    )


@dataclass(frozen=True)
class Analysis:
    """The Analyst's written account of one experiment and the insights it yields."""

    text: str
    insights: tuple[str, ...]


def analyse(
    name: str,
    candidate: Scores,
    reference: Scores,
    reference_name: str,
    fit: Fitness,
    parent: Scores | None = None,
    parent_name: str | None = None,
    changes: Sequence[str] = (),
) -> Analysis:
    """A short analysis in the task's vocabulary (accuracy per test set, state size)."""
    lines = [
        f"{name}: score {candidate.describe()} vs {reference_name} {reference.describe()} "
        f"(fitness {fit.value:+.3f}, {fit.version}; state x{fit.components['state_ratio']:.2f})."
    ]
    insights: list[str] = []
    if candidate.per_set and reference.per_set:
        gaps = {k: candidate.per_set[k] - reference.per_set.get(k, 0.0) for k in candidate.per_set}
        best = max(gaps, key=lambda k: gaps[k])
        worst = min(gaps, key=lambda k: gaps[k])
        lines.append(
            f"Per test set against {reference_name}: "
            + ", ".join(f"{k} {gaps[k]:+.3f}" for k in candidate.per_set)
            + f". Strongest on {best}, weakest on {worst}."
        )
        hardest = min(candidate.per_set, key=lambda k: candidate.per_set[k])
        if candidate.per_set[hardest] < 0.5 <= max(candidate.per_set.values()):
            lines.append(
                f"Recall collapses on {hardest} ({candidate.per_set[hardest]:.3f}): more pairs "
                "than the state holds cleanly; interference, not learning, is the limit."
            )
    if parent is not None and parent_name is not None:
        delta = candidate.score - parent.score
        change_text = "; ".join(changes) if changes else "a rewrite"
        lines.append(f"Against parent {parent_name}: {delta:+.3f} after {change_text}.")
        if abs(delta) >= 0.02:
            verdict = "helped" if delta > 0 else "hurt"
            detail = ""
            if candidate.per_set and parent.per_set:
                moved = max(
                    candidate.per_set,
                    key=lambda k: abs(candidate.per_set[k] - parent.per_set.get(k, 0.0)),
                )
                shift = candidate.per_set[moved] - parent.per_set.get(moved, 0.0)
                detail = f", most on {moved} ({shift:+.3f})"
            if candidate.heldout_loss is None:
                insights.append(f"{change_text} {verdict} recall by {delta:+.3f}{detail}.")
            else:
                insights.append(f"{change_text} {verdict}: held-out loss {-delta:+.3f} nats.")
    if fit.components["state_penalty"] > 0:
        insights.append(
            f"{name} pays {fit.components['state_penalty']:.3f} fitness for a state "
            f"x{fit.components['state_ratio']:.2f} the reference's: gains must come at equal state."
        )
    return Analysis(" ".join(lines), tuple(insights))
