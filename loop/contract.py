"""What every agent is told about the candidate interface, the screening rules and the
campaign's task and metrics, and the static interface check that LLM-written code must
pass before the sandbox.

`METRICS` and `INTERFACE` are the MQAR screening campaign's words; `metrics_text(spec)`
and `interface_text(spec)` are the campaign's own (MQAR recall, or language modelling
scored on held-out loss), which agents of an LM campaign must be given instead.
"""

from __future__ import annotations

import ast
import functools
import inspect

from loop.screen import ALLOWED_MODULES, ScreenConfig
from loop.syntax import class_source, parse
from loop.tasks import LMSpec, TaskSpec

_SC = ScreenConfig()

INTERFACE = """\
A candidate is one Python module that defines `class Mixer(nn.Module)`:

    class Mixer(nn.Module):
        def __init__(self, d_model: int, n_heads: int, **options): ...
        def forward(self, x: Tensor) -> Tensor: ...        # (B, T, D) -> (B, T, D), causal
        def init_state(self, batch: int) -> State: ...      # size independent of T
        def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]: ...

State = tuple[Tensor, ...]: a flat tuple of tensors, even for one (`(s,)`); x_t is (B, D).

The harness owns the backbone (embedding, pre-norm blocks with a short causal convolution
of kernel 3 before the mixer, head); the module is only the token mixer."""

_LM_BACKBONE = """\
The harness owns the backbone (embedding, pre-norm blocks of a short causal convolution
of kernel 3, then the mixer, then a SwiGLU MLP; final norm, head); the module is only the
token mixer."""

RULES = f"""\
Screening, before any training (a failure ends the experiment with that failure class):
- imports only from: {", ".join(sorted(ALLOWED_MODULES - {"__future__"}))}; no file, process,
  network or interpreter access (open, exec, eval, os, sys, getattr tricks, dunder access);
- builds and runs at d_model 64 and 70 with 2 heads, sequence lengths 7 and 33;
- causality: changing tokens after t must not move outputs up to t (future_leak);
- recurrent equivalence: step() token by token must equal forward() within
  {_SC.tolerance:g} relative (recurrent_mismatch); the state must not grow with T (state_growth);
- at most {_SC.max_params:,} parameters (param_budget) and {_SC.max_state_floats:,} state
  numbers per sequence (state_budget) at d_model 64, 2 heads;
- cost must scale linearly: forward at 4x the length may cost at most {_SC.max_cost_ratio:g}x
  (too_slow); non-finite outputs are nan_divergence;
- a module that computes what a trained candidate computes (the same outputs and gradients
  at a fixed point near its initial parameters, the same state size) is stopped as a
  behaviour_twin: renaming or refactoring a parent is not a new design."""

METRICS = """\
The task is MQAR (multi-query associative recall): key-value pairs, then queries of keys.
Metrics: acc_64x8, acc_128x16, acc_128x32, acc_256x64 (acc_LxP: recall accuracy on the
test set of length L holding P pairs), mean_acc (their mean), state_size (recurrent state
numbers per sequence), params, time_ratio (cost growth for 4x length). fitness-v1 =
mean_acc minus the reference baseline's (DeltaNet by default, trained on the same seed)
minus 0.05 per doubling of state_size over the reference's."""

_LM_METRICS = """\
The task is language modelling on real text: next-token prediction on a tokenised corpus
(vocabulary {vocab:,}, context {context:,}), the model trained on windows of the corpus
and scored on the campaign's held-out windows ({heldout:,} target tokens), which training
never reads and every candidate and baseline shares.
Metrics: heldout_loss (cross-entropy in nats per token on the held-out windows; lower is
better), heldout_ppl (its exponential, the perplexity), heldout_acc (next-token accuracy),
state_size (recurrent state numbers per sequence), params, params_embedding and
params_non_embedding (the mixer and MLP side), time_ratio (cost growth for 4x length),
tokens_per_s (training throughput) and tokens_seen. Where the campaign stages zero-shot
benchmarks (PIQA, HellaSwag, ARC, WinoGrande, LAMBADA), each is scored from the
log-likelihood of its answers: bench_<name>_acc, bench_<name>_acc_norm (length-
normalised), bench_lambada_openai_ppl, and bench_mean_acc (the mean of each benchmark's
headline accuracy); every number's standard error is <name>_stderr. lm-fitness-v1 = the
reference baseline's heldout_loss minus the candidate's (DeltaNet by default, trained on
the same seed and tokens), plus the candidate's bench_mean_acc minus the reference's,
minus 0.05 per doubling of state_size over the reference's."""


def metrics_text(spec: TaskSpec) -> str:
    """The task and metrics of a campaign on `spec`, as agents are told them."""
    if isinstance(spec, LMSpec):
        return _LM_METRICS.format(
            vocab=spec.vocab_size, context=spec.seq_len, heldout=spec.heldout_tokens
        )
    return METRICS


def interface_text(spec: TaskSpec) -> str:
    """The candidate interface, with the backbone the campaign's task builds around it."""
    if isinstance(spec, LMSpec):
        head, _, _ = INTERFACE.rpartition("\n\nThe harness owns")
        return f"{head}\n\n{_LM_BACKBONE}"
    return INTERFACE


REQUIRED_METHODS = ("forward", "init_state", "step")


def interface_problem(code: str) -> str | None:
    """Why the module does not define the Mixer interface, or None when it does (or when
    it does not parse: syntax errors are the screen's to report and the repairer's to fix).

    A `Mixer` class must define forward, init_state and step itself or in a base class of
    the same module; an alias or import named Mixer is accepted as is.
    """
    try:
        tree = parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return None
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "Mixer" for t in targets):
                return None
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
            (a.asname or a.name) == "Mixer" for a in node.names
        ):
            return None
    mixer = classes.get("Mixer")
    if mixer is None:
        return "the module defines no top-level `Mixer`"
    methods: set[str] = set()
    pending = [mixer]
    seen: set[str] = set()
    while pending:
        cls = pending.pop()
        seen.add(cls.name)
        methods |= {
            n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes and base.id not in seen:
                pending.append(classes[base.id])
    missing = [m for m in REQUIRED_METHODS if m not in methods]
    if missing:
        return f"class Mixer does not define {', '.join(missing)} (needs forward, init_state, step)"
    return None


@functools.lru_cache(maxsize=64)  # a prompt shows its parents' sources: parsed once each
def baseline_source(code: str) -> str | None:
    """For a parent that is one line importing a baseline (`from kernels.baselines import
    DeltaNet as Mixer`), the baseline's source with the imports it uses, so an agent sees
    the design and the helpers it may import itself; None for any other code."""
    try:
        tree = parse(code)
    except (SyntaxError, ValueError):
        return None
    if not (len(tree.body) == 1 and isinstance(tree.body[0], ast.ImportFrom)):
        return None
    node = tree.body[0]
    if node.module != "kernels.baselines" or len(node.names) != 1:
        return None
    import kernels.baselines as module

    cls = getattr(module, node.names[0].name, None)
    if not isinstance(cls, type):
        return None
    module_source = inspect.getsource(module)
    imports = [
        ast.get_source_segment(module_source, n) or ""
        for n in parse(module_source).body
        if isinstance(n, ast.Import | ast.ImportFrom)
    ]
    classes = [c for c in reversed(cls.__mro__) if c.__module__ == module.__name__]
    parts = ["\n".join(imports), *(class_source(c) for c in classes)]
    return "\n\n".join(parts)
