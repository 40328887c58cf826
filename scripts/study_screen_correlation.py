"""Is the cheap screen worth it? Spearman's rank correlation between a candidate's MQAR
fitness (its mean recall accuracy on the quick MQAR task, what a campaign screens on) and
its held-out loss on the tiny language-model task (the quick LM preset).

The candidates are the baselines (kernels.baselines.BASELINES) and `--candidates` mixers
drawn by the offline Researcher (deterministic by `--seed`; with no genome-bearing parents
it draws from the whole grammar). Each is trained once per task through the node's own
pipeline: the Engineer (static check, sandboxed training and export, sandboxed
evaluation) on jobs built from a CampaignConfig as the scheduler builds them
(node.campaign.tasks). Every candidate of a task trains on the same seed and is scored
on the same held-out draw. Candidates that fail on either task are listed and left out
of the correlation. A screen that ranks candidates as the language model does gives a
negative rho (higher recall accuracy, lower loss). The p-value is a two-sided permutation
test (exact up to 7 candidates), the interval a percentile bootstrap over candidates.

    .venv/bin/python scripts/study_screen_correlation.py [--candidates 8] [--threads 1]
        [--mqar-steps N] [--lm-steps N] [--seed 0] [--out study.json]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a plain checkout, where asi-node is not installed

from attestation.schema import CandidateOrigin  # noqa: E402
from kernels.baselines import BASELINES  # noqa: E402
from loop.engineer import Engineer, EvalResult  # noqa: E402
from loop.researcher.offline import OfflineResearcher  # noqa: E402
from loop.sandbox import Limits  # noqa: E402
from node.campaign.config import CampaignConfig  # noqa: E402
from node.campaign.scheduler import baseline_code  # noqa: E402
from node.campaign.tasks import (  # noqa: E402
    build_train,
    experiment_job,
    heldout_seed,
    split_key,
)

Task = Literal["mqar", "lm"]
TASKS: tuple[Task, ...] = ("mqar", "lm")
SCORE_OF: dict[Task, str] = {"mqar": "mean_acc", "lm": "heldout_loss"}
PERMUTATIONS = 10_000
BOOTSTRAPS = 2_000


@dataclass(frozen=True)
class Candidate:
    name: str
    origin: CandidateOrigin
    code: str
    motivation: str


@dataclass(frozen=True)
class Outcome:
    """One candidate on one task: its score, or why it has none."""

    score: float | None
    failure: str | None
    message: str
    seconds: float  # the whole experiment: check, training, export, evaluation
    train_s: float | None  # the training loop alone
    steps: int


@dataclass(frozen=True)
class Correlation:
    rho: float
    n: int
    p_permutation: float
    interval95: tuple[float, float]


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1
        for k in range(start, end + 1):
            out[order[k]] = mean_rank
        start = end + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """nan when either side does not vary."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the (tie-averaged) ranks."""
    if len(x) < 2:
        raise ValueError("Spearman's rho needs at least two pairs")
    return pearson(ranks(x), ranks(y))


def permutation_p(
    x: Sequence[float], y: Sequence[float], rounds: int = PERMUTATIONS, seed: int = 0
) -> float:
    """Two-sided: how often |rho| of y shuffled against x reaches the observed |rho|.
    Every permutation when there are at most `rounds` of them, else `rounds` random ones
    (counting the observed order, so p is never 0)."""
    observed = abs(spearman(x, y))
    rx, ry = ranks(x), ranks(y)
    tolerance = 1e-12
    if math.factorial(len(y)) <= rounds:
        shuffles = [abs(pearson(rx, list(p))) for p in itertools.permutations(ry)]
        return sum(r >= observed - tolerance for r in shuffles) / len(shuffles)
    rng = random.Random(seed)
    hits = 0
    shuffled = list(ry)
    for _ in range(rounds):
        rng.shuffle(shuffled)
        hits += abs(pearson(rx, shuffled)) >= observed - tolerance
    return (hits + 1) / (rounds + 1)


def bootstrap_interval(
    x: Sequence[float],
    y: Sequence[float],
    rounds: int = BOOTSTRAPS,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of rho over candidates resampled with replacement (resamples
    where a side does not vary are dropped)."""
    rng = random.Random(seed)
    n = len(x)
    draws: list[float] = []
    for _ in range(rounds):
        pick = [rng.randrange(n) for _ in range(n)]
        rho = spearman([x[i] for i in pick], [y[i] for i in pick])
        if not math.isnan(rho):
            draws.append(rho)
    if not draws:
        return (math.nan, math.nan)
    draws.sort()
    tail = (1 - level) / 2
    low = draws[int(tail * (len(draws) - 1))]
    high = draws[math.ceil((1 - tail) * (len(draws) - 1))]
    return (low, high)


def correlate(x: Sequence[float], y: Sequence[float], seed: int = 0) -> Correlation:
    return Correlation(
        rho=spearman(x, y),
        n=len(x),
        p_permutation=permutation_p(x, y, seed=seed),
        interval95=bootstrap_interval(x, y, seed=seed),
    )


def candidates(generated: int, seed: int) -> list[Candidate]:
    """Every baseline, then `generated` distinct mixers from the offline Researcher."""
    out = [
        Candidate(name, CandidateOrigin.BASELINE, baseline_code(name), f"baseline {name}")
        for name in BASELINES
    ]
    researcher = OfflineResearcher(seed=seed)
    known: set[str] = set()
    for step in range(generated):
        proposal = researcher.propose((), (), step, known_digests=known)
        known.add(proposal.digest)
        out.append(
            Candidate(proposal.name, CandidateOrigin.OFFLINE, proposal.code, proposal.motivation)
        )
    return out


def split(
    results: dict[str, dict[Task, Outcome]],
) -> tuple[list[tuple[str, float, float]], list[tuple[str, str]]]:
    """(name, MQAR fitness, LM loss) of the candidates scored on both tasks, in the order
    given; and (name, why) of the others."""
    scored: list[tuple[str, float, float]] = []
    left_out: list[tuple[str, str]] = []
    for name, outcomes in results.items():
        missing = [t for t in TASKS if t not in outcomes]
        failed = [t for t in TASKS if t in outcomes and outcomes[t].score is None]
        if missing or failed:
            why = [f"{t}: {outcomes[t].failure} ({outcomes[t].message[:120]})" for t in failed]
            why += [f"{t}: not run" for t in missing]
            left_out.append((name, "; ".join(why)))
            continue
        mqar, lm = outcomes["mqar"].score, outcomes["lm"].score
        assert mqar is not None and lm is not None
        scored.append((name, mqar, lm))
    return scored, left_out


def ranked_table(scored: Sequence[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """Rows best MQAR fitness first, with each candidate's rank on both tasks (rank 1:
    the highest recall accuracy; the lowest held-out loss)."""
    mqar_rank = ranks([-m for _, m, _ in scored])
    lm_rank = ranks([loss for _, _, loss in scored])
    rows = [
        {"name": name, "mqar_fitness": m, "lm_loss": loss, "mqar_rank": a, "lm_rank": b}
        for (name, m, loss), a, b in zip(scored, mqar_rank, lm_rank, strict=True)
    ]
    return sorted(rows, key=lambda r: (r["mqar_rank"], r["name"]))


def config_for(task: Task, steps: int | None) -> CampaignConfig:
    return CampaignConfig(task=task, preset="quick", train_steps=steps, baselines=("deltanet",))


def run_one(
    engineer: Engineer,
    cand: Candidate,
    task: Task,
    config: CampaignConfig,
    threads: int,
    secret: bytes,
    seed: int,
) -> Outcome:
    """The experiment as the scheduler's `_execute` builds it; one held-out draw per task."""
    job = experiment_job(
        config,
        experiment_id=f"study-{task}-{hashlib.sha256(cand.code.encode()).hexdigest()[:12]}",
        code=cand.code,
        origin=cand.origin,
        seed=seed,
        threads=threads,
        split=split_key(secret, "screen-study"),
        heldout=heldout_seed(secret, f"screen-study-{task}"),
    )
    started = time.perf_counter()
    result: EvalResult = engineer.run(job)
    seconds = time.perf_counter() - started
    score = result.metrics.get(SCORE_OF[task]) if result.failure is None else None
    failure = str(result.failure) if result.failure is not None else None
    if result.failure is None and score is None:
        failure = "no score"
    train_s = result.timings.get("train_s")
    return Outcome(score, failure, result.message, seconds, train_s, job.train.steps)


def report(
    scored: Sequence[tuple[str, float, float]], left_out: Sequence[tuple[str, str]]
) -> tuple[list[str], Correlation | None]:
    lines = [f"{'name':<44} {'MQAR acc':>8} {'rank':>5} {'LM loss':>8} {'rank':>5}"]
    for row in ranked_table(scored):
        lines.append(
            f"{row['name'][:44]:<44} {row['mqar_fitness']:8.3f} {row['mqar_rank']:5.1f} "
            f"{row['lm_loss']:8.4f} {row['lm_rank']:5.1f}"
        )
    for name, why in left_out:
        lines.append(f"left out: {name}: {why}")
    if len(scored) < 3:
        lines.append(f"only {len(scored)} candidate(s) scored on both tasks: no correlation")
        return lines, None
    corr = correlate([m for _, m, _ in scored], [loss for _, _, loss in scored])
    low, high = corr.interval95
    lines.append(
        f"Spearman rho(MQAR fitness, LM held-out loss) = {corr.rho:+.3f}, n = {corr.n}, "
        f"permutation p = {corr.p_permutation:.4f}, bootstrap 95% interval "
        f"[{low:+.3f}, {high:+.3f}] (negative: the screen ranks as the LM task does)"
    )
    return lines, corr


def write_json(
    path: Path,
    settings: dict[str, Any],
    cands: Sequence[Candidate],
    results: dict[str, dict[Task, Outcome]],
    corr: Correlation | None,
    wall_s: float,
) -> None:
    scored, left_out = split(results)
    origin = {c.name: c.origin for c in cands}
    body = {
        "settings": settings,
        "wall_s": wall_s,
        "candidates": [
            {"name": name, "origin": origin[name]}
            | {task: asdict(o) for task, o in outcomes.items()}
            for name, outcomes in results.items()
        ],
        "ranked": ranked_table(scored),
        "left_out": [{"name": n, "why": w} for n, w in left_out],
        "correlation": None if corr is None else asdict(corr),
    }
    path.write_text(json.dumps(body, indent=2) + "\n")


def study(
    cands: Sequence[Candidate],
    run: Callable[[Candidate, Task], Outcome],
    progress: Callable[[str], None],
    results: dict[str, dict[Task, Outcome]] | None = None,
) -> dict[str, dict[Task, Outcome]]:
    """Every candidate on MQAR, then on LM (a study stopped early has complete pairs);
    `results` is filled as the outcomes come in."""
    results = {} if results is None else results
    total = len(cands) * len(TASKS)
    done = 0
    for cand in cands:
        for task in TASKS:
            outcome = run(cand, task)
            results.setdefault(cand.name, {})[task] = outcome
            done += 1
            what = (
                f"{SCORE_OF[task]} {outcome.score:.4f}"
                if outcome.score is not None
                else f"failed: {outcome.failure}"
            )
            progress(f"[{done}/{total}] {task:<4} {cand.name}: {what} ({outcome.seconds:.0f} s)")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=8, help="offline-generated mixers")
    parser.add_argument("--mqar-steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--lm-steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="the Researcher's and training's")
    parser.add_argument("--baselines", default=None, help="comma-separated; default: all")
    parser.add_argument("--out", type=Path, default=Path("screen_correlation.json"))
    args = parser.parse_args()

    cands = candidates(args.candidates, args.seed)
    if args.baselines is not None:
        keep = set(args.baselines.split(",")) - {""}
        cands = [c for c in cands if c.origin is not CandidateOrigin.BASELINE or c.name in keep]
    configs = {task: config_for(task, getattr(args, f"{task}_steps")) for task in TASKS}
    secret = hashlib.sha256(f"screen-study:{args.seed}".encode()).digest()
    settings = {
        "candidates": [c.name for c in cands],
        "steps": {t: build_train(c, args.threads, args.seed).steps for t, c in configs.items()},
        "threads": args.threads,
        "seed": args.seed,
    }
    print(
        f"{len(cands)} candidates x {len(TASKS)} tasks, steps {settings['steps']}, "
        f"{args.threads} thread(s)",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="screen-study-") as tmp:
        workspaces = Path(tmp)
        workspaces.chmod(0o711)  # the sandbox user enters its own workspace below
        engineer = Engineer(workspaces, Limits(threads=args.threads))

        def run(cand: Candidate, task: Task) -> Outcome:
            return run_one(engineer, cand, task, configs[task], args.threads, secret, args.seed)

        results: dict[str, dict[Task, Outcome]] = {}

        def progress(line: str) -> None:
            print(line, flush=True)
            # What is done so far survives a study stopped early.
            write_json(args.out, settings, cands, results, None, time.perf_counter() - started)

        study(cands, run, progress, results)
    wall_s = time.perf_counter() - started
    scored, left_out = split(results)
    lines, corr = report(scored, left_out)
    print("\n".join(lines))
    print(f"wall time {wall_s:.0f} s")
    write_json(args.out, settings, cands, results, corr, wall_s)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
