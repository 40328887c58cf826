"""Export a trained Backbone as graphs that the trusted evaluator runs without its code.

The sandbox calls this after training. It writes, into one directory:

- `forward_<T>.pt2`: `Backbone.features` (normalised final hidden states, (B, T, D): no
  head, so no B x T x vocabulary logits) at (eval_batch, T) for the lengths
  `graph_lengths` picks: always the longest test length, and a shorter one only where
  padding its test sets up to the next graph would cost more than another graph does
  (the evaluator right-pads each test sequence to the shortest graph that fits it: the
  model is causal, which it re-checks, so padding after a sequence cannot change its
  outputs); eval_batch is `eval_batch_for` the longest length unless given;
- `step.pt2`: one recurrent step, `(token_t (B,), *state) -> (hidden_t (B, D), *new_state)`
  at (step_batch,);
- `head.pt`: the output projection (V, D) as a plain tensor, which the evaluator applies
  itself a slice at a time;
- `init_state.pt`: the initial state for step_batch sequences (plain tensors, so the
  evaluator can read it with `torch.load(weights_only=True)`);
- `manifest.json`: shapes, file names and the sha256 of every file (`loop.evaluate.Manifest`).

Shapes are fixed because candidate mixers may branch on shapes (chunking, padding): a
fixed-length graph is robust where a dynamic length would need guards the mixer cannot
give. Not one graph per length: exporting, saving and (in the evaluator) loading a graph
costs about 2.5 s of CPU, as much as a forward pass over ~100k padding tokens.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from loop.errors import LoopError
from loop.evaluate import (
    EXPORT_FORMAT,
    HEAD_FILE,
    INIT_STATE_FILE,
    MANIFEST_FILE,
    STEP_BATCH,
    STEP_FILE,
    FileEntry,
    ForwardEntry,
    Manifest,
    eval_batch_for,
    forward_file,
)
from loop.model import Backbone
from loop.tasks import Task
from loop.tasks.common import file_sha256

logger = logging.getLogger(__name__)

# Padding tokens that cost about as much evaluation time as one more exported graph
# (export + save + fenced load, ~2.5 s; DeltaNet forward ~18 us/token on one thread).
PAD_TOKENS_PER_GRAPH = 100_000


class ExportError(LoopError):
    """The trained model could not be exported as a fixed-shape graph.

    The caller records FailureClass.EXPORT for the candidate: its code is not scoreable as
    written (data-dependent control flow, Python side effects, unsupported ops). Retrying
    the same code will fail the same way; a repair round may rewrite it.
    """


@dataclass(frozen=True)
class ExportResult:
    """Where the graphs went and how long exporting took."""

    directory: Path
    manifest: Manifest
    seconds: float


class _ForwardGraph(nn.Module):
    """`Backbone.features`: what the evaluator's forward graphs return."""

    def __init__(self, model: Backbone) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model.features(tokens)


class _StepGraph(nn.Module):
    """`Backbone.step_features` with the state spread into positional tensors, as export
    needs."""

    def __init__(self, model: Backbone) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_t: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        hidden, new_state = self.model.step_features(token_t, tuple(state))
        return (hidden, *new_state)


@contextlib.contextmanager
def _set_while(target: object, name: str, value: object) -> Iterator[None]:
    """`target.<name>` is `value` inside the block, and as it was after (absent again if
    it was absent)."""
    absent = object()
    before = getattr(target, name, absent)
    setattr(target, name, value)
    try:
        yield
    finally:
        if before is absent:
            delattr(target, name)
        else:
            setattr(target, name, before)


def _without_stack_traces() -> contextlib.AbstractContextManager[None]:
    """Tracing without the source stack of every node: the evaluator never reads them,
    and recording them took about a quarter of the export (0.4 s of 1.7 s for DeltaNet)."""
    return _set_while(torch.fx.config, "do_not_emit_stack_traces", True)


def _without_canonical_form_test() -> contextlib.AbstractContextManager[None]:
    """Saving without the self-test torch's serializer runs on every save: it builds the
    program's canonical form (a deep copy, sorted and renamed) only to see that it can,
    and discards it, so the archive's bytes do not change. It took about 40 % of a save
    (0.3 s of 0.75 s for DeltaNet's three graphs). A test checks that the result is still
    discarded in the installed torch."""
    from torch._export.serde import serialize

    return _set_while(serialize, "canonicalize", _not_canonicalized)


def _not_canonicalized(program: object, constants: object = None) -> object:
    return program


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, what: str) -> FileEntry:
    try:
        with _without_stack_traces():
            program = torch.export.export(module, args, strict=False)
        with _without_canonical_form_test():
            torch.export.save(program, path)
    except Exception as exc:  # export raises many types; all mean "not exportable"
        raise ExportError(f"could not export {what}: {type(exc).__name__}: {exc}") from exc
    return FileEntry(file=path.name, sha256=file_sha256(path))


def graph_lengths(spec: Task) -> tuple[int, ...]:
    """Forward-graph lengths, ascending: the longest test length, plus each shorter length
    whose test sets would add over PAD_TOKENS_PER_GRAPH padding in the next graph up."""
    rows: dict[int, int] = {}
    for test_set in spec.test_sets(0):
        rows[test_set.batch.seq_len] = rows.get(test_set.batch.seq_len, 0) + len(
            test_set.batch.tokens
        )
    lengths = sorted(rows, reverse=True)
    chosen = [lengths[0]]
    for seq_len in lengths[1:]:
        if rows[seq_len] * (chosen[-1] - seq_len) > PAD_TOKENS_PER_GRAPH:
            chosen.append(seq_len)
    return tuple(sorted(chosen))


def export_model(
    model: Backbone,
    spec: Task,
    out_dir: Path,
    *,
    eval_batch: int | None = None,
    step_batch: int = STEP_BATCH,
) -> ExportResult:
    """Write the forward graphs, the step graph, the head, the initial state and the
    manifest.

    Raises ExportError when any graph cannot be exported. `out_dir` is created if needed;
    existing files of the same names are overwritten.
    """
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    lengths = graph_lengths(spec)
    rows = eval_batch_for(max(lengths)) if eval_batch is None else eval_batch
    forward: list[ForwardEntry] = []
    for seq_len in lengths:
        tokens = torch.zeros(rows, seq_len, dtype=torch.long)
        entry = _export(
            _ForwardGraph(model),
            (tokens,),
            out_dir / forward_file(seq_len),
            f"forward at T={seq_len}",
        )
        forward.append(ForwardEntry(seq_len=seq_len, file=entry.file, sha256=entry.sha256))

    try:
        state = tuple(t.detach().clone() for t in model.init_state(step_batch))
    except Exception as exc:  # candidate code: any error means the state is unusable
        raise ExportError(f"init_state failed: {type(exc).__name__}: {exc}") from exc
    token_t = torch.zeros(step_batch, dtype=torch.long)
    step = _export(_StepGraph(model), (token_t, *state), out_dir / STEP_FILE, "step")
    init_path = out_dir / INIT_STATE_FILE
    torch.save(state, init_path)
    head_path = out_dir / HEAD_FILE
    torch.save(model.head_weight.detach().clone(), head_path)

    manifest = Manifest(
        format=EXPORT_FORMAT,
        vocab_size=spec.vocab_size,
        hidden_size=model.config.d_model,
        eval_batch=rows,
        step_batch=step_batch,
        spec_digest=spec.spec_digest(),
        forward=forward,
        step=step,
        init_state=FileEntry(file=init_path.name, sha256=file_sha256(init_path)),
        head=FileEntry(file=head_path.name, sha256=file_sha256(head_path)),
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    seconds = time.perf_counter() - start
    logger.info("model exported", extra={"directory": str(out_dir), "seconds": seconds})
    return ExportResult(directory=out_dir, manifest=manifest, seconds=seconds)
