"""The Analyst's fitness, promotion and analysis, and the archive's sampling and novelty."""

from __future__ import annotations

import random

import pytest

from loop.analyst import (
    BENCH_WEIGHT,
    FITNESS_VERSION,
    LM_FITNESS_VERSION,
    Scores,
    analyse,
    fitness,
    needs_reruns,
    promotion,
)
from loop.archive import (
    Behaviour,
    behaviour_twin,
    code_fingerprint,
    ranked,
    sample_parents,
    sample_references,
)
from loop.engineer import benchmark_metrics
from loop.proposal import ArchiveView


def scores(acc: float, state: int = 4096, per_set: dict[str, float] | None = None) -> Scores:
    return Scores(acc, per_set or {"64x8": acc, "256x64": acc}, state_size=state, params=1000)


def test_fitness_is_the_gain_over_the_reference_at_equal_state() -> None:
    fit = fitness(scores(0.7), scores(0.6))
    assert fit.version == FITNESS_VERSION
    assert fit.value == pytest.approx(0.1)
    assert fit.components["state_penalty"] == 0


def test_a_bigger_state_costs_fitness_per_doubling() -> None:
    fit = fitness(scores(0.7, state=16384), scores(0.6, state=4096))
    assert fit.components["state_ratio"] == 4
    assert fit.value == pytest.approx(0.1 - 2 * 0.05)
    smaller = fitness(scores(0.7, state=1024), scores(0.6, state=4096))
    assert smaller.value == pytest.approx(0.1)  # a smaller state is not rewarded twice


def test_scores_read_the_evaluators_metric_names() -> None:
    s = Scores.from_metrics({"mean_acc": 0.5, "acc_64x8": 0.9, "state_size": 10.0, "params": 7.0})
    assert (s.score, s.per_set, s.state_size, s.params) == (0.5, {"64x8": 0.9}, 10, 7)
    assert Scores.from_metrics({"heldout_loss": 2.0}).score == -2.0
    with pytest.raises(ValueError, match="neither"):
        Scores.from_metrics({"params": 1.0})


def lm_scores(loss: float, bench: float | None, state: int = 4096) -> Scores:
    metrics = {"heldout_loss": loss, "heldout_loss_stderr": 0.003, "state_size": float(state)}
    if bench is not None:
        metrics |= {"bench_mean_acc": bench, "bench_mean_acc_stderr": 0.004}
    return Scores.from_metrics(metrics)


def test_lm_fitness_adds_benchmark_accuracy_to_the_loss_gain_with_standard_errors() -> None:
    fit = fitness(lm_scores(3.10, 0.42, state=8192), lm_scores(3.15, 0.40))
    assert fit.version == LM_FITNESS_VERSION
    assert fit.components["loss_gain"] == pytest.approx(0.05)
    assert fit.components["bench_gain"] == pytest.approx(0.02)
    assert fit.value == pytest.approx(0.05 + BENCH_WEIGHT * 0.02 - 0.05)  # one doubling
    assert fit.components["loss_gain_stderr"] == pytest.approx(0.003 * 2**0.5)
    assert fit.components["bench_gain_stderr"] == pytest.approx(0.004 * 2**0.5)
    assert fit.components["stderr"] == pytest.approx((2 * 0.003**2 + 2 * 0.004**2) ** 0.5)
    # A campaign without benchmarks: the loss gain alone, as fitness-v1 had it.
    plain = fitness(lm_scores(3.10, None), lm_scores(3.15, None))
    assert plain.value == pytest.approx(0.05) and plain.components["bench_gain"] == 0
    assert plain.components["stderr"] == pytest.approx(0.003 * 2**0.5)
    text = analyse("c", lm_scores(3.10, 0.42), lm_scores(3.15, 0.40), "deltanet", fit).text
    assert "heldout_loss 3.100 ± 0.003" in text and "benchmarks 0.420 ± 0.004" in text
    assert f"± {fit.components['stderr']:.3f}, lm-fitness-v1" in text


def test_mqar_fitness_is_unchanged_by_the_lm_fitness() -> None:
    fit = fitness(scores(0.7), scores(0.6))
    assert fit.version == FITNESS_VERSION and set(fit.components) == {
        "gain",
        "state_ratio",
        "state_penalty",
    }


def test_benchmark_metrics_average_each_benchmarks_headline_accuracy() -> None:
    piqa = {"name": "piqa", "items": 4, "headline": "acc", "acc": 0.5, "acc_stderr": 0.3}
    piqa |= {"acc_norm": 0.75, "acc_norm_stderr": 0.25}
    lambada = {"name": "lambada_openai", "items": 5, "headline": "acc", "acc": 0.2}
    lambada |= {"acc_stderr": 0.2, "perplexity": float("inf"), "perplexity_stderr": 1.0}
    hella = {"name": "hellaswag", "items": 4, "headline": "acc_norm", "acc": 0.0}
    hella |= {"acc_stderr": 0.0, "acc_norm": 0.5, "acc_norm_stderr": 0.4}
    out = benchmark_metrics([piqa, lambada, hella])
    assert out["bench_mean_acc"] == pytest.approx((0.5 + 0.2 + 0.5) / 3)
    assert out["bench_mean_acc_stderr"] == pytest.approx((0.3**2 + 0.2**2 + 0.4**2) ** 0.5 / 3)
    assert out["bench_piqa_acc_norm"] == 0.75 and out["bench_lambada_openai_items"] == 5
    assert "bench_lambada_openai_ppl" not in out  # records are strict JSON: no infinity
    assert out["bench_lambada_openai_ppl_stderr"] == 1.0


def test_promotion_waits_for_every_seed_and_uses_the_mean() -> None:
    assert not promotion([0.1], 0.0, 3).promoted
    assert promotion([0.1, 0.05, -0.02], 0.0, 3).promoted
    assert not promotion([0.1, -0.1, -0.05], 0.0, 3).promoted
    assert needs_reruns(fitness(scores(0.7), scores(0.6)), 0.0)
    assert not needs_reruns(fitness(scores(0.5), scores(0.6)), 0.0)


def test_analysis_names_test_sets_and_changes_and_yields_insights() -> None:
    cand = scores(0.6, per_set={"64x8": 0.99, "256x64": 0.21})
    parent = scores(0.4, per_set={"64x8": 0.9, "256x64": 0.1})
    ref = scores(0.5, per_set={"64x8": 0.95, "256x64": 0.05})
    text = analyse(
        "c", cand, ref, "deltanet", fitness(cand, ref), parent, "p", ["decay: none -> dd"]
    )
    assert "256x64" in text.text and "deltanet" in text.text and "parent p" in text.text
    assert any("decay: none -> dd helped" in i for i in text.insights)


def view(cid: str, fit: float | None, accs: dict[str, float] | None = None) -> ArchiveView:
    return ArchiveView(cid, cid, "", "", fit, accs or {}, 4096)


def test_parents_come_from_the_top_and_are_deterministic_for_a_seed() -> None:
    archive = [view(f"c{i}", i / 10) for i in range(20)] + [view("unscored", None)]
    assert [v.candidate_id for v in ranked(archive)[:2]] == ["c19", "c18"]
    picks = sample_parents(archive, random.Random(1), k=2, top=5)
    assert len({p.candidate_id for p in picks}) == 2
    assert all(p.fitness is not None and p.fitness >= 1.5 for p in picks)
    again = sample_parents(archive, random.Random(1), k=2, top=5)
    assert picks == again
    refs = sample_references(archive, random.Random(1), exclude=picks)
    assert refs and not {r.candidate_id for r in refs} & {p.candidate_id for p in picks}


def test_code_fingerprint_ignores_comments_docstrings_and_layout() -> None:
    a = 'def f(x):\n    """doc"""\n    return x + 1  # one\n'
    b = "def f(x):\n    return (x +\n            1)\n"
    c = "def f(x):\n    return x + 2\n"
    assert code_fingerprint(a) == code_fingerprint(b) != code_fingerprint(c)
    assert code_fingerprint("def (").startswith("text:")


def test_behaviour_twins_are_found_within_tolerance() -> None:
    archive = [
        view("a", 0.1, {"64x8": 0.9, "256x64": 0.3}),
        view("b", 0.0, {"64x8": 0.5, "256x64": 0.1}),
    ]
    near = Behaviour.of({"64x8": 0.905, "256x64": 0.295}, 4096)
    far = Behaviour.of({"64x8": 0.7, "256x64": 0.3}, 4096)
    twin = behaviour_twin(near, archive)
    assert twin is not None and twin.candidate_id == "a"
    assert behaviour_twin(far, archive) is None
    bigger = Behaviour.of({"64x8": 0.9, "256x64": 0.3}, 4 * 4096)
    assert behaviour_twin(bigger, archive) is None  # same accuracy at 4x the state is not a twin
