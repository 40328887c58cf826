"""Screening of candidate mixers: a static check of the source, then behavioural checks.

`check_source` runs in the trusted parent and never executes the code: it is a first
filter that turns obviously hostile or broken code into a verdict cheaply. It is not the
containment; the sandbox (loop/sandbox.py) is. `screen_mixer` runs inside the sandbox,
builds the candidate at odd shapes and checks what the design asks of every mixer:
shapes, finiteness, causality, recurrent equivalence with a fixed-size state, budgets and
linear cost. Every outcome, including a crash inside a check, is a `ScreenReport` value.
"""

from __future__ import annotations

import ast
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from loop.errors import LoopError
from loop.outcome import CheckResult, FailureClass, ScreenReport
from loop.syntax import parse

logger = logging.getLogger(__name__)

ALLOWED_MODULES = frozenset(
    {"torch", "math", "typing", "dataclasses", "functools", "kernels", "__future__"}
)
# Builtins and module names that reach the file system, the interpreter or the process.
FORBIDDEN_NAMES = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
        "exit",
        "quit",
        "help",
        "memoryview",
        "os",
        "sys",
        "subprocess",
        "socket",
        "ctypes",
        "importlib",
        "builtins",
        "shutil",
        "pathlib",
        "signal",
        "multiprocessing",
        "threading",
        "pickle",
        "marshal",
    }
)
# Attribute (and imported) names that load native code, read or write files, start
# processes or reach into the interpreter, even under an allowed top-level package.
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "from_file",
        "load",
        "save",
        "load_library",
        "load_inline",
        "cpp_extension",
        "hub",
        "serialization",
        "multiprocessing",
        "distributed",
        "package",
        "compile",
        "set_num_threads",
        "set_num_interop_threads",
        "_C",
        "_dynamo",
        "_inductor",
        "system",
        "popen",
        "fork",
        "get_type_hints",  # evaluates annotation strings, which the AST check cannot see
        "ForwardRef",
    }
)
# Private attributes (`torch._foo`, `fx.graph_module._forward_from_src`) are reachable
# only on the candidate's own objects.
OWN_OBJECTS = frozenset({"self", "cls"})
# Dunder attributes a mixer legitimately needs; every other dunder is an escape hatch
# (`__class__`, `__subclasses__`, `__globals__`, `__builtins__`, `__code__`, ...).
ALLOWED_DUNDER_ATTRIBUTES = frozenset({"__init__", "__name__"})
ALLOWED_DUNDER_NAMES = frozenset({"__name__", "__all__"})
ATTRIBUTE_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
MAX_SOURCE_CHARS = 200_000


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _failed(check: str, failure: FailureClass, detail: str) -> ScreenReport:
    return ScreenReport(
        checks=(CheckResult(check, False, detail),), failure=failure, message=detail
    )


def check_source(code: str, *, max_chars: int = MAX_SOURCE_CHARS) -> ScreenReport:
    """Statically screen candidate source: parses, allowed imports and names, defines Mixer.

    Never imports or runs the code. Code that passes may still be hostile (this is a
    filter, not a jail), so it must still run only inside the sandbox.
    """
    if len(code) > max_chars:
        return _failed(
            "parse",
            FailureClass.FORBIDDEN,
            f"source is {len(code)} characters; the limit is {max_chars}",
        )
    try:
        tree = parse(code, filename="candidate.py")
    except SyntaxError as exc:
        detail = f"line {exc.lineno}: {exc.msg}"
        return _failed("parse", FailureClass.SYNTAX_IMPORT, detail)
    except (ValueError, RecursionError, MemoryError) as exc:
        # Null bytes, or nesting too deep for the parser.
        return _failed("parse", FailureClass.SYNTAX_IMPORT, f"cannot parse: {exc}")
    checks = [CheckResult("parse", True, f"{len(tree.body)} top-level statements")]

    violations = sorted(set(_violations(tree)))
    if violations:
        detail = "; ".join(f"line {line}: {text}" for line, text in violations[:20])
        if len(violations) > 20:
            detail += f"; and {len(violations) - 20} more"
        checks.append(CheckResult("allow_list", False, detail))
        return ScreenReport(tuple(checks), FailureClass.FORBIDDEN, detail)
    checks.append(CheckResult("allow_list", True, "imports and names within the allow-list"))

    if not _defines_mixer(tree):
        detail = "the module defines no top-level `Mixer` (a class, an alias or an import)"
        checks.append(CheckResult("defines_mixer", False, detail))
        return ScreenReport(tuple(checks), FailureClass.SYNTAX_IMPORT, detail)
    checks.append(CheckResult("defines_mixer", True, "Mixer is defined"))
    return ScreenReport(tuple(checks))


def _module_violation(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in ALLOWED_MODULES:
        allowed = ", ".join(sorted(ALLOWED_MODULES - {"__future__"}))
        return f"import of module {parts[0]!r} is not allowed (allowed: {allowed})"
    bad = [part for part in parts[1:] if part in FORBIDDEN_ATTRIBUTES or _is_dunder(part)]
    if bad:
        return f"import of {module!r} is not allowed ({bad[0]!r} is forbidden)"
    return None


def _violations(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (problem := _module_violation(alias.name)) is not None:
                    yield line, problem
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield line, "relative imports are not allowed"
                continue
            if (problem := _module_violation(node.module or "")) is not None:
                yield line, problem
            for alias in node.names:
                if alias.name == "*":
                    yield line, f"'from {node.module} import *' is not allowed"
                elif alias.name in FORBIDDEN_ATTRIBUTES or _is_dunder(alias.name):
                    yield line, f"importing {alias.name!r} from {node.module!r} is not allowed"
        elif isinstance(node, ast.Name):
            yield from _name_violations(node, line)
        elif isinstance(node, ast.Attribute):
            dunder = _is_dunder(node.attr) and node.attr not in ALLOWED_DUNDER_ATTRIBUTES
            if dunder or node.attr in FORBIDDEN_ATTRIBUTES:
                yield line, f"access to attribute {node.attr!r} is not allowed"
            elif node.attr.startswith("_") and not _is_dunder(node.attr) and not _own(node):
                yield line, f"private attribute {node.attr!r} is allowed only on self"
        elif isinstance(node, ast.Call):
            yield from _call_violations(node, line)


def _own(node: ast.Attribute) -> bool:
    """Whether the attribute is read from self/cls or super(): the candidate's own code."""
    value = node.value
    if isinstance(value, ast.Name):
        return value.id in OWN_OBJECTS
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "super"
    )


def _name_violations(node: ast.Name, line: int) -> Iterator[tuple[int, str]]:
    dunder = _is_dunder(node.id) and node.id not in ALLOWED_DUNDER_NAMES
    if dunder or node.id in FORBIDDEN_NAMES:
        yield line, f"use of {node.id!r} is not allowed"


def _call_violations(node: ast.Call, line: int) -> Iterator[tuple[int, str]]:
    func = node.func
    if isinstance(func, ast.Name) and func.id in ATTRIBUTE_BUILTINS:
        # A computed name could spell a dunder, so only literal, ordinary names pass.
        name = node.args[1] if len(node.args) > 1 else None
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            yield line, f"{func.id}() needs a string literal attribute name"
        elif _is_dunder(name.value) or name.value in FORBIDDEN_ATTRIBUTES:
            yield line, f"{func.id}() of {name.value!r} is not allowed"
    if (
        isinstance(func, ast.Attribute)
        and func.attr in {"format", "format_map"}
        and isinstance(func.value, ast.Constant)
        and isinstance(func.value.value, str)
        and "__" in func.value.value
    ):
        # "{0.__class__}".format(x) reads dunder attributes without an Attribute node.
        yield line, "format strings that name dunder attributes are not allowed"


def _defines_mixer(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Mixer":
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "Mixer" for t in targets):
                return True
        if isinstance(node, ast.ImportFrom | ast.Import) and any(
            (alias.asname or alias.name) == "Mixer" for alias in node.names
        ):
            return True
    return False


@dataclass(frozen=True)
class ScreenConfig:
    """What screening demands of a mixer. Budgets apply at the first (reference) shape.

    The defaults admit every baseline except that softmax attention is quadratic by
    design: screen it with `max_cost_ratio=None`.
    """

    shapes: tuple[tuple[int, int], ...] = ((64, 2), (70, 2))  # (d_model, n_heads)
    lengths: tuple[int, ...] = (7, 33)
    batch: int = 3
    tolerance: float = 1e-3  # step-by-step vs forward, relative to max(1, max|y|)
    leak_tolerance: float = 1e-5  # causality probe, relative to max(1, max|y|)
    leak_probes: int = 4  # positions t probed per length
    max_params: int = 500_000  # parameters plus buffers, at the reference shape
    max_state_floats: int = 131_072  # state elements per example, at the reference shape
    cost_lengths: tuple[int, int] = (512, 2048)
    cost_batch: int = 1
    cost_repeats: int = 3
    max_cost_ratio: float | None = 10.0  # time(4L) / time(L): linear ~4, quadratic ~16
    max_forward_s: float = 5.0  # CPU seconds of one forward at the longer cost length
    check_export: bool = False  # torch.export forward and step (about 1-5 s in a fresh process)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.shapes or not self.lengths:
            raise ValueError("ScreenConfig needs at least one shape and one length")
        if min(self.lengths) < 2 or self.batch < 2:
            raise ValueError("lengths need at least 2 tokens and batch at least 2 examples")


class _CheckFailed(LoopError):
    """Raised inside a check to end screening with a verdict.

    Only `screen_mixer` catches it, and records `failure` and `detail` in its report;
    nothing outside this module sees it.
    """

    def __init__(self, failure: FailureClass, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


@dataclass(frozen=True)
class _Built:
    """One instance of the candidate at one shape, with its recurrent methods."""

    d_model: int
    n_heads: int
    module: nn.Module
    init_state: Callable[[int], object]
    step: Callable[[Tensor, object], object]


def _exception_class(exc: BaseException, default: FailureClass) -> FailureClass:
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "can't allocate" in text or "out of memory" in text:
        return FailureClass.OOM
    if isinstance(exc, FloatingPointError):
        return FailureClass.NAN_DIVERGENCE
    return default


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def screen_mixer(
    mixer_cls: Callable[..., Any],
    options: Mapping[str, Any] | None = None,
    config: ScreenConfig | None = None,
) -> ScreenReport:
    """Run the behavioural checks in order and stop at the first failure.

    Runs candidate code, so call it only inside the sandbox. Never raises for anything
    the candidate does: crashes become SHAPE (or OOM, NAN_DIVERGENCE) with their message.
    """
    config = config or ScreenConfig()
    options = dict(options or {})
    checks: list[CheckResult] = []
    built: list[_Built] = []
    steps: list[tuple[str, Callable[[], str]]] = [
        ("build", lambda: _check_build(mixer_cls, options, config, built)),
        ("param_budget", lambda: _check_params(built[0], config)),
        ("forward", lambda: _check_forward(built, config)),
        ("backward", lambda: _check_backward(built[0], config)),
        ("causality", lambda: _check_causality(built, config)),
        ("state", lambda: _check_state(built, config)),
        ("recurrent_equivalence", lambda: _check_recurrence(built, config)),
        ("cost_scaling", lambda: _check_cost(built[0], config)),
    ]
    if config.check_export:
        steps.append(("export", lambda: _check_export(built[0], config)))
    torch.manual_seed(config.seed)
    for name, run in steps:
        started = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[]):
                detail = run()
        except _CheckFailed as exc:
            checks.append(CheckResult(name, False, exc.detail))
            return ScreenReport(tuple(checks), exc.failure, f"{name}: {exc.detail}")
        except (Exception, SystemExit) as exc:  # candidate code may even call exit()
            failure = _exception_class(exc, FailureClass.SHAPE)
            detail = _describe(exc)
            checks.append(CheckResult(name, False, detail))
            return ScreenReport(tuple(checks), failure, f"{name}: {detail}")
        logger.debug(
            "screen check passed", extra={"check": name, "s": time.perf_counter() - started}
        )
        checks.append(CheckResult(name, True, detail))
    return ScreenReport(tuple(checks))


def _check_build(
    mixer_cls: Callable[..., Any],
    options: dict[str, Any],
    config: ScreenConfig,
    built: list[_Built],
) -> str:
    for d_model, n_heads in config.shapes:
        try:
            module = mixer_cls(d_model, n_heads, **options)
        except (Exception, SystemExit) as exc:
            raise _CheckFailed(
                _exception_class(exc, FailureClass.SHAPE),
                f"Mixer({d_model}, {n_heads}) failed: {_describe(exc)}",
            ) from None
        if not isinstance(module, nn.Module):
            raise _CheckFailed(FailureClass.SHAPE, f"Mixer(...) returned {type(module).__name__}")
        methods: dict[str, Callable[..., object]] = {}
        for name in ("init_state", "step"):
            method = getattr(module, name, None)
            if not callable(method):
                raise _CheckFailed(FailureClass.SHAPE, f"Mixer has no method {name}()")
            methods[name] = method
        module.eval()
        built.append(_Built(d_model, n_heads, module, methods["init_state"], methods["step"]))
    return "built at (d_model, n_heads) = " + ", ".join(str(s) for s in config.shapes)


def _check_params(ref: _Built, config: ScreenConfig) -> str:
    params = sum(p.numel() for p in ref.module.parameters())
    buffers = sum(b.numel() for b in ref.module.buffers())
    detail = (
        f"{params} parameters + {buffers} buffer elements at d_model={ref.d_model}; "
        f"budget {config.max_params}"
    )
    if params + buffers > config.max_params:
        raise _CheckFailed(FailureClass.PARAM_BUDGET, detail)
    return detail


def _inputs(b: _Built, batch: int, length: int) -> Tensor:
    return torch.randn(batch, length, b.d_model)


def _forward(b: _Built, x: Tensor) -> Tensor:
    y = b.module(x)
    if not isinstance(y, Tensor):
        raise _CheckFailed(FailureClass.SHAPE, f"forward returned {type(y).__name__}, not a Tensor")
    if tuple(y.shape) != tuple(x.shape):
        raise _CheckFailed(
            FailureClass.SHAPE,
            f"forward on {tuple(x.shape)} returned {tuple(y.shape)} (d_model={b.d_model})",
        )
    if y.dtype != x.dtype:
        raise _CheckFailed(FailureClass.SHAPE, f"forward returned {y.dtype} for {x.dtype} input")
    return y


def _scale(y: Tensor) -> float:
    return max(1.0, float(y.abs().max()))


def _check_forward(built: list[_Built], config: ScreenConfig) -> str:
    with torch.no_grad():
        for b in built:
            for length in config.lengths:
                y = _forward(b, _inputs(b, config.batch, length))
                if not bool(torch.isfinite(y).all()):
                    raise _CheckFailed(
                        FailureClass.NAN_DIVERGENCE,
                        f"non-finite outputs at d_model={b.d_model}, T={length}",
                    )
    return f"shapes and finiteness at T in {config.lengths}, batch {config.batch}"


def _check_backward(ref: _Built, config: ScreenConfig) -> str:
    ref.module.zero_grad(set_to_none=True)
    y = _forward(ref, _inputs(ref, config.batch, max(config.lengths)))
    torch.autograd.backward(y.square().mean())
    for name, p in ref.module.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            raise _CheckFailed(FailureClass.NAN_DIVERGENCE, f"non-finite gradient for {name}")
    with_grad = sum(1 for p in ref.module.parameters() if p.grad is not None)
    ref.module.zero_grad(set_to_none=True)
    return f"gradients finite ({with_grad} parameter tensors receive gradients)"


def _check_causality(built: list[_Built], config: ScreenConfig) -> str:
    worst = 0.0
    with torch.no_grad():
        for b in built:
            for length in config.lengths:
                x = _inputs(b, config.batch, length)
                y = _forward(b, x)
                tol = config.leak_tolerance * _scale(y)
                again = float((_forward(b, x) - y).abs().max())
                if again > tol:
                    raise _CheckFailed(
                        FailureClass.FUTURE_LEAK,
                        f"forward is not deterministic in eval mode (two calls differ by "
                        f"{again:.3g}), so causality cannot be established",
                    )
                for t in _probe_positions(length, config.leak_probes):
                    x2 = x.clone()
                    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
                    diff = float((_forward(b, x2)[:, : t + 1] - y[:, : t + 1]).abs().max())
                    worst = max(worst, diff / _scale(y))
                    if diff > tol:
                        raise _CheckFailed(
                            FailureClass.FUTURE_LEAK,
                            f"changing tokens after t={t} moved outputs at or before t by "
                            f"{diff:.3g} (d_model={b.d_model}, T={length}; tolerance {tol:.3g})",
                        )
                # Examples in a batch must not see each other either.
                x3 = x.clone()
                x3[1:] = torch.randn_like(x3[1:])
                diff = float((_forward(b, x3)[0] - y[0]).abs().max())
                if diff > tol:
                    raise _CheckFailed(
                        FailureClass.FUTURE_LEAK,
                        f"changing other examples in the batch moved example 0 by {diff:.3g}",
                    )
    return f"no dependence on later tokens or other examples (worst relative {worst:.2g})"


def _probe_positions(length: int, probes: int) -> list[int]:
    last = length - 2  # t = T-1 has no future to change
    if probes <= 1 or last <= 0:
        return [0]
    return sorted({round(i * last / (probes - 1)) for i in range(probes)})


def _flat_state(state: object, where: str) -> tuple[Tensor, ...]:
    if not isinstance(state, tuple) or not all(isinstance(s, Tensor) for s in state):
        raise _CheckFailed(
            FailureClass.SHAPE,
            f"{where} must return a flat tuple of tensors, got {_kind(state)}",
        )
    return state


def _kind(value: object) -> str:
    if isinstance(value, tuple | list):
        inner = ", ".join(type(v).__name__ for v in value[:4])
        return f"{type(value).__name__}({inner}{', ...' if len(value) > 4 else ''})"
    return type(value).__name__


def _shapes(state: tuple[Tensor, ...]) -> list[tuple[int, ...]]:
    return [tuple(s.shape) for s in state]


def _check_state(built: list[_Built], config: ScreenConfig) -> str:
    ref = built[0]
    with torch.no_grad():
        for b in built:
            before = _shapes(_flat_state(b.init_state(config.batch), "init_state"))
            for length in config.lengths:
                _forward(b, _inputs(b, config.batch, length))
                after = _shapes(_flat_state(b.init_state(config.batch), "init_state"))
                if after != before:
                    raise _CheckFailed(
                        FailureClass.STATE_GROWTH,
                        f"init_state shapes changed from {before} to {after} after a "
                        f"forward of length {length}",
                    )
        state = _flat_state(ref.init_state(config.batch), "init_state")
    per_example = sum(s.numel() for s in state) / config.batch
    detail = (
        f"{len(state)} state tensors, {per_example:.0f} elements per example at "
        f"d_model={ref.d_model}; budget {config.max_state_floats}"
    )
    if per_example > config.max_state_floats:
        raise _CheckFailed(FailureClass.STATE_BUDGET, detail)
    return detail


def _check_recurrence(built: list[_Built], config: ScreenConfig) -> str:
    worst = 0.0
    with torch.no_grad():
        for b in built:
            length = max(config.lengths)
            x = _inputs(b, config.batch, length)
            y = _forward(b, x)
            state = _flat_state(b.init_state(config.batch), "init_state")
            shapes = _shapes(state)
            outputs = []
            for t in range(length):
                out = b.step(x[:, t], state)
                if not isinstance(out, tuple) or len(out) != 2:
                    raise _CheckFailed(FailureClass.SHAPE, "step must return (y_t, state)")
                y_t, state = out
                state = _flat_state(state, "step")
                if _shapes(state) != shapes:
                    raise _CheckFailed(
                        FailureClass.STATE_GROWTH,
                        f"state shapes changed at step {t}: {shapes} -> {_shapes(state)}",
                    )
                expected = (config.batch, b.d_model)
                if not isinstance(y_t, Tensor) or tuple(y_t.shape) != expected:
                    got = tuple(y_t.shape) if isinstance(y_t, Tensor) else type(y_t).__name__
                    raise _CheckFailed(
                        FailureClass.SHAPE, f"step returned {got}, expected {expected}"
                    )
                outputs.append(y_t)
            stepped = torch.stack(outputs, dim=1)
            if not bool(torch.isfinite(stepped).all()):
                raise _CheckFailed(FailureClass.NAN_DIVERGENCE, "non-finite outputs from step")
            err = (stepped - y).abs().amax(dim=(0, 2))
            tol = config.tolerance * _scale(y)
            worst = max(worst, float(err.max()) / _scale(y))
            if float(err.max()) > tol:
                first = int(torch.nonzero(err > tol)[0, 0])
                raise _CheckFailed(
                    FailureClass.RECURRENT_MISMATCH,
                    f"step-by-step output differs from forward by {float(err.max()):.3g} "
                    f"(first at t={first}; d_model={b.d_model}, T={length}; "
                    f"tolerance {tol:.3g})",
                )
    return f"step matches forward (worst relative error {worst:.2g})"


MIN_TIMED_S = 0.05  # CPU clocks tick coarsely on some kernels: time at least this much


def _best_time(b: _Built, x: Tensor, repeats: int) -> float:
    """CPU seconds of one forward, the best of `repeats` measurements.

    CPU time of the process, not wall time: other jobs on the machine stretch wall time
    unevenly and would make a linear mixer look superlinear. Each measurement repeats the
    forward until MIN_TIMED_S have passed, since the kernel may account CPU time only per
    scheduler tick and a single short forward can read as zero.
    """
    best = math.inf
    for _ in range(repeats):
        calls = 0
        started = time.process_time()
        while True:
            _forward(b, x)
            calls += 1
            spent = time.process_time() - started
            if spent >= MIN_TIMED_S:
                break
        best = min(best, spent / calls)
    return best


def _check_cost(ref: _Built, config: ScreenConfig) -> str:
    short, long = config.cost_lengths
    threads = torch.get_num_threads()
    # One thread: CPU time then measures work, not OpenMP spin-waiting or oversubscription.
    torch.set_num_threads(1)
    try:
        return _measure_cost(ref, config, short, long)
    finally:
        torch.set_num_threads(threads)


def _measure_cost(ref: _Built, config: ScreenConfig, short: int, long: int) -> str:
    with torch.no_grad():
        _forward(ref, _inputs(ref, config.cost_batch, short))  # warm-up: lazy init, caches
        t_long = _best_time(ref, _inputs(ref, config.cost_batch, long), 1)
        if t_long > config.max_forward_s:
            raise _CheckFailed(
                FailureClass.TOO_SLOW,
                f"forward at T={long} took {t_long:.2f} s of CPU; the budget is "
                f"{config.max_forward_s:.2f} s",
            )
        t_short = _best_time(ref, _inputs(ref, config.cost_batch, short), config.cost_repeats)
        t_long = min(t_long, _best_time(ref, _inputs(ref, config.cost_batch, long), 2))
        limit = config.max_cost_ratio
        if limit is not None and t_long / max(t_short, 1e-9) > limit:
            # Confirmed before a verdict: a busy machine (the other workers, the node) can
            # slow one measurement; a superlinear mixer stays over the limit however timed.
            t_short = min(t_short, _best_time(ref, _inputs(ref, config.cost_batch, short), 3))
            t_long = min(t_long, _best_time(ref, _inputs(ref, config.cost_batch, long), 2))
    ratio = t_long / max(t_short, 1e-9)
    detail = (
        f"forward {t_short * 1e3:.1f} ms at T={short}, {t_long * 1e3:.1f} ms at T={long} "
        f"(ratio {ratio:.1f}"
    )
    if config.max_cost_ratio is None:
        return detail + "; ratio not checked)"
    detail += f", limit {config.max_cost_ratio:.1f})"
    if ratio > config.max_cost_ratio:
        raise _CheckFailed(FailureClass.TOO_SLOW, "cost grows faster than linearly: " + detail)
    return detail


class _StepModule(nn.Module):
    """`step` with the state spread into positional tensors, as torch.export needs."""

    def __init__(self, mixer: nn.Module, step: Callable[[Tensor, object], object]) -> None:
        super().__init__()
        self.mixer = mixer
        self.run_step = step

    def forward(self, x_t: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        out: Any = self.run_step(x_t, tuple(state))
        return (out[0], *out[1])


def _check_export(ref: _Built, config: ScreenConfig) -> str:
    """The trained model must export as a graph; finding out before training is cheaper."""
    length = max(config.lengths)
    x = _inputs(ref, config.batch, length)
    state = _flat_state(ref.init_state(config.batch), "init_state")
    try:
        torch.export.export(ref.module, (x,), strict=False)
        torch.export.export(_StepModule(ref.module, ref.step), (x[:, 0], *state), strict=False)
    except Exception as exc:  # export raises many types; all mean "not exportable"
        raise _CheckFailed(FailureClass.EXPORT, f"torch.export failed: {_describe(exc)}") from None
    return f"forward and step export at batch {config.batch}, T={length}"
