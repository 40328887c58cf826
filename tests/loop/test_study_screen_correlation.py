"""scripts/study_screen_correlation.py without training: its Spearman statistics, the
candidates it draws, and how it pairs, ranks and leaves out their outcomes."""

from __future__ import annotations

import math
import random

import pytest

from scripts import study_screen_correlation as study


def outcome(score: float | None, failure: str | None = None) -> study.Outcome:
    return study.Outcome(score, failure, "" if failure is None else "it broke", 1.0, 0.9, 10)


def test_spearman_of_perfect_reversed_and_tied_orders() -> None:
    x = [0.1, 0.4, 0.5, 0.9, 2.0]
    assert study.spearman(x, [1, 2, 3, 4, 50]) == pytest.approx(1.0)
    assert study.spearman(x, [9, 7, 5, 3, 1]) == pytest.approx(-1.0)
    assert study.ranks([3, 1, 3, 2]) == [3.5, 1.0, 3.5, 2.0]
    # Ties share their mean rank: x ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4).
    assert study.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(study.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        study.spearman([1.0], [2.0])


def test_spearman_agrees_with_scipy_on_tied_samples() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    for n in (4, 7, 12):
        x = [float(rng.choice([1, 2, 3])) for _ in range(n)]
        y = [rng.random() for _ in range(n)]
        assert study.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_permutation_p_and_bootstrap_interval() -> None:
    # Five pairs in order: only the identity and the reversal reach |rho| = 1 of 5! orders.
    assert study.permutation_p([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx(2 / 120)
    rng = random.Random(0)
    x = [rng.random() for _ in range(20)]
    noise = [a + rng.gauss(0, 0.05) for a in x]
    p = study.permutation_p(x, noise, rounds=500)
    assert 1 / 501 <= p < 0.01  # sampled: never 0
    low, high = study.bootstrap_interval(x, noise, rounds=300)
    assert -1 <= low <= study.spearman(x, noise) <= high <= 1
    corr = study.correlate(x, noise)
    assert corr.n == 20 and corr.rho > 0.9


def test_candidates_are_the_baselines_then_distinct_offline_mixers() -> None:
    from kernels.baselines import BASELINES

    drawn = study.candidates(4, seed=0)
    assert [c.name for c in drawn[: len(BASELINES)]] == list(BASELINES)
    generated = drawn[len(BASELINES) :]
    assert len(generated) == 4 and all(c.origin == "offline" for c in generated)
    assert len({c.code for c in drawn}) == len(drawn)
    assert [c.code for c in study.candidates(4, seed=0)] == [c.code for c in drawn]
    assert [c.code for c in study.candidates(4, seed=1)] != [c.code for c in drawn]


def test_failed_candidates_are_left_out_and_the_rest_ranked() -> None:
    results: dict[str, dict[study.Task, study.Outcome]] = {
        "a": {"mqar": outcome(0.9), "lm": outcome(1.2)},
        "b": {"mqar": outcome(0.5), "lm": outcome(1.9)},
        "c": {"mqar": outcome(None, "hopeless"), "lm": outcome(1.0)},
        "d": {"mqar": outcome(0.7), "lm": outcome(1.5)},
        "e": {"mqar": outcome(0.7)},  # stopped before its LM run
        "f": {"mqar": outcome(0.8), "lm": outcome(1.2)},
    }
    scored, left_out = study.split(results)
    assert [name for name, _, _ in scored] == ["a", "b", "d", "f"]
    assert [name for name, _ in left_out] == ["c", "e"]
    assert "mqar: hopeless (it broke)" in left_out[0][1]
    assert left_out[1][1] == "lm: not run"
    table = study.ranked_table(scored)
    assert [(r["name"], r["mqar_rank"], r["lm_rank"]) for r in table] == [
        ("a", 1.0, 1.5),  # the best recall; tied for the lowest loss
        ("f", 2.0, 1.5),
        ("d", 3.0, 3.0),
        ("b", 4.0, 4.0),
    ]
    lines, corr = study.report(scored, left_out)
    assert corr is not None and corr.n == 4
    assert corr.rho == pytest.approx(study.spearman([0.9, 0.5, 0.7, 0.8], [1.2, 1.9, 1.5, 1.2]))
    assert corr.rho < 0  # more recall, less loss: the screen agrees
    assert lines[-1].startswith("Spearman rho(MQAR fitness, LM held-out loss) = ")
    assert any(line.startswith("left out: c: mqar: hopeless") for line in lines)
    _, none = study.report(scored[:2], [])
    assert none is None


def test_study_runs_each_candidate_on_mqar_then_lm() -> None:
    cands = study.candidates(1, seed=0)[-2:]
    calls: list[tuple[str, str]] = []
    lines: list[str] = []

    def run(cand: study.Candidate, task: study.Task) -> study.Outcome:
        calls.append((cand.name, task))
        return outcome(0.5) if task == "mqar" else outcome(None, "timeout")

    results = study.study(cands, run, lines.append)
    assert calls == [(c.name, t) for c in cands for t in ("mqar", "lm")]
    assert len(lines) == 4 and lines[0].startswith("[1/4] mqar ")
    assert "failed: timeout" in lines[1]
    assert set(results) == {c.name for c in cands}
