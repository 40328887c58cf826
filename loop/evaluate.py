"""The trusted evaluator: scores exported graphs on held-out data it generates itself.

It never imports candidate code or `kernels` (only torch, numpy, the stdlib, pydantic,
loop.tasks, loop.benchmarks' staged and scoring modules, loop.outcome and loop.errors),
so nothing the candidate ran can patch the metric. What the sandbox hands back is hostile
data, and `torch.export.load` unpickles parts of an archive, so loading is fenced (see
`_load_program`):

1. the manifest is validated and every file's sha256 checked;
2. an archive may hold only the records a plain `torch.export.save` of tensors writes:
   no pickled weights or constants, no custom or opaque objects, no compiled code; the
   archive's own sample inputs (a pickle) are replaced by ones built here;
3. the loaded graph may call only ATen operators (minus a few with side effects) and
   `operator.getitem`, may not mutate buffers or inputs, and must have the input and
   output shapes the manifest promises.

The graphs stop before the head: a forward graph returns the normalised final hidden
states (rows, T, D) and the step graph one token's (rows, D); the head (V, D) is a plain
tensor file. The evaluator applies the head itself, a slice of positions at a time
(`score_rows`), so memory stays bounded by rows x T x D plus one slice of logits, never
rows x T x V: at the exploration shape (context 2,048, vocabulary 32,000) the logits of
one 100-row call would be 26 GB of fp32.

Then it computes per-test-set loss and accuracy (running each set through the shortest
forward graph at least as long, right-padded), counts parameters (embedding and the rest)
from the graph's state dict and the head, measures the recurrent state from the step
graph's input shapes, re-checks causality on the held-out inputs themselves, compares
step-by-step to parallel hidden states, and times the forward graphs (the per-token time
at the longest length over that at the shortest when the artifact has graphs of more than
one length). With `device="cuda"` (a GPU node: the sandbox sees only the experiment's
leased GPU) the graphs are moved there and run through ATen's CUDA ops; nothing of the
candidate's is imported either way.

Downstream zero-shot benchmarks (`benchmarks`, a folder `asi-node bench stage` wrote: token
ids only, nothing here tokenises text) go through the same graphs and `score_rows`: each
request is a row, left-truncated to the longest graph as lm-evaluation-harness truncates
for a model of that context, with targets only at its continuation; the per-request
log-likelihoods and greedy matches become acc, acc_norm and LAMBADA's perplexity, with
standard errors (loop.benchmarks.scoring).

Run the CLI as its own process, ideally with TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 set and the
sandbox's limits (no network, no secrets), as a second fence:

    python -m loop.evaluate JOB.json OUT.json
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import operator
import re
import sys
import time
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.export import ExportedProgram
from torch.export.passes import move_to_device_pass
from torch.export.pt2_archive import PT2ArchiveReader, PT2ArchiveWriter

from loop.benchmarks.scoring import BenchmarkMetrics, request_rows, summarise
from loop.benchmarks.staged import Benchmark, Staged, StagedError
from loop.benchmarks.staged import load as load_staged
from loop.errors import LoopError
from loop.outcome import CheckResult, FailureClass
from loop.tasks import IGNORE_INDEX, Batch, LMSpec, MQARSpec, Task, TestSet, generator
from loop.tasks.common import file_sha256

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "asi-node-export/2"
EVAL_BATCH = 100  # most rows per forward graph call; test sets are run in chunks of this
EVAL_TOKENS = 25_600  # ... and at most this many tokens per call (100 rows of MQAR's 256)
STEP_BATCH = 4  # sequences replayed through the step graph for the equivalence check
HEAD_SLICE_TOKENS = 1024  # positions per slice of logits (32,000 vocab: 131 MB of fp32)
MANIFEST_FILE = "manifest.json"
STEP_FILE = "step.pt2"
INIT_STATE_FILE = "init_state.pt"
HEAD_FILE = "head.pt"
EMBEDDING_PARAMETER = "model.embedding.weight"  # the harness's names, in every graph
HEAD_PARAMETER = "model.head.weight"  # an untied head (tied: the embedding is the head)
MAX_FILE_BYTES = 256 * 2**20  # an exploration-scale artifact's graphs are about 80 MB each

CAUSALITY_RTOL = 1e-4  # allowed change of past outputs, relative to the outputs' scale
RECURRENT_RTOL = 2e-3  # allowed step-vs-forward difference, relative to the outputs' scale


def forward_file(seq_len: int) -> str:
    return f"forward_{seq_len}.pt2"


def eval_batch_for(seq_len: int) -> int:
    """Rows per forward call at the longest test length: EVAL_BATCH, fewer for long contexts."""
    return max(1, min(EVAL_BATCH, EVAL_TOKENS // seq_len))


class ArtifactError(LoopError):
    """The artifact directory is not a well-formed, safe export.

    The sandbox produced it, so the caller records FailureClass.BAD_OUTPUT for the
    candidate; nothing from the artifact was run.
    """


_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class FileEntry(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    file: str
    sha256: str = pydantic.Field(pattern=r"^[0-9a-f]{64}$")

    @pydantic.field_validator("file")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # A bare name inside the artifact directory: no separators, no "..", no dotfiles.
        if not _FILE_NAME.fullmatch(value) or ".." in value:
            raise ValueError(f"not a plain file name: {value!r}")
        return value


class ForwardEntry(FileEntry):
    seq_len: int = pydantic.Field(gt=0, le=65536)


class Manifest(pydantic.BaseModel):
    """`manifest.json` of an export directory (written by loop.export)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    format: Literal["asi-node-export/2"]
    vocab_size: int = pydantic.Field(gt=0)
    hidden_size: int = pydantic.Field(gt=0, le=65536)
    eval_batch: int = pydantic.Field(gt=0, le=4096)
    step_batch: int = pydantic.Field(gt=0, le=4096)
    spec_digest: str
    forward: list[ForwardEntry]
    step: FileEntry
    init_state: FileEntry
    head: FileEntry


@dataclass(frozen=True)
class SetMetrics:
    """Loss (nats per target token) and accuracy on one held-out test set; `loss_stderr` is
    the standard error of the mean over rows of each row's loss (NaN under two rows)."""

    name: str
    seq_len: int
    loss: float
    accuracy: float
    n_targets: int
    loss_stderr: float = math.nan


@dataclass(frozen=True)
class Metrics:
    """What the evaluator measured; `failure` is set when a check on held-out data failed."""

    task: str
    spec_digest: str
    sets: tuple[SetMetrics, ...]
    mean_accuracy: float
    mean_loss: float  # for the LM task: the held-out loss in nats/token
    n_params: int  # the forward graph's parameters, plus the head when it is not tied
    n_buffer_elements: int  # buffers and constants in the forward graph, not parameters
    state_size: int  # recurrent state elements per sequence, from the step graph's inputs
    seconds_per_token: tuple[tuple[int, float], ...]  # (T, forward seconds per token)
    time_ratio: float | None  # per-token time at the longest graph over the shortest's
    checks: tuple[CheckResult, ...]
    failure: FailureClass | None = None
    detail: str = ""
    eval_seconds: float = 0.0
    accuracies: dict[str, float] = field(default_factory=dict)  # by test-set name
    n_embedding_params: int = 0  # token embedding, and the head when it is not tied
    n_targets: int = 0  # target tokens scored over all test sets
    device: str = "cpu"
    peak_memory_bytes: int | None = None  # CUDA only: the evaluator's peak allocation
    benchmarks: tuple[BenchmarkMetrics, ...] = ()  # the staged zero-shot benchmarks


_SAFE_RECORDS = re.compile(
    r"^(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d{1,6}"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d{1,6})$"
)
_WRITER_OWNED = {"byteorder", ".data/version", ".data/serialization_id"}
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"


def _check_payload_config(reader: PT2ArchiveReader, name: str, prefix: str) -> None:
    """Every weight or constant must be raw tensor bytes: pickled payloads run code."""
    try:
        config = json.loads(reader.read_string(name))["config"]
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{name}: unreadable payload config") from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{name}: payload config is not an object")
    for fqn, meta in config.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise ArtifactError(f"{name}: {fqn} is pickled; only raw tensors are accepted")
        if not str(meta.get("path_name", "")).startswith(prefix):
            raise ArtifactError(f"{name}: {fqn} is not a plain tensor payload")


def _load_program(path: Path, example_inputs: tuple[Tensor, ...]) -> ExportedProgram:
    """Load a .pt2 after copying only safe records into a fresh archive in memory."""
    try:
        reader = PT2ArchiveReader(str(path))
        names = reader.get_file_names()
    except Exception as exc:  # torch raises RuntimeError or AssertionError for bad zips
        raise ArtifactError(f"{path.name}: not a torch.export archive") from exc
    for name in names:
        if not _SAFE_RECORDS.fullmatch(name):
            raise ArtifactError(f"{path.name}: unexpected record {name!r}")
    if "models/model.json" not in names or "data/weights/model_weights_config.json" not in names:
        raise ArtifactError(f"{path.name}: incomplete archive")
    _check_payload_config(reader, "data/weights/model_weights_config.json", "weight_")
    if "data/constants/model_constants_config.json" in names:
        _check_payload_config(reader, "data/constants/model_constants_config.json", "tensor_")

    sample = io.BytesIO()
    torch.save((example_inputs, {}), sample)
    buffer = io.BytesIO()
    with PT2ArchiveWriter(buffer) as writer:
        for name in names:
            if name in _WRITER_OWNED:
                continue
            data = sample.getvalue() if name == _SAMPLE_INPUTS else reader.read_bytes(name)
            writer.write_bytes(name, data)
        if _SAMPLE_INPUTS not in names:
            writer.write_bytes(_SAMPLE_INPUTS, sample.getvalue())
    buffer.seek(0)
    try:
        with _type_hints_once():
            program = torch.export.load(buffer)
    except Exception as exc:  # deserialisation errors come in many types
        raise ArtifactError(f"{path.name}: cannot be loaded: {type(exc).__name__}") from exc
    _check_graph(program, path.name)
    return program


@contextlib.contextmanager
def _type_hints_once() -> Iterator[None]:
    """While torch.export.load runs: each class's type hints resolved once, not once per
    schema object read. Its deserialiser asks `typing.get_type_hints` again for every node,
    argument and tensor of the graph (15,000 times for the MQAR graphs, about a quarter of
    the evaluator's load time); a class's hints do not change between those calls. Calls
    with other arguments than (class, globalns) go through unchanged."""
    original = typing.get_type_hints
    cache: dict[tuple[type, int], dict[str, Any]] = {}

    def once(
        obj: Any, globalns: Any = None, localns: Any = None, include_extras: bool = False
    ) -> dict[str, Any]:
        if not isinstance(obj, type) or localns is not None or include_extras:
            return original(obj, globalns, localns, include_extras)
        key = (obj, id(globalns))
        if key not in cache:
            cache[key] = original(obj, globalns)
        return dict(cache[key])

    typing.get_type_hints = once
    try:
        yield
    finally:
        typing.get_type_hints = original


_ALLOWED_PYTHON_TARGETS: frozenset[Any] = frozenset(
    {operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv}
)
_DENIED_ATEN = re.compile(r"print|from_file|_local_scalar|save|load")


def _check_graph(program: ExportedProgram, what: str) -> None:
    """Only pure ATen calls on tensors, no state that survives a call."""
    signature = program.graph_signature
    if signature.buffers_to_mutate or signature.user_inputs_to_mutate:
        raise ArtifactError(f"{what}: the graph mutates buffers or inputs")
    for node in program.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op != "call_function":
            raise ArtifactError(f"{what}: graph node kind {node.op!r} is not allowed")
        target = node.target
        if isinstance(target, torch._ops.OpOverload):
            if target.namespace != "aten" or _DENIED_ATEN.search(str(target)):
                raise ArtifactError(f"{what}: operator {target} is not allowed")
        elif target not in _ALLOWED_PYTHON_TARGETS:
            raise ArtifactError(f"{what}: call target {target!r} is not allowed")


def _user_input_shapes(program: ExportedProgram) -> list[tuple[tuple[int, ...], torch.dtype]]:
    names = set(program.graph_signature.user_inputs)
    shapes = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            val = node.meta.get("val")
            if not isinstance(val, Tensor):
                raise ArtifactError("graph input without tensor metadata")
            shapes.append((tuple(int(s) for s in val.shape), val.dtype))
    return shapes


def _user_output_shapes(program: ExportedProgram) -> list[tuple[int, ...]]:
    output = next(node for node in program.graph.nodes if node.op == "output")
    shapes = []
    for arg in output.args[0]:
        val = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
        if not isinstance(val, Tensor):
            raise ArtifactError("graph output without tensor metadata")
        shapes.append(tuple(int(s) for s in val.shape))
    return shapes


def _read_manifest(directory: Path) -> Manifest:
    try:
        manifest = Manifest.model_validate_json((directory / MANIFEST_FILE).read_bytes())
    except (OSError, pydantic.ValidationError) as exc:
        raise ArtifactError(f"bad or missing {MANIFEST_FILE}: {exc}") from exc
    for entry in (*manifest.forward, manifest.step, manifest.init_state, manifest.head):
        path = directory / entry.file
        if not path.is_file() or path.is_symlink():
            raise ArtifactError(f"{entry.file}: missing or not a regular file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ArtifactError(f"{entry.file}: larger than {MAX_FILE_BYTES} bytes")
        if file_sha256(path) != entry.sha256:
            raise ArtifactError(f"{entry.file}: sha256 does not match the manifest")
    return manifest


@dataclass(frozen=True)
class _Programs:
    forward: dict[int, ExportedProgram]
    step: ExportedProgram
    init_state: tuple[Tensor, ...]
    head: Tensor  # (V, D) float32, on the evaluation device
    eval_batch: int
    step_batch: int


def _load_tensors(path: Path) -> object:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # any unpickling error: the file is not plain tensors
        raise ArtifactError(f"{path.name}: not plain tensors") from exc


def _load_artifact(directory: Path, spec: Task, device: torch.device) -> _Programs:
    manifest = _read_manifest(directory)
    if manifest.vocab_size != spec.vocab_size:
        raise ArtifactError(f"vocab {manifest.vocab_size} != task vocab {spec.vocab_size}")
    lengths = {entry.seq_len: entry for entry in manifest.forward}
    if not lengths or max(lengths) < max(spec.test_lengths()):
        raise ArtifactError(f"no forward graph as long as T={max(spec.test_lengths())}")
    batch, width = manifest.eval_batch, manifest.hidden_size
    forward = {}
    for seq_len in sorted({_graph_length(lengths, t) for t in spec.test_lengths()}):
        tokens = torch.zeros(batch, seq_len, dtype=torch.long)
        program = _load_program(directory / lengths[seq_len].file, (tokens,))
        if _user_input_shapes(program) != [((batch, seq_len), torch.long)]:
            raise ArtifactError(f"forward graph for T={seq_len} has unexpected inputs")
        if _user_output_shapes(program) != [(batch, seq_len, width)]:
            raise ArtifactError(f"forward graph for T={seq_len} has unexpected outputs")
        forward[seq_len] = program

    head = _load_tensors(directory / manifest.head.file)
    if not isinstance(head, Tensor) or tuple(head.shape) != (spec.vocab_size, width):
        raise ArtifactError(f"{manifest.head.file}: not a ({spec.vocab_size}, {width}) tensor")
    if not head.is_floating_point():
        raise ArtifactError(f"{manifest.head.file}: not a floating-point tensor")
    loaded = _load_tensors(directory / manifest.init_state.file)
    if not isinstance(loaded, tuple) or not all(isinstance(t, Tensor) for t in loaded):
        raise ArtifactError(f"{manifest.init_state.file}: not a tuple of tensors")
    init_state: tuple[Tensor, ...] = loaded
    token_t = torch.zeros(manifest.step_batch, dtype=torch.long)
    step = _load_program(directory / manifest.step.file, (token_t, *init_state))
    expected = [((manifest.step_batch,), torch.long)] + [
        (tuple(t.shape), t.dtype) for t in init_state
    ]
    if _user_input_shapes(step) != expected:
        raise ArtifactError("step graph inputs do not match the initial state")
    if _user_output_shapes(step)[:1] != [(manifest.step_batch, width)]:
        raise ArtifactError("step graph does not return (step_batch, hidden_size) first")
    if device.type != "cpu":
        forward = {t: move_to_device_pass(p, device) for t, p in forward.items()}
        step = move_to_device_pass(step, device)
        init_state = tuple(t.to(device) for t in init_state)
    return _Programs(forward, step, init_state, head.float().to(device), batch, manifest.step_batch)


def _graph_length(lengths: Mapping[int, object], seq_len: int) -> int:
    """The shortest exported length that fits a sequence of `seq_len` tokens."""
    return min(length for length in lengths if length >= seq_len)


class _ForwardRunner:
    """Calls the forward graphs at their fixed batch and keeps the fastest seconds per token
    seen at each length, so timing needs no extra runs."""

    def __init__(self, programs: _Programs) -> None:
        self._modules = {seq_len: p.module() for seq_len, p in programs.forward.items()}
        self._batch = programs.eval_batch
        self.device = programs.head.device
        self.best_seconds: dict[int, float] = {}

    def __call__(self, tokens: Tensor) -> Tensor:
        """Final hidden states (rows, T, D) for up to eval_batch rows; a short chunk is
        padded with its own rows, a short sequence with zeros after its end (causal: they
        cannot reach its outputs)."""
        rows, seq_len = tokens.shape
        if rows < self._batch:
            tokens = tokens.repeat(math.ceil(self._batch / rows), 1)[: self._batch]
        length = _graph_length(self._modules, seq_len)
        if length > seq_len:
            tokens = F.pad(tokens, (0, length - seq_len))
        tokens = tokens.to(self.device)
        _sync(self.device)
        begin = time.perf_counter()
        hidden: Tensor = self._modules[length](tokens)
        _sync(self.device)
        per_token = (time.perf_counter() - begin) / (self._batch * length)
        self.best_seconds[length] = min(per_token, self.best_seconds.get(length, math.inf))
        return hidden[:rows, :seq_len]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class RowScores:
    """Per row: summed negative log-likelihood (nats), correct argmax predictions and the
    number of targets, over the positions whose target is not IGNORE_INDEX."""

    nll: Tensor  # (rows,) float64
    correct: Tensor  # (rows,) int64
    targets: Tensor  # (rows,) int64


def score_rows(
    hidden: Tensor, targets: Tensor, head: Tensor, slice_tokens: int = HEAD_SLICE_TOKENS
) -> RowScores:
    """Apply the head to final hidden states (rows, T, D) where targets (rows, T) are set,
    `slice_tokens` positions at a time, so no more than a slice of logits ever exists.

    Held-out scoring sums these; a zero-shot benchmark reads them per row (a continuation's
    log-likelihood, whether every target token was the argmax)."""
    rows = hidden.shape[0]
    mask = (targets != IGNORE_INDEX).to(hidden.device)
    picked = hidden[mask]
    wanted = targets.to(hidden.device)[mask]
    owner = torch.arange(rows, device=hidden.device).unsqueeze(1).expand_as(mask)[mask]
    nll = torch.zeros(rows, dtype=torch.float64, device=hidden.device)
    correct = torch.zeros(rows, dtype=torch.int64, device=hidden.device)
    for start in range(0, picked.shape[0], slice_tokens):
        part = slice(start, start + slice_tokens)
        logits = F.linear(picked[part].float(), head)
        losses = F.cross_entropy(logits, wanted[part], reduction="none")
        nll.index_add_(0, owner[part], losses.double())
        hits = (logits.argmax(dim=-1) == wanted[part]).long()
        correct.index_add_(0, owner[part], hits)
    return RowScores(nll.cpu(), correct.cpu(), mask.sum(dim=1).cpu())


def _score_set(
    run: _ForwardRunner, test_set: TestSet, batch: int, head: Tensor
) -> tuple[SetMetrics, Tensor]:
    """Metrics over the whole set, chunk by chunk; also returns the first chunk's hidden
    states for the checks."""
    loss_sum, correct, count = 0.0, 0, 0
    first: Tensor | None = None
    row_losses: list[Tensor] = []
    for start in range(0, test_set.batch.tokens.shape[0], batch):
        rows = test_set.batch.rows(start, start + batch)
        hidden = run(rows.tokens)
        first = hidden if first is None else first
        scores = score_rows(hidden, rows.targets, head)
        loss_sum += float(scores.nll.sum())
        correct += int(scores.correct.sum())
        count += int(scores.targets.sum())
        scored = scores.targets > 0
        row_losses.append(scores.nll[scored] / scores.targets[scored])
    if first is None:
        raise ArtifactError(f"test set {test_set.name} is empty")
    loss = loss_sum / count if count else math.nan
    accuracy = correct / count if count else 0.0
    per_row = torch.cat(row_losses)
    stderr = float(per_row.std() / math.sqrt(len(per_row))) if len(per_row) > 1 else math.nan
    metrics = SetMetrics(test_set.name, test_set.batch.seq_len, loss, accuracy, count, stderr)
    return metrics, first


def _causality(
    run: _ForwardRunner, batch: Batch, hidden: Tensor, vocab: int, seed: int
) -> CheckResult:
    """Replace every token after a random cut t per row; outputs up to t must not move."""
    rows, seq_len = hidden.shape[0], batch.seq_len
    tokens = batch.tokens[:rows]
    gen = generator(seed, "causality", seq_len)
    cut = torch.randint(0, max(1, seq_len - 1), (rows, 1), generator=gen)
    future = torch.arange(seq_len).unsqueeze(0) > cut
    noise = torch.randint(0, vocab, tokens.shape, generator=gen)
    moved = run(torch.where(future, noise, tokens))
    change = (moved - hidden).abs().amax(dim=-1).cpu()
    diff = float(change.masked_fill(future, 0.0).amax())
    scale = max(1.0, float(hidden.abs().amax()))
    passed = math.isfinite(diff) and diff <= CAUSALITY_RTOL * scale
    return CheckResult("causality", passed, f"T={seq_len}: max change of past outputs {diff:.3g}")


def _recurrent(programs: _Programs, batch: Batch, hidden: Tensor) -> CheckResult:
    """Replay the first rows token by token through the step graph; compare to forward."""
    state_out = _user_output_shapes(programs.step)[1:]
    if state_out != [tuple(t.shape) for t in programs.init_state]:
        return CheckResult("state_fixed", False, f"step returns state shapes {state_out}")
    rows = min(programs.step_batch, hidden.shape[0])
    tokens = batch.tokens[:rows].repeat(math.ceil(programs.step_batch / rows), 1)
    tokens = tokens.to(hidden.device)
    step = programs.step.module()
    state = programs.init_state
    outs = []
    for t in range(batch.seq_len):
        hidden_t, *new_state = step(tokens[: programs.step_batch, t], *state)
        outs.append(hidden_t[:rows])
        state = tuple(new_state)
    reference = hidden[:rows]
    diff = float((torch.stack(outs, dim=1) - reference).abs().amax())
    scale = max(1.0, float(reference.abs().amax()))
    passed = math.isfinite(diff) and diff <= RECURRENT_RTOL * scale
    return CheckResult("recurrent", passed, f"T={batch.seq_len}: max |step - forward| {diff:.3g}")


def _count_tensors(program: ExportedProgram) -> tuple[int, int]:
    """(parameter elements, buffer and constant elements), shared storage counted once."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()

    def count(tensors: list[Tensor]) -> int:
        total = 0
        for tensor in tensors:
            key = (
                tensor.untyped_storage().data_ptr(),
                int(tensor.storage_offset()),
                tuple(tensor.shape),
            )
            if key not in seen:
                seen.add(key)
                total += tensor.numel()
        return total

    signature = program.graph_signature
    params = count([program.state_dict[name] for name in signature.parameters])
    others = [program.state_dict[name] for name in signature.buffers if name in program.state_dict]
    others += [t for t in program.constants.values() if isinstance(t, Tensor)]
    return params, count(others)


def _parameter_split(programs: _Programs) -> tuple[int, int, int]:
    """(all parameters, embedding parameters, buffer elements) of the forward graph, plus
    the head file where it is neither the embedding (tied) nor a parameter of the graph."""
    program = programs.forward[max(programs.forward)]
    n_params, n_buffers = _count_tensors(program)
    names = set(program.graph_signature.parameters)
    embedding = program.state_dict.get(EMBEDDING_PARAMETER)
    if not isinstance(embedding, Tensor) or EMBEDDING_PARAMETER not in names:
        raise ArtifactError(f"the forward graph has no parameter {EMBEDDING_PARAMETER}")
    head = programs.head
    if HEAD_PARAMETER in names:
        return n_params, embedding.numel() + head.numel(), n_buffers
    if embedding.shape == head.shape and torch.equal(embedding.float().to(head.device), head):
        return n_params, embedding.numel(), n_buffers
    return n_params + head.numel(), embedding.numel() + head.numel(), n_buffers


def _state_size(programs: _Programs) -> int:
    """Elements per sequence: batched states divided by the batch, shared ones counted whole."""
    total = 0
    for shape, _ in _user_input_shapes(programs.step)[1:]:
        numel = math.prod(shape)
        total += (
            numel // programs.step_batch if shape and shape[0] == programs.step_batch else numel
        )
    return total


@dataclass(frozen=True)
class BenchmarkScores:
    """A benchmark's metrics and, per request, the summed log-likelihood of its
    continuation (nats) and whether greedy decoding produces it."""

    metrics: BenchmarkMetrics
    loglikelihood: np.ndarray
    greedy: np.ndarray


def _score_benchmark(run: _ForwardRunner, programs: _Programs, bench: Benchmark) -> BenchmarkScores:
    context = max(programs.forward)
    if bench.entry.max_continuation_tokens > context:
        raise StagedError(
            f"benchmark {bench.name}: a continuation of {bench.entry.max_continuation_tokens} "
            f"tokens does not fit the model's context of {context}"
        )
    n = bench.entry.requests
    loglikelihood = np.empty(n, dtype=np.float64)
    greedy = np.empty(n, dtype=bool)
    for start in range(0, n, programs.eval_batch):
        stop = min(n, start + programs.eval_batch)
        rows = request_rows(bench, context, start, stop)
        scores = score_rows(run(rows.tokens), rows.targets, programs.head)
        loglikelihood[start:stop] = (-scores.nll).numpy()
        greedy[start:stop] = (scores.correct == scores.targets).numpy()
    return BenchmarkScores(summarise(bench, loglikelihood, greedy), loglikelihood, greedy)


def _check_staged(staged: Staged, spec: Task) -> None:
    if staged.manifest.vocab_size != spec.vocab_size:
        raise StagedError(
            f"{staged.directory}: staged for a vocabulary of {staged.manifest.vocab_size:,}, "
            f"the task's is {spec.vocab_size:,}"
        )


def score_benchmarks(
    artifact_dir: Path, spec: Task, staged: Staged, device: str | torch.device = "cpu"
) -> tuple[BenchmarkScores, ...]:
    """Only the staged benchmarks of an export directory, with per-request scores."""
    _check_staged(staged, spec)
    programs = _load_artifact(artifact_dir, spec, torch.device(device))
    run = _ForwardRunner(programs)
    with torch.no_grad():
        return tuple(_score_benchmark(run, programs, b) for b in staged.benchmarks)


def evaluate(
    artifact_dir: Path,
    spec: Task,
    heldout_seed: int,
    device: str | torch.device = "cpu",
    benchmarks: Staged | None = None,
) -> Metrics:
    """Score an export directory on the task's held-out sets (MQAR: generated here from
    `heldout_seed`; LM: the campaign's held-out windows), and on the staged `benchmarks`,
    on `device`.

    Raises ArtifactError when the artifact is malformed or unsafe to run, StagedError when
    the benchmarks do not fit the task (the node's mistake: its checks should have caught
    it). Checks that fail on the held-out inputs are returned as `Metrics.failure`
    (FUTURE_LEAK, RECURRENT_MISMATCH, STATE_GROWTH, NAN_DIVERGENCE), with the metrics
    still filled in.
    """
    start = time.perf_counter()
    where = torch.device(device)
    if benchmarks is not None:
        _check_staged(benchmarks, spec)
    if where.type == "cuda":
        torch.cuda.reset_peak_memory_stats(where)
    programs = _load_artifact(artifact_dir, spec, where)
    run = _ForwardRunner(programs)
    checks: list[CheckResult] = []
    set_metrics: list[SetMetrics] = []
    first_of_length: dict[int, tuple[Batch, Tensor]] = {}
    with torch.no_grad():
        for test_set in spec.test_sets(heldout_seed):
            metrics_of_set, first = _score_set(run, test_set, programs.eval_batch, programs.head)
            set_metrics.append(metrics_of_set)
            first_of_length.setdefault(test_set.batch.seq_len, (test_set.batch, first))
        for batch, hidden in (first_of_length[t] for t in sorted(first_of_length)):
            checks.append(_causality(run, batch, hidden, spec.vocab_size, heldout_seed))
        checks.append(_recurrent(programs, *first_of_length[max(first_of_length)]))
        bench_metrics = tuple(
            _score_benchmark(run, programs, b).metrics
            for b in (benchmarks.benchmarks if benchmarks is not None else ())
        )
    shortest, longest = min(run.best_seconds), max(run.best_seconds)
    timings = tuple((t, run.best_seconds[t]) for t in sorted({shortest, longest}))

    failure, detail = None, ""
    finite = all(math.isfinite(m.loss) for m in set_metrics)
    checks.append(CheckResult("finite", finite, "" if finite else "non-finite held-out loss"))
    for check in checks:
        if not check.passed and failure is None:
            failure, detail = _FAILURE_OF_CHECK[check.name], check.detail
    n_params, n_embedding, n_buffers = _parameter_split(programs)
    ratio = None
    if len(timings) > 1:
        ratio = timings[-1][1] / timings[0][1] if timings[0][1] > 0 else math.inf
    metrics = Metrics(
        task=spec.kind,
        spec_digest=spec.spec_digest(),
        sets=tuple(set_metrics),
        mean_accuracy=sum(m.accuracy for m in set_metrics) / len(set_metrics),
        mean_loss=sum(m.loss for m in set_metrics) / len(set_metrics),
        n_params=n_params,
        n_buffer_elements=n_buffers,
        state_size=_state_size(programs),
        seconds_per_token=timings,
        time_ratio=ratio,
        checks=tuple(checks),
        failure=failure,
        detail=detail,
        eval_seconds=time.perf_counter() - start,
        accuracies={m.name: m.accuracy for m in set_metrics},
        n_embedding_params=n_embedding,
        n_targets=sum(m.n_targets for m in set_metrics),
        device=str(where),
        peak_memory_bytes=(
            int(torch.cuda.max_memory_allocated(where)) if where.type == "cuda" else None
        ),
        benchmarks=bench_metrics,
    )
    logger.info(
        "artifact evaluated",
        extra={
            "mean_accuracy": metrics.mean_accuracy,
            "failure": failure,
            "seconds": metrics.eval_seconds,
        },
    )
    return metrics


_FAILURE_OF_CHECK = {
    "causality": FailureClass.FUTURE_LEAK,
    "recurrent": FailureClass.RECURRENT_MISMATCH,
    "state_fixed": FailureClass.STATE_GROWTH,
    "finite": FailureClass.NAN_DIVERGENCE,
}


SpecModel = Annotated[MQARSpec | LMSpec, pydantic.Field(discriminator="kind")]


class EvalJob(pydantic.BaseModel):
    """JOB.json: what to evaluate. The held-out seed never reaches the sandbox."""

    model_config = pydantic.ConfigDict(extra="forbid")

    artifact_dir: Path
    spec: SpecModel
    heldout_seed: int
    threads: int = pydantic.Field(default=1, gt=0, le=256)
    device: Literal["cpu", "cuda"] = "cpu"  # cuda: the GPU the experiment leased (cuda:0)
    benchmarks: Path | None = None  # a staged benchmark folder (loop.benchmarks.staged)


class EvalOutput(pydantic.BaseModel):
    """OUT.json: metrics, or an error and the failure class it maps to."""

    # A diverged model has NaN losses; keep them as NaN (Python's json reads it) not null.
    model_config = pydantic.ConfigDict(ser_json_inf_nan="constants")

    ok: bool
    metrics: Metrics | None = None
    error: str | None = None
    failure: FailureClass | None = None


def run_job(job: EvalJob) -> EvalOutput:
    torch.set_num_threads(job.threads)
    if job.device == "cuda" and not torch.cuda.is_available():
        # The node's fault, not the candidate's: its GPU lease reached a sandbox without one.
        return EvalOutput(
            ok=False,
            error="evaluation on cuda was asked for but this sandbox sees no CUDA device",
            failure=FailureClass.CRASH,
        )
    try:
        staged = None if job.benchmarks is None else load_staged(job.benchmarks)
        metrics = evaluate(job.artifact_dir, job.spec, job.heldout_seed, job.device, staged)
    except ArtifactError as exc:
        return EvalOutput(ok=False, error=str(exc), failure=FailureClass.BAD_OUTPUT)
    except StagedError as exc:
        # The node's staged benchmarks, not the candidate: its checks should have refused them.
        return EvalOutput(ok=False, error=f"benchmarks: {exc}", failure=FailureClass.CRASH)
    except Exception as exc:  # a graph that crashes while running is still the candidate's
        logger.warning("evaluation crashed", exc_info=True)
        return EvalOutput(
            ok=False, error=f"{type(exc).__name__}: {exc}", failure=FailureClass.CRASH
        )
    return EvalOutput(ok=True, metrics=metrics, failure=metrics.failure)


def main(argv: list[str] | None = None) -> int:
    """`python -m loop.evaluate JOB.json OUT.json`; exit 0 whenever OUT.json was written."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m loop.evaluate JOB.json OUT.json\n")
        return 2
    job_path, out_path = Path(args[0]), Path(args[1])
    try:
        job = EvalJob.model_validate_json(job_path.read_bytes())
    except (OSError, pydantic.ValidationError) as exc:
        output = EvalOutput(ok=False, error=f"bad job file: {exc}")
    else:
        output = run_job(job)
    out_path.write_text(output.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
