"""scripts/bench_train_step.py: the revision's kernels load from git and compute what this
tree's do, and a comparison prints its row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from kernels.baselines import BASELINES
from kernels.conv1d.conv import causal_conv1d
from kernels.linear_rnn.chunk import chunk_linear_rnn
from loop.train import TrainConfig
from scripts import bench_train_step as bench
from scripts.study_hopeless import genomes_named, mixer_of


def test_the_revision_s_kernels_compute_what_this_tree_s_do() -> None:
    rnn, conv = bench.kernels_at("HEAD")
    assert rnn is not chunk_linear_rnn and conv is not causal_conv1d  # loaded from git
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 40, 2, 8, generator=gen) for _ in range(3))
    k = torch.nn.functional.normalize(k, dim=-1)
    beta = torch.rand(2, 40, 2, generator=gen)
    then, now = (
        rnn(q, k, v, beta=beta, chunk_size=16),
        chunk_linear_rnn(q, k, v, beta=beta, chunk_size=16),
    )
    for a, b in zip(then, now, strict=True):
        torch.testing.assert_close(a, b)
    x, w = torch.randn(2, 40, 6, generator=gen), torch.randn(6, 4, generator=gen)
    torch.testing.assert_close(conv(x, w), causal_conv1d(x, w))


def test_a_comparison_prints_both_arms_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    arms = {"HEAD": bench.kernels_at("HEAD"), "this tree": (chunk_linear_rnn, causal_conv1d)}
    bench.compare("deltanet", BASELINES["deltanet"], arms, TrainConfig(), steps=1)
    row = capsys.readouterr().out
    found = re.fullmatch(r"deltanet\s+[\d.]+\s+[\d.]+\s+[\d.]+x\s+([\d.]+e[+-]\d+)\n", row)
    assert found is not None, row
    assert float(found[1]) < 1e-4  # the same function: the two models' losses agree


def test_candidates_come_by_name_or_from_a_curves_file(tmp_path: Path) -> None:
    curves = bench.ROOT / "tests" / "node" / "data" / "mqar_full_curves.json"
    names = bench.candidate_names(str(curves))
    assert len(names) == 10 and "deltanet" not in names and "add-elu1" in names
    assert bench.candidate_names("add-elu1,add-silu-l2-conv4-rms") == [
        "add-elu1",
        "add-silu-l2-conv4-rms",
    ]
    broken = tmp_path / "curves.json"
    broken.write_text('{"about": "no runs"}')
    with pytest.raises(ValueError, match="is not a bench_throughput --curves file"):
        bench.candidate_names(str(broken))


def test_a_grammar_candidate_s_steps_are_timed_in_both_arms(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (genome,) = genomes_named(["add-silu-l2-conv4-rms"])
    arms = {"HEAD": bench.kernels_at("HEAD"), "this tree": (chunk_linear_rnn, causal_conv1d)}
    before, now = bench.compare(genome.name, mixer_of(genome), arms, TrainConfig(), 1)
    assert before > 0 and now > 0
    assert capsys.readouterr().out.startswith("add-silu-l2-conv4-rms ")


def test_a_comparison_leaves_this_tree_s_kernels_installed() -> None:
    from kernels import dispatch

    arms = {"this tree": (chunk_linear_rnn, causal_conv1d), "HEAD": bench.kernels_at("HEAD")}
    # HEAD's arm runs the last step.
    bench.compare("linear", BASELINES["linear"], arms, TrainConfig(), steps=2)
    assert vars(dispatch)["reference_conv1d"] is causal_conv1d
    assert vars(dispatch)["reference_linear_rnn"] is chunk_linear_rnn
