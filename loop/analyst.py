"""The Analyst: a versioned fitness function, promotion, written analysis and insights.

Every score is relative to a baseline trained on the same seed (DeltaNet by default), so
seed luck cancels out, and a larger recurrent state costs fitness: recall grows with state,
and a mixer that wins only by holding more state has found nothing. On MQAR the score is
mean recall accuracy (fitness-v1). On the language-model task, lm-fitness-v1 adds the
reference's held-out loss minus the candidate's (nats per token on the campaign's
held-out windows, the same for every experiment) and the candidate's mean zero-shot
benchmark accuracy minus the reference's (when the campaign stages benchmarks), each
with its standard error, which the fitness carries in its components.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

FITNESS_VERSION = "fitness-v1"
LM_FITNESS_VERSION = "lm-fitness-v1"
STATE_PENALTY = 0.05  # fitness lost per doubling of state over the reference's
# Fitness per unit of mean benchmark accuracy: a point of accuracy counts as 0.01 nats of
# held-out loss, about what separates close candidates on either at this scale.
BENCH_WEIGHT = 1.0


@dataclass(frozen=True)
class Scores:
    """The evaluator's numbers for one trained model, as the Analyst reads them."""

    score: float  # higher is better: mean accuracy (MQAR) or minus held-out loss (LM)
    per_set: Mapping[str, float] = field(default_factory=dict)
    state_size: int | None = None
    params: int | None = None
    heldout_loss: float | None = None  # the LM task's; None on MQAR
    heldout_loss_stderr: float | None = None
    bench_acc: float | None = None  # mean headline accuracy over the staged benchmarks
    bench_acc_stderr: float | None = None

    def describe(self) -> str:
        if self.heldout_loss is None:
            return f"{self.score:.3f}"
        ppl = math.exp(self.heldout_loss) if self.heldout_loss < 700 else math.inf
        loss = f"{self.heldout_loss:.3f}{_pm(self.heldout_loss_stderr)}"
        text = f"heldout_loss {loss} (ppl {ppl:.1f})"
        if self.bench_acc is not None:
            text += f", benchmarks {self.bench_acc:.3f}{_pm(self.bench_acc_stderr)}"
        return text

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
            heldout_loss_stderr=metrics.get("heldout_loss_stderr"),
            bench_acc=metrics.get("bench_mean_acc"),
            bench_acc_stderr=metrics.get("bench_mean_acc_stderr"),
        )


def _pm(stderr: float | None) -> str:
    return "" if stderr is None else f" ± {stderr:.3f}"


@dataclass(frozen=True)
class Fitness:
    """A fitness value with the version of the function that computed it and its parts."""

    version: str
    value: float
    components: Mapping[str, float]


def _state_penalty(candidate: Scores, reference: Scores) -> tuple[float, float]:
    """(state ratio, penalty): 0.05 per doubling of state over the reference's."""
    ratio = 1.0
    if candidate.state_size and reference.state_size:
        ratio = candidate.state_size / reference.state_size
    return ratio, STATE_PENALTY * max(0.0, math.log2(ratio))


def fitness(candidate: Scores, reference: Scores) -> Fitness:
    """fitness-v1 = (score - reference score) - 0.05 * max(0, log2(state / reference state));
    on the LM task (both with a held-out loss), lm_fitness."""
    if candidate.heldout_loss is not None and reference.heldout_loss is not None:
        return lm_fitness(candidate, reference)
    gain = candidate.score - reference.score
    ratio, penalty = _state_penalty(candidate, reference)
    return Fitness(
        version=FITNESS_VERSION,
        value=gain - penalty,
        components={"gain": gain, "state_ratio": ratio, "state_penalty": penalty},
    )


def _combined(*errors: float | None) -> float | None:
    """The standard error of a sum or difference of independent estimates."""
    if any(e is None for e in errors):
        return None
    return math.sqrt(sum(e * e for e in errors if e is not None))


def lm_fitness(candidate: Scores, reference: Scores) -> Fitness:
    """lm-fitness-v1 = (reference heldout_loss - candidate's)
    + 1.0 * (candidate bench_mean_acc - reference's) - 0.05 * max(0, log2(state ratio)).

    The benchmark term is 0 when either run has no benchmark scores (a campaign that
    stages none). Components keep each term's standard error beside it (`*_stderr`), and
    the value's (`stderr`), taking the two runs' errors as independent: both are scored
    on the same held-out windows and benchmark items, so the errors are positively
    correlated and these standard errors are upper bounds."""
    assert candidate.heldout_loss is not None and reference.heldout_loss is not None
    loss_gain = reference.heldout_loss - candidate.heldout_loss
    loss_stderr = _combined(candidate.heldout_loss_stderr, reference.heldout_loss_stderr)
    bench_gain, bench_stderr = 0.0, None
    terms = [loss_stderr]
    if candidate.bench_acc is not None and reference.bench_acc is not None:
        bench_gain = candidate.bench_acc - reference.bench_acc
        bench_stderr = _combined(candidate.bench_acc_stderr, reference.bench_acc_stderr)
        terms.append(None if bench_stderr is None else BENCH_WEIGHT * bench_stderr)
    ratio, penalty = _state_penalty(candidate, reference)
    gain = loss_gain + BENCH_WEIGHT * bench_gain
    components = {
        "gain": gain,
        "loss_gain": loss_gain,
        "bench_gain": bench_gain,
        "state_ratio": ratio,
        "state_penalty": penalty,
    }
    if loss_stderr is not None:
        components["loss_gain_stderr"] = loss_stderr
    if bench_stderr is not None:
        components["bench_gain_stderr"] = bench_stderr
    stderr = _combined(*terms)
    if stderr is not None:
        components["stderr"] = stderr
    return Fitness(version=LM_FITNESS_VERSION, value=gain - penalty, components=components)


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


@dataclass(frozen=True)
class OverSeeds:
    """A candidate's fitness over every seed scored so far: what ranks it, so a lucky first
    seed stops counting once its re-runs come in."""

    mean: float
    spread: float  # sample standard deviation; 0 with one seed
    seeds: int


def over_seeds(fitnesses: Sequence[float]) -> OverSeeds | None:
    """None before any seed is scored."""
    if not fitnesses:
        return None
    mean = sum(fitnesses) / len(fitnesses)
    spread = statistics.stdev(fitnesses) if len(fitnesses) > 1 else 0.0
    return OverSeeds(mean, spread, len(fitnesses))


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
        f"(fitness {fit.value:+.3f}{_pm(fit.components.get('stderr'))}, {fit.version}; "
        f"state x{fit.components['state_ratio']:.2f})."
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
