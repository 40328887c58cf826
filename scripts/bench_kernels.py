"""Benchmark the plain-torch kernels on CPU: chunked vs token loop, and baseline scaling.

Prints two tables and asserts nothing:
1. forward+backward time of the chunked delta rule and gated delta rule against the naive
   token loop at B=8, T=512, H=2, D=32, with the naive/chunked ratio;
2. forward time of each baseline mixer (d_model=64, n_heads=2, batch 8) at T=256 and
   T=1024, with the 1024/256 ratio (about 4 for linear cost, 16 for quadratic).

Run: .venv/bin/python scripts/bench_kernels.py [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

# Runs from a plain checkout too, where the asi-node package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.baselines import BASELINES
from kernels.linear_rnn.naive import naive_linear_rnn
from kernels.ops import chunk_linear_rnn


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Median of `repeats` timed calls after one warm-up, in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_delta_rules(repeats: int) -> None:
    batch, length, heads, dim = 8, 512, 2, 32
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, length, heads, dim, generator=g)
    k = F.normalize(torch.randn(batch, length, heads, dim, generator=g), dim=-1)
    v = torch.randn(batch, length, heads, dim, generator=g)
    beta = torch.rand(batch, length, heads, generator=g)
    log_decay = F.logsigmoid(torch.randn(batch, length, heads, generator=g) + 3.0)
    leaves = [t.requires_grad_(True) for t in (q, k, v, beta, log_decay)]

    print(f"delta rules, forward+backward, B={batch} T={length} H={heads} D={dim}")
    print(f"{'op':<18}{'chunked ms':>12}{'naive ms':>12}{'naive/chunked':>15}")
    for name, gated in (("delta rule", False), ("gated delta rule", True)):
        decay = log_decay if gated else None

        def chunked(decay: torch.Tensor | None = decay) -> None:
            o, s = chunk_linear_rnn(q, k, v, beta=beta, log_decay=decay, chunk_size=32)
            torch.autograd.grad(o.sum() + s.sum(), leaves, allow_unused=True)

        def naive(decay: torch.Tensor | None = decay) -> None:
            o, s = naive_linear_rnn(q, k, v, beta=beta, log_decay=decay)
            torch.autograd.grad(o.sum() + s.sum(), leaves, allow_unused=True)

        fast = best_time(chunked, repeats)
        slow = best_time(naive, max(1, repeats // 2))
        print(f"{name:<18}{fast * 1e3:>12.1f}{slow * 1e3:>12.1f}{slow / fast:>15.1f}")


def bench_baselines(repeats: int) -> None:
    batch, d_model, n_heads = 8, 64, 2
    short, long = 256, 1024
    print(f"\nbaseline forward, batch={batch} d_model={d_model} n_heads={n_heads}")
    print(f"{'mixer':<16}{f'T={short} ms':>12}{f'T={long} ms':>13}{'ratio':>8}")
    for name, cls in BASELINES.items():
        torch.manual_seed(0)
        # A cache that holds the long sequence keeps softmax attention fully quadratic.
        options = {"max_len": long} if name == "softmax" else {}
        mixer = cls(d_model, n_heads, **options).eval()
        times = []
        for length in (short, long):
            x = torch.randn(batch, length, d_model)
            with torch.no_grad():
                times.append(best_time(lambda x=x, mixer=mixer: mixer(x), repeats))
        ratio = times[1] / times[0]
        print(f"{name:<16}{times[0] * 1e3:>12.1f}{times[1] * 1e3:>13.1f}{ratio:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_delta_rules(args.repeats)
    bench_baselines(args.repeats)


if __name__ == "__main__":
    main()
