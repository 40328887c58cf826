"""Benchmark requests as rows for the forward graphs, and the metrics of their scores.

The evaluator runs the rows through the exported graph and applies the head where
targets are set (loop.evaluate.score_rows); this module builds those rows and turns the
per-request log-likelihoods and greedy matches into what lm-evaluation-harness reports:

- multiple choice: acc (the most likely request is the gold one; the first on ties) and,
  where the harness reports it, acc_norm (the same after dividing each log-likelihood by
  its choice's length in characters);
- last word (LAMBADA): acc (greedy decoding produces the whole continuation) and
  perplexity exp(-mean log-likelihood).

Standard errors: the sample standard deviation over rows divided by sqrt(rows) for acc
and acc_norm (the harness's `mean_stderr`); the delta method for perplexity,
perplexity x the standard error of the mean log-likelihood (the harness bootstraps it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from loop.benchmarks.staged import Benchmark
from loop.tasks import IGNORE_INDEX, Batch


@dataclass(frozen=True)
class BenchmarkMetrics:
    """One benchmark's numbers, each with its standard error; `headline` names the one the
    LM fitness averages."""

    name: str
    items: int
    headline: str
    acc: float
    acc_stderr: float
    acc_norm: float | None = None
    acc_norm_stderr: float | None = None
    perplexity: float | None = None
    perplexity_stderr: float | None = None

    @property
    def headline_value(self) -> float:
        value = self.acc_norm if self.headline == "acc_norm" else self.acc
        assert value is not None  # the stager sets acc_norm wherever it is the headline
        return value

    @property
    def headline_stderr(self) -> float:
        value = self.acc_norm_stderr if self.headline == "acc_norm" else self.acc_stderr
        assert value is not None
        return value


def request_rows(bench: Benchmark, context: int, start: int, stop: int) -> Batch:
    """Requests start..stop-1 as rows, built as the harness builds a causal model's input:
    the request's tokens left-truncated to `context` + 1 and without the last, right-padded
    with 0 to the longest row; targets are the next tokens at the continuation's positions
    and IGNORE_INDEX elsewhere (padding after a row cannot reach it: the model is causal)."""
    inputs: list[npt.NDArray[np.int64]] = []
    wanted: list[npt.NDArray[np.int64]] = []
    for r in range(start, stop):
        begin = int(bench.start[r])
        whole = bench.tokens[begin : begin + int(bench.context_len[r] + bench.continuation_len[r])]
        whole = whole[-(context + 1) :]
        cont = int(bench.continuation_len[r])
        target = np.full(len(whole) - 1, IGNORE_INDEX, dtype=np.int64)
        target[-cont:] = whole[-cont:]
        inputs.append(whole[:-1])
        wanted.append(target)
    width = max(len(row) for row in inputs)
    tokens = torch.zeros(len(inputs), width, dtype=torch.long)
    targets = torch.full((len(inputs), width), IGNORE_INDEX, dtype=torch.long)
    for i, (row, target) in enumerate(zip(inputs, wanted, strict=True)):
        tokens[i, : len(row)] = torch.from_numpy(row)
        targets[i, : len(target)] = torch.from_numpy(target)
    return Batch(tokens, targets)


def mean_stderr(values: npt.NDArray[np.float64]) -> float:
    """Sample standard deviation / sqrt(n): the standard error of the mean."""
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def _argmax_per_item(scores: npt.NDArray[np.float64], bench: Benchmark) -> npt.NDArray[np.int64]:
    """Per row, the index of its best request among its own (the first on ties)."""
    firsts = np.flatnonzero(np.diff(bench.item, prepend=-1))
    return np.asarray(
        [int(np.argmax(part)) for part in np.split(scores, firsts[1:])], dtype=np.int64
    )


def item_outcomes(
    bench: Benchmark, loglikelihood: npt.NDArray[np.float64], greedy: npt.NDArray[np.bool_]
) -> dict[str, npt.NDArray[np.float64]]:
    """Per row, 1.0 or 0.0 for "acc" and, where the benchmark reports it, "acc_norm"."""
    if bench.entry.kind == "last_word":
        return {"acc": greedy.astype(np.float64)}
    out = {"acc": (_argmax_per_item(loglikelihood, bench) == bench.gold).astype(np.float64)}
    if bench.entry.acc_norm:
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = loglikelihood / bench.choice_chars.astype(np.float64)
        out["acc_norm"] = (_argmax_per_item(normalised, bench) == bench.gold).astype(np.float64)
    return out


def summarise(
    bench: Benchmark, loglikelihood: npt.NDArray[np.float64], greedy: npt.NDArray[np.bool_]
) -> BenchmarkMetrics:
    """The benchmark's metrics from each request's summed log-likelihood and greedy match."""
    entry = bench.entry
    outcomes = item_outcomes(bench, loglikelihood, greedy)
    acc = outcomes["acc"]
    perplexity = perplexity_stderr = None
    if entry.kind == "last_word":
        mean_ll = float(loglikelihood.mean())
        perplexity = math.exp(-mean_ll) if -mean_ll < 700 else math.inf
        perplexity_stderr = perplexity * mean_stderr(loglikelihood)
    norm = outcomes.get("acc_norm")
    return BenchmarkMetrics(
        name=entry.name,
        items=entry.items,
        headline=entry.headline,
        acc=float(acc.mean()),
        acc_stderr=mean_stderr(acc),
        acc_norm=None if norm is None else float(norm.mean()),
        acc_norm_stderr=None if norm is None else mean_stderr(norm),
        perplexity=perplexity,
        perplexity_stderr=perplexity_stderr,
    )
