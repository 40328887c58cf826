"""scripts/bench_overhead.py's CPU split: the sandboxes' CPU against their training loops'."""

from __future__ import annotations

from scripts.bench_overhead import cpu_split


def test_the_cpu_split_sums_every_sandbox_and_skips_runs_that_did_not_train() -> None:
    trained = {
        "sandbox_train_cpu_s": 105.0,  # its start-up in the standby, screen, export
        "train_cpu_s": 100.0,
        "sandbox_eval_cpu_s": 6.0,  # the evaluator's start-up run ahead included
        "sandbox_recheck_cpu_s": 4.0,
        "sandbox_eval_s": 3.0,  # a wall time, not CPU
        "train_s": 101.0,
    }
    twin = {"sandbox_train_cpu_s": 2.0}  # stopped after screening: no training loop
    assert cpu_split([trained, twin]) == (115.0, 100.0)
    assert cpu_split([twin]) == (0.0, 0.0)
