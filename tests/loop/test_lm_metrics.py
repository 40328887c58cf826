"""What an LM experiment's record carries: the evaluator's held-out numbers and parameter
split, the training report's tokens, tokens/s and peak GPU memory, and an analysis in
loss words; and the evaluator's device handling."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from kernels.baselines import DeltaNet
from loop.analyst import Scores, analyse, fitness
from loop.engineer import flat_metrics, training_report
from loop.evaluate import EvalJob, _load_artifact, run_job
from loop.export import export_model
from loop.model import Backbone, BackboneConfig
from loop.outcome import FailureClass
from loop.tasks import LMSpec

SPEC = LMSpec(corpus_bytes=20_000, batch_size=4, seq_len=32, heldout_windows=6)
LM_MODEL = BackboneConfig(vocab_size=256, d_model=32, n_heads=2, mlp_hidden=64)


def test_training_report_keeps_tokens_per_second_and_peak_memory() -> None:
    device_payload = {
        "train_log": {"tokens_seen": 4096, "wall_seconds": 2.0},
        "throughput": {
            "tokens": 4096,
            "tokens_per_s": 1500.0,
            "steady_tokens_per_s": 2000.0,
            "peak_memory_bytes": 3 * 2**30,
            "seconds": 2.5,
            "first_step_s": 0.5,
        },
    }
    metrics, timings = training_report(device_payload)
    assert metrics == {
        "tokens_seen": 4096.0,
        "tokens_per_s": 2000.0,  # the steady rate, after compile and warm-up
        "peak_gpu_memory_bytes": float(3 * 2**30),
    }
    assert timings == {"train_device_s": 2.5, "first_step_s": 0.5}
    cpu_metrics, cpu_timings = training_report(
        {"train_log": {"tokens_seen": 100, "wall_seconds": 4.0}}
    )
    assert cpu_metrics == {"tokens_seen": 100.0, "tokens_per_s": 25.0} and cpu_timings == {}
    assert training_report({}) == ({}, {})


def test_lm_metrics_name_loss_perplexity_accuracy_and_the_parameter_split() -> None:
    evaluation = {
        "task": "lm",
        "n_params": 20_000_000,
        "n_embedding_params": 10_240_000,
        "state_size": 4096,
        "eval_seconds": 3.0,
        "time_ratio": None,
        "mean_loss": 3.0,
        "mean_accuracy": 0.4,
        "n_targets": 4096,
        "accuracies": {"heldout_2048": 0.4},
        "peak_memory_bytes": 2**30,
    }
    metrics = flat_metrics(evaluation)
    assert metrics["heldout_loss"] == 3.0 and metrics["heldout_ppl"] == pytest.approx(math.e**3)
    assert metrics["heldout_acc"] == 0.4 and metrics["heldout_tokens"] == 4096
    assert metrics["params_embedding"] + metrics["params_non_embedding"] == 20_000_000
    assert metrics["eval_peak_gpu_memory_bytes"] == 2**30
    assert "mean_acc" not in metrics and not any(k.startswith("acc_") for k in metrics)


def test_lm_analysis_speaks_of_held_out_loss() -> None:
    candidate = Scores.from_metrics({"heldout_loss": 2.90, "state_size": 100.0})
    reference = Scores.from_metrics({"heldout_loss": 3.00, "state_size": 100.0})
    fit = fitness(candidate, reference)
    assert fit.value == pytest.approx(0.10)  # the reference's loss minus the candidate's
    parent = Scores.from_metrics({"heldout_loss": 2.95, "state_size": 100.0})
    text = analyse("c", candidate, reference, "deltanet", fit, parent, "p", ["gate added"])
    assert "heldout_loss 2.900 (ppl 18.2) vs deltanet heldout_loss 3.000" in text.text
    assert text.insights == ("gate added helped: held-out loss -0.050 nats.",)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lm-artifact")
    export_model(Backbone(DeltaNet, LM_MODEL, seed=0), SPEC, directory, eval_batch=3)
    return directory


def test_exported_graphs_move_to_another_device(artifact: Path) -> None:
    """What a GPU node's evaluator does with CPU-exported graphs, on the meta device here:
    no device is baked into the graphs, so they run wherever the evaluator puts them."""
    programs = _load_artifact(artifact, SPEC, torch.device("meta"))
    tokens = torch.zeros(3, 32, dtype=torch.long, device="meta")
    hidden = programs.forward[32].module()(tokens)
    assert hidden.device.type == "meta" and hidden.shape == (3, 32, 32)
    step_out = programs.step.module()(
        torch.zeros(4, dtype=torch.long, device="meta"), *programs.init_state
    )
    assert all(t.device.type == "meta" for t in step_out)
    assert programs.head.device.type == "meta"


def test_evaluation_on_cuda_without_a_gpu_says_so(artifact: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    job = EvalJob(
        artifact_dir=artifact, spec=dataclasses.asdict(SPEC), heldout_seed=1, device="cuda"
    )
    output = run_job(job)
    assert not output.ok and output.failure is FailureClass.CRASH
    assert "sees no CUDA device" in (output.error or "")
    assert run_job(job.model_copy(update={"device": "cpu"})).ok
