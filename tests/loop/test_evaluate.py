"""Export round trip and the trusted evaluator: same numbers as eager, leaks and mismatches
caught on held-out inputs, unsafe artifacts refused, no candidate code imported."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from mixers import CumulativeMean
from torch import Tensor, nn
from torch.export.pt2_archive import PT2ArchiveReader, PT2ArchiveWriter

import loop.export
from loop.evaluate import ArtifactError, EvalOutput, evaluate, main, score_rows
from loop.export import ExportError, export_model, graph_lengths
from loop.model import Backbone, BackboneConfig
from loop.outcome import FailureClass
from loop.tasks import LMSpec, MQARSpec
from loop.train import TrainConfig, score_model, train

State = tuple[Tensor, ...]

SPEC = MQARSpec(
    vocab_size=64,
    key_range=(1, 31),
    value_range=(32, 63),
    batch_size=16,
    train_shapes=((16, 2), (24, 3)),
    test_shapes=((16, 2), (24, 3), (32, 4)),
    test_examples=24,
)
# One test length: one forward graph to export, for tests that need no more.
LEAN_SPEC = dataclasses.replace(SPEC, test_shapes=((24, 3),))
MODEL = BackboneConfig(vocab_size=64, d_model=16, n_layers=2, n_heads=2)
EVAL_BATCH, STEP_BATCH = 10, 2


class LooksAhead(CumulativeMean):
    """Mixes in the next token: a future leak the evaluator must catch."""

    def forward(self, x: Tensor) -> Tensor:
        ahead = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
        return super().forward(x) + ahead


class StepDisagrees(CumulativeMean):
    """Causal, but its step computes something else than its forward."""

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        out, new_state = super().step(x_t, state)
        return out + 1.0, new_state


class BranchesOnValues(CumulativeMean):
    """Python control flow on tensor values: not exportable as a graph."""

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:
            return super().forward(x)
        return x


CANDIDATE_CODE = """
import torch
from torch import nn
from kernels.ops import causal_conv1d  # candidates may use kernels; the evaluator must not


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model, 2) / 2)

    def forward(self, x):
        return causal_conv1d(x, self.weight)

    def init_state(self, batch):
        return (self.weight.new_zeros(batch, self.weight.shape[0], 1),)

    def step(self, x_t, state):
        window = torch.cat([state[0], x_t.unsqueeze(-1)], dim=-1)
        return (window * self.weight).sum(-1), (window[:, :, 1:],)
"""


@dataclass(frozen=True)
class Trained:
    model: Backbone
    directory: Path


def _trained(
    mixer: type[nn.Module], directory: Path, steps: int = 30, spec: MQARSpec = SPEC
) -> Trained:
    model = Backbone(mixer, MODEL, seed=0)
    train(model, spec, TrainConfig(steps=steps, lr=1e-2, abort_step=None))
    export_model(model, spec, directory, eval_batch=EVAL_BATCH, step_batch=STEP_BATCH)
    return Trained(model, directory)


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _trained(CumulativeMean, tmp_path_factory.mktemp("honest"))


def test_exported_graphs_reproduce_the_eager_model(honest: Trained) -> None:
    manifest = json.loads((honest.directory / "manifest.json").read_text())
    assert [f["seq_len"] for f in manifest["forward"]] == [32]  # shorter sets are padded
    tokens = SPEC.test_sets(0)[2].batch.tokens[:EVAL_BATCH]
    program = torch.export.load(honest.directory / "forward_32.pt2")
    head = torch.load(honest.directory / "head.pt", weights_only=True)
    with torch.no_grad():
        hidden = program.module()(tokens)
        assert hidden.shape == (EVAL_BATCH, 32, MODEL.d_model)  # no vocabulary-sized output
        torch.testing.assert_close(hidden @ head.T, honest.model.eval()(tokens))
        state = honest.model.init_state(STEP_BATCH)
        step = torch.export.load(honest.directory / "step.pt2").module()
        hidden_t, *_ = step(tokens[:STEP_BATCH, 0], *state)
        expected, _ = honest.model.step(tokens[:STEP_BATCH, 0], state)
        torch.testing.assert_close(hidden_t @ head.T, expected)


def test_evaluator_scores_like_eager_evaluation_on_held_out_sets(honest: Trained) -> None:
    metrics = evaluate(honest.directory, SPEC, heldout_seed=99)
    assert metrics.failure is None, metrics.detail
    assert all(check.passed for check in metrics.checks)
    for test_set, measured in zip(SPEC.test_sets(99), metrics.sets, strict=True):
        loss, accuracy = score_model(honest.model, test_set.batch)
        assert measured.name == test_set.name
        assert measured.accuracy == pytest.approx(accuracy, abs=1e-9)
        assert measured.loss == pytest.approx(loss, rel=1e-5)
    assert metrics.mean_accuracy == pytest.approx(sum(m.accuracy for m in metrics.sets) / 3)
    assert metrics.n_params == sum(p.numel() for p in honest.model.parameters())
    # per sequence and layer: conv state 16 x 2, running sum 16, count 1
    assert metrics.state_size == 2 * (16 * 2 + 16 + 1)
    # one forward graph, so no per-length cost ratio (the screen measures cost scaling)
    assert [t for t, _ in metrics.seconds_per_token] == [32] and metrics.time_ratio is None


def test_shorter_graphs_are_exported_only_where_padding_would_cost_more() -> None:
    assert graph_lengths(SPEC) == (32,)  # 24 rows x 16 padding tokens: cheap
    assert graph_lengths(MQARSpec()) == (128, 256)  # 1,000 rows of 128 padded by 128: not


def test_evaluator_uses_the_shortest_graph_that_fits_each_set(
    honest: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop.export, "PAD_TOKENS_PER_GRAPH", 0)  # a graph per length
    export_model(honest.model, SPEC, tmp_path, eval_batch=EVAL_BATCH, step_batch=STEP_BATCH)
    per_length = evaluate(tmp_path, SPEC, heldout_seed=99)
    padded = evaluate(honest.directory, SPEC, heldout_seed=99)
    assert [t for t, _ in per_length.seconds_per_token] == [16, 32]
    assert per_length.time_ratio is not None and per_length.time_ratio > 0
    for own, shared in zip(per_length.sets, padded.sets, strict=True):
        assert own.accuracy == pytest.approx(shared.accuracy, abs=1e-9)
        assert own.loss == pytest.approx(shared.loss, rel=1e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_evaluator_reports_held_out_loss_for_the_language_model_task(
    tmp_path: Path, tied: bool
) -> None:
    """The LM backbone (SwiGLU MLP in every block) exports, passes the step-vs-forward
    check, and scores as eager evaluation does; parameters come split as the model has them."""
    spec = LMSpec(corpus_bytes=20_000, batch_size=8, seq_len=32, heldout_windows=12)
    config = BackboneConfig(vocab_size=256, d_model=16, mlp_hidden=64, tie_embeddings=tied)
    model = Backbone(CumulativeMean, config, seed=0)
    train(model, spec, TrainConfig(steps=10, abort_step=None))
    export_model(model, spec, tmp_path, eval_batch=EVAL_BATCH, step_batch=STEP_BATCH)
    metrics = evaluate(tmp_path, spec, heldout_seed=3)
    loss, accuracy = score_model(model, spec.test_sets(3)[0].batch)
    assert metrics.failure is None and metrics.task == "lm", metrics.detail
    assert all(check.passed for check in metrics.checks)
    assert metrics.mean_loss == pytest.approx(loss, rel=1e-5)
    assert metrics.mean_accuracy == pytest.approx(accuracy, abs=1e-9)
    assert metrics.n_targets == 12 * 32
    embedding, rest = model.parameter_split()
    assert (metrics.n_params, metrics.n_embedding_params) == (embedding + rest, embedding)
    assert embedding == (1 if tied else 2) * 256 * 16


def test_head_slices_score_as_the_whole_logits_do() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 11, 8, generator=gen)
    head = torch.randn(50, 8, generator=gen)
    targets = torch.randint(0, 50, (3, 11), generator=gen)
    targets[1, ::2] = -100  # positions without a target are skipped
    whole = score_rows(hidden, targets, head, slice_tokens=10_000)
    sliced = score_rows(hidden, targets, head, slice_tokens=4)
    logits = hidden @ head.T
    expected = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), reduction="none"
    ).view(3, 11)
    torch.testing.assert_close(sliced.nll, expected.double().sum(dim=1), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(sliced.nll, whole.nll)
    assert torch.equal(sliced.correct, whole.correct)
    assert sliced.targets.tolist() == [11, 5, 11]


def test_evaluator_catches_a_future_leak_on_held_out_inputs(tmp_path: Path) -> None:
    leaky = _trained(LooksAhead, tmp_path, steps=2, spec=LEAN_SPEC)
    metrics = evaluate(leaky.directory, LEAN_SPEC, heldout_seed=5)
    assert metrics.failure is FailureClass.FUTURE_LEAK
    assert not next(c for c in metrics.checks if c.name == "causality").passed


def test_evaluator_catches_step_disagreeing_with_forward(tmp_path: Path) -> None:
    liar = _trained(StepDisagrees, tmp_path, steps=2, spec=LEAN_SPEC)
    metrics = evaluate(liar.directory, LEAN_SPEC, heldout_seed=5)
    assert metrics.failure is FailureClass.RECURRENT_MISMATCH


def test_unexportable_model_raises_export_error(tmp_path: Path) -> None:
    model = Backbone(BranchesOnValues, MODEL, seed=0)
    with pytest.raises(ExportError, match="forward"):
        export_model(model, SPEC, tmp_path, eval_batch=EVAL_BATCH, step_batch=STEP_BATCH)


def _copy_artifact(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def _rewrite_manifest_hash(directory: Path, file: str) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    digest = hashlib.sha256((directory / file).read_bytes()).hexdigest()
    for entry in [*manifest["forward"], manifest["step"], manifest["init_state"]]:
        if entry["file"] == file:
            entry["sha256"] = digest
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_evaluator_refuses_files_that_do_not_match_the_manifest(
    honest: Trained, tmp_path: Path
) -> None:
    directory = _copy_artifact(honest.directory, tmp_path / "copy")
    with (directory / "step.pt2").open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(ArtifactError, match="sha256"):
        evaluate(directory, SPEC, heldout_seed=1)


def test_evaluator_refuses_paths_outside_the_artifact(honest: Trained, tmp_path: Path) -> None:
    directory = _copy_artifact(honest.directory, tmp_path / "copy")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["step"]["file"] = "../step.pt2"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest"):
        evaluate(directory, SPEC, heldout_seed=1)


@pytest.mark.parametrize("attack", ["pickled_weights", "extra_record"])
def test_evaluator_refuses_archives_that_would_unpickle(
    honest: Trained, tmp_path: Path, attack: str
) -> None:
    directory = _copy_artifact(honest.directory, tmp_path / "copy")
    path = directory / "forward_32.pt2"
    reader = PT2ArchiveReader(str(path))
    buffer = io.BytesIO()
    with PT2ArchiveWriter(buffer) as writer:
        for name in reader.get_file_names():
            if name in {"byteorder", ".data/version", ".data/serialization_id"}:
                continue
            data = reader.read_bytes(name)
            if attack == "pickled_weights" and name.endswith("model_weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true')
            writer.write_bytes(name, data)
        if attack == "extra_record":
            writer.write_bytes("data/constants/opaque_obj_0", b"not looked at")
    path.write_bytes(buffer.getvalue())
    _rewrite_manifest_hash(directory, path.name)
    with pytest.raises(ArtifactError, match=r"pickled|unexpected record"):
        evaluate(directory, SPEC, heldout_seed=1)


def test_cli_writes_an_error_instead_of_a_traceback(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {"artifact_dir": str(tmp_path / "missing"), "spec": {"kind": "mqar"}, "heldout_seed": 1}
        )
    )
    out = tmp_path / "out.json"
    assert main([str(job), str(out)]) == 0
    output = EvalOutput.model_validate_json(out.read_text())
    assert (
        not output.ok
        and output.failure is FailureClass.BAD_OUTPUT
        and "manifest" in (output.error or "")
    )


def test_evaluator_process_imports_neither_kernels_nor_candidate_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "candidate_mixer.py").write_text(CANDIDATE_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    mixer = importlib.import_module("candidate_mixer").Mixer
    model = Backbone(mixer, MODEL, seed=0)
    export_model(model, LEAN_SPEC, tmp_path / "art", eval_batch=EVAL_BATCH, step_batch=STEP_BATCH)
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "artifact_dir": str(tmp_path / "art"),
                "spec": dataclasses.asdict(LEAN_SPEC),
                "heldout_seed": 8,
            }
        )
    )
    check = textwrap.dedent(
        f"""
        import sys
        from loop.evaluate import main
        assert main([{str(job)!r}, {str(tmp_path / "out.json")!r}]) == 0
        allowed = ("loop", "loop.errors", "loop.evaluate", "loop.outcome", "loop.benchmarks",
                   "loop.benchmarks.staged", "loop.benchmarks.scoring")  # no tokenising
        leaked = [
            m for m in sys.modules
            if m.split(".")[0] in ("kernels", "candidate_mixer", "loop")
            and m not in allowed and not m.startswith("loop.tasks")
        ]
        assert not leaked, leaked
        """
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", check], check=True, cwd=root, timeout=300)
    output = EvalOutput.model_validate_json((tmp_path / "out.json").read_text())
    assert output.ok and output.metrics is not None and output.metrics.failure is None


def test_the_load_resolves_each_classes_type_hints_once_and_restores_typing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import typing

    from loop.evaluate import _type_hints_once

    @dataclass
    class Node:
        name: str
        args: list[int]

    calls: list[object] = []
    real = typing.get_type_hints

    def counted(obj: object, *args: object, **kwargs: object) -> dict[str, object]:
        calls.append(obj)
        return real(obj, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(typing, "get_type_hints", counted)
    scope = {"list": list}
    with _type_hints_once():
        first = typing.get_type_hints(Node, globalns=scope)
        first["name"] = bytes  # a caller's change stays its own
        again = typing.get_type_hints(Node, globalns=scope)
        typing.get_type_hints(counted)  # not a class: passed through
    assert again == {"name": str, "args": list[int]}
    assert calls == [Node, counted]
    assert typing.get_type_hints is counted  # put back as found


def test_saving_without_the_canonical_form_test_writes_the_same_archive(
    honest: Trained, tmp_path: Path
) -> None:
    import torch._export.serde.serialize as serializer

    from loop.export import _without_canonical_form_test

    program = torch.export.export(
        loop.export._ForwardGraph(honest.model), (torch.zeros(2, 32, dtype=torch.long),)
    )
    tested, untested = tmp_path / "tested", tmp_path / "untested"
    tested.mkdir(), untested.mkdir()  # the same file name: an archive holds its name
    real = serializer.canonicalize
    torch.export.save(program, tested / "forward.pt2")
    with _without_canonical_form_test():
        assert serializer.canonicalize is not real
        torch.export.save(program, untested / "forward.pt2")
    assert serializer.canonicalize is real  # put back
    assert (untested / "forward.pt2").read_bytes() == (tested / "forward.pt2").read_bytes()


def test_torch_serializer_still_discards_its_canonical_form() -> None:
    """`_without_canonical_form_test` is right only while the serializer calls
    `canonicalize` as a bare statement; a torch that uses its result must end it."""
    import ast
    import inspect

    from torch._export.serde.serialize import ExportedProgramSerializer

    source = textwrap.dedent(inspect.getsource(ExportedProgramSerializer.serialize))
    calls = [
        (node, parent)
        for parent in ast.walk(ast.parse(source))
        for node in ast.iter_child_nodes(parent)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "canonicalize"
    ]
    assert len(calls) == 1
    assert isinstance(calls[0][1], ast.Expr)  # its value goes nowhere
