"""The evaluator's benchmark scores agree with lm-evaluation-harness's on one tiny model.

lm-evaluation-harness (the optional `lmeval` extra) runs its own task configs (piqa,
hellaswag, arc_easy, winogrande, lambada_openai, each pointed at a fixture file through
`dataset_kwargs`, nothing downloaded) on an LM that wraps the trained model in eager
torch; the node stages the same files and scores the model's exported graph through the
evaluator's job entry point. Requests and token ids must match, log-likelihoods within
float32 rounding (two epsilons, relative), and acc and acc_norm exactly, row by row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

harness_model = pytest.importorskip(
    "lm_eval.api.model",
    reason="lm-evaluation-harness is the optional extra: pip install -e '.[lmeval]'",
)

import lm_eval  # noqa: E402

from kernels.baselines import BASELINES  # noqa: E402
from loop.benchmarks.formats import encode_pair  # noqa: E402
from loop.benchmarks.scoring import item_outcomes  # noqa: E402
from loop.benchmarks.stage import Source, stage  # noqa: E402
from loop.benchmarks.staged import load  # noqa: E402
from loop.evaluate import EvalJob, run_job, score_benchmarks  # noqa: E402
from loop.export import export_model  # noqa: E402
from loop.model import Backbone, BackboneConfig, swiglu_hidden  # noqa: E402
from loop.tasks import LMSpec  # noqa: E402
from loop.train import TrainConfig, train  # noqa: E402

DATA = Path(__file__).parent / "data" / "benchmarks"
CONFIGS = {  # the harness's own task configs, by task name
    "piqa": "piqa/piqa.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "winogrande": "winogrande/default.yaml",
    "lambada_openai": "lambada/lambada_openai.yaml",
}
CONTEXT = 64  # shorter than the longest fixture requests: both sides cut from the left


class EagerLM(harness_model.TemplateLM):  # type: ignore[misc]
    """The trained Backbone in eager torch, as a causal LM of the harness: byte tokens,
    inputs cut from the left to CONTEXT + 1 tokens, log-softmax over the whole logits."""

    def __init__(self, model: Backbone) -> None:
        super().__init__()
        self.model = model
        self.encoded: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    @property
    def eot_token_id(self) -> int:
        return 0

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kw: Any) -> Any:
        return list(string.encode("utf-8"))

    def _loglikelihood_tokens(self, requests: Any, disable_tqdm: bool = False) -> Any:
        out = []
        for pair, context, continuation in requests:
            self.encoded[pair] = (context, continuation)
            whole = (context + continuation)[-(CONTEXT + 1) :]
            with torch.no_grad():
                logits = self.model(torch.tensor([whole[:-1]]))[0]
            logprobs = F.log_softmax(logits.float(), dim=-1)[-len(continuation) :]
            wanted = torch.tensor(continuation)
            picked = logprobs.gather(1, wanted[:, None]).double().sum()
            out.append((float(picked), bool((logprobs.argmax(dim=-1) == wanted).all())))
        return out

    def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> Any:
        raise NotImplementedError

    def generate_until(self, requests: Any, disable_tqdm: bool = False) -> Any:
        raise NotImplementedError


def _harness_tasks(folder: Path, cache: Path) -> Any:
    """One config per task: the harness's own, reading the fixture as its test split."""
    from lm_eval.tasks import TaskManager

    root = Path(lm_eval.__file__).parent / "tasks"
    folder.mkdir()
    for name, config in CONFIGS.items():
        local = {
            "include": str(root / config),
            "task": f"local_{name}",
            "tag": [],
            "dataset_path": "json",
            "dataset_name": None,
            "training_split": None,
            "validation_split": None,
            "test_split": "test",
            "dataset_kwargs": {
                "data_files": {"test": str(DATA / f"{name}.jsonl")},
                "cache_dir": str(cache),
            },
        }
        (folder / f"local_{name}.yaml").write_text(json.dumps(local))
    return TaskManager(include_path=str(folder), include_defaults=False)


def test_benchmark_scores_agree_with_lm_evaluation_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lm_eval.api.metrics import mean_stderr
    from lm_eval.evaluator import simple_evaluate

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = LMSpec(seq_len=CONTEXT, batch_size=8, heldout_windows=4, corpus_bytes=32_768)
    config = BackboneConfig(vocab_size=256, mlp_hidden=swiglu_hidden(64))
    model = Backbone(BASELINES["deltanet"], config, seed=0)
    log = train(model, spec, TrainConfig.quick().with_steps(60))
    assert log.final_loss < 0.9 * math.log(256)  # learnt something: not a uniform model
    model.eval()
    export_model(model, spec, tmp_path / "artifact")
    stage(tmp_path / "staged", [Source(name, DATA / f"{name}.jsonl") for name in CONFIGS])
    staged = load(tmp_path / "staged")

    job = EvalJob(
        artifact_dir=tmp_path / "artifact",
        spec=spec,
        heldout_seed=1,
        benchmarks=tmp_path / "staged",
    )
    output = run_job(job)
    assert output.ok and output.metrics is not None, output.error
    reported = {m.name: m for m in output.metrics.benchmarks}
    ours = {s.metrics.name: s for s in score_benchmarks(tmp_path / "artifact", spec, staged)}

    harness = EagerLM(model)
    results = simple_evaluate(
        model=harness,
        tasks=[f"local_{name}" for name in CONFIGS],
        num_fewshot=0,
        task_manager=_harness_tasks(tmp_path / "tasks", tmp_path / "hf"),
        log_samples=True,
        bootstrap_iters=0,
    )
    assert results is not None
    for bench in staged.benchmarks:
        samples = sorted(results["samples"][f"local_{bench.name}"], key=lambda s: s["doc_id"])
        assert len(samples) == bench.entry.items
        pairs = [tuple(arg) for sample in samples for arg in sample["arguments"]]
        assert len(pairs) == bench.entry.requests
        for r, (context, continuation) in enumerate(pairs):  # the same tokens
            begin, split = int(bench.start[r]), int(bench.context_len[r])
            end = begin + split + int(bench.continuation_len[r])
            assert harness.encoded[context, continuation] == (
                bench.tokens[begin : begin + split].tolist(),
                bench.tokens[begin + split : end].tolist(),
            )
            assert encode_pair(context, continuation) == (
                bytes(bench.tokens[begin : begin + split].tolist()).decode(),
                bytes(bench.tokens[begin + split : end].tolist()).decode(),
            )
        # Each response is [(log-likelihood, greedy)]: one per request, in choice order.
        theirs = [resp[0] for sample in samples for resp in sample["resps"]]
        mine = ours[bench.name]
        # Log-likelihoods are sums of float32 log-probabilities (up to about 200 here); the
        # exported graph and eager torch run different kernels, whose rounding depends on
        # the CPU (a 2.8 GHz Xeon with AVX-512 gave 1.25e-6 at 135.7: 5e-8 relative). Agreement
        # is to two float32 epsilons of the value, 1e-6 at least.
        np.testing.assert_allclose(
            mine.loglikelihood, [ll for ll, _ in theirs], rtol=2 * 1.2e-7, atol=1e-6
        )
        assert mine.greedy.tolist() == [greedy for _, greedy in theirs]
        outcomes = item_outcomes(bench, mine.loglikelihood, mine.greedy)
        metrics = reported[bench.name]
        table = results["results"][f"local_{bench.name}"]
        for name, per_item in outcomes.items():
            assert per_item.tolist() == [float(s[name]) for s in samples], (bench.name, name)
            assert getattr(metrics, name) == table[f"{name},none"]
            their_stderr = mean_stderr([s[name] for s in samples])
            assert getattr(metrics, f"{name}_stderr") == pytest.approx(their_stderr, abs=1e-12)
        if bench.entry.kind == "last_word":
            assert metrics.perplexity == pytest.approx(table["perplexity,none"], rel=1e-6)
