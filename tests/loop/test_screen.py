"""Screening turns broken, cheating and hostile candidates into verdicts with reasons."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loop.outcome import FailureClass
from loop.screen import ScreenConfig, check_source, screen_mixer

State = tuple[Tensor, ...]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """As in the sandbox: tiny models only lose from threads on a shared 2-core host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LinearAttention(nn.Module):
    """A correct tiny mixer: normalised linear attention (elu+1 features) via cumsum."""

    def __init__(self, d_model: int, n_heads: int, **options: Any) -> None:
        super().__init__()
        self.h = n_heads
        self.dk = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * self.h * self.dk, bias=False)
        self.out = nn.Linear(self.h * self.dk, d_model, bias=False)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        shape = (*x.shape[:-1], self.h, self.dk)
        q, k = F.elu(q.reshape(shape)) + 1, F.elu(k.reshape(shape)) + 1
        return q, k, v.reshape(shape)

    def mix(self, q: Tensor, kv: Tensor, z: Tensor) -> Tensor:
        o = torch.einsum("...hk,...hkv->...hv", q, kv) / (q * z).sum(-1, keepdim=True)
        out: Tensor = self.out(o.flatten(-2))
        return out

    def prefix(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Running sums over time of k v^T and of k."""
        return torch.cumsum(k.unsqueeze(-1) * v.unsqueeze(-2), dim=1), torch.cumsum(k, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x)
        kv, z = self.prefix(k, v)
        return self.mix(q, kv, z)

    def init_state(self, batch: int) -> State:
        p = self.out.weight
        return (p.new_zeros(batch, self.h, self.dk, self.dk), p.new_zeros(batch, self.h, self.dk))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        kv, z = state
        q, k, v = self.project(x_t)
        kv = kv + k.unsqueeze(-1) * v.unsqueeze(-2)
        z = z + k
        return self.mix(q, kv, z), (kv, z)


class ReadsTheFuture(LinearAttention):
    """Sums over the whole sequence in forward: every output sees every token."""

    def prefix(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        kv, z = super().prefix(k, v)
        return kv[:, -1:].expand_as(kv), z[:, -1:].expand_as(z)


class PeeksOneAhead(LinearAttention):
    """A subtle leak: mixes in the next token's input."""

    def forward(self, x: Tensor) -> Tensor:
        ahead = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
        return super().forward(x + 0.01 * ahead)


class ForgetfulStep(LinearAttention):
    """Its step keeps only the latest token: disagrees with forward."""

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        q, k, v = self.project(x_t)
        kv, z = k.unsqueeze(-1) * v.unsqueeze(-2), k
        return self.mix(q, kv, z), (kv, z)


class GrowingCache(nn.Module):
    """Causal mean of the inputs, whose step keeps every past token: state grows with T."""

    def __init__(self, d_model: int, n_heads: int, **options: Any) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        count = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1)
        out: Tensor = self.proj(torch.cumsum(x, dim=1) / count)
        return out

    def init_state(self, batch: int) -> State:
        return (self.proj.weight.new_zeros(batch, 0, self.proj.in_features),)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        cache = torch.cat([state[0], x_t.unsqueeze(1)], dim=1)
        out: Tensor = self.proj(cache.mean(dim=1))
        return out, (cache,)


class Oversized(LinearAttention):
    """A mixer carrying a huge unused table."""

    def __init__(self, d_model: int, n_heads: int, **options: Any) -> None:
        super().__init__(d_model, n_heads)
        self.table = nn.Embedding(50_000, d_model)


class QuadraticForward(LinearAttention):
    """The same maths as LinearAttention, but materialising the T x T matrix."""

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x)
        scores = torch.einsum("bthk,bshk->bhts", q, k).tril()
        o = torch.einsum("bhts,bshv->bthv", scores, v)
        o = o / scores.sum(-1).transpose(1, 2).unsqueeze(-1)
        out: Tensor = self.out(o.flatten(-2))
        return out


class WrongShape(LinearAttention):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)[:, :-1]


class Explodes(LinearAttention):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) / 0.0


class CrashesOnOddWidth(LinearAttention):
    def __init__(self, d_model: int, n_heads: int, **options: Any) -> None:
        if d_model % 64:
            raise ValueError(f"d_model={d_model} must be a multiple of 64")
        super().__init__(d_model, n_heads)


class BranchesOnValues(LinearAttention):
    """Python control flow on a tensor's value: runs eagerly, cannot become a graph."""

    def forward(self, x: Tensor) -> Tensor:
        if float(x.abs().max()) > 1e6:
            x = x * 0
        return super().forward(x)


class NestedState(LinearAttention):
    def init_state(self, batch: int) -> State:
        return (super().init_state(batch),)  # type: ignore[return-value]


FAST = ScreenConfig(cost_lengths=(64, 256), max_cost_ratio=None)


def test_accepts_a_correct_tiny_mixer() -> None:
    report = screen_mixer(LinearAttention, {}, ScreenConfig())
    assert report.passed, report.message
    assert [c.name for c in report.checks] == [
        "build",
        "param_budget",
        "forward",
        "backward",
        "causality",
        "state",
        "recurrent_equivalence",
        "cost_scaling",
    ]
    assert all(c.passed and c.detail for c in report.checks)


@pytest.mark.parametrize("mixer", [ReadsTheFuture, PeeksOneAhead])
def test_rejects_mixers_that_read_future_tokens(mixer: type[nn.Module]) -> None:
    report = screen_mixer(mixer, {}, FAST)
    assert report.failure is FailureClass.FUTURE_LEAK
    assert "after t=" in report.message
    assert report.checks[-1].name == "causality" and not report.checks[-1].passed


def test_rejects_a_step_that_disagrees_with_forward() -> None:
    report = screen_mixer(ForgetfulStep, {}, FAST)
    assert report.failure is FailureClass.RECURRENT_MISMATCH
    assert "first at t=1" in report.message


def test_rejects_a_state_that_grows_with_length() -> None:
    report = screen_mixer(GrowingCache, {}, FAST)
    assert report.failure is FailureClass.STATE_GROWTH
    assert "step 0" in report.message


def test_rejects_a_mixer_over_the_parameter_budget() -> None:
    report = screen_mixer(Oversized, {}, FAST)
    assert report.failure is FailureClass.PARAM_BUDGET
    assert "budget 500000" in report.message


def test_rejects_a_state_over_the_state_budget() -> None:
    report = screen_mixer(LinearAttention, {}, ScreenConfig(max_state_floats=1000))
    assert report.failure is FailureClass.STATE_BUDGET


def test_rejects_quadratic_cost() -> None:
    report = screen_mixer(QuadraticForward, {}, ScreenConfig())
    assert report.failure is FailureClass.TOO_SLOW
    assert "faster than linearly" in report.message


@pytest.mark.parametrize(
    ("mixer", "failure", "words"),
    [
        (WrongShape, FailureClass.SHAPE, "returned (3, 6, 64)"),
        (Explodes, FailureClass.NAN_DIVERGENCE, "non-finite"),
        (CrashesOnOddWidth, FailureClass.SHAPE, "Mixer(70, 2) failed: ValueError"),
        (NestedState, FailureClass.SHAPE, "flat tuple of tensors"),
    ],
)
def test_broken_mixers_fail_with_the_exception_as_a_value(
    mixer: type[nn.Module], failure: FailureClass, words: str
) -> None:
    report = screen_mixer(mixer, {}, FAST)
    assert report.failure is failure
    assert words in report.message
    assert "Traceback" not in report.message


def test_export_check_catches_value_dependent_control_flow() -> None:
    config = ScreenConfig(cost_lengths=(64, 256), check_export=True)
    assert screen_mixer(LinearAttention, {}, config).passed
    report = screen_mixer(BranchesOnValues, {}, config)
    assert report.failure is FailureClass.EXPORT
    assert "torch.export failed" in report.message


def test_constructor_options_reach_the_mixer() -> None:
    report = screen_mixer(LinearAttention, {"unknown": 1}, FAST)
    assert report.passed
    report = screen_mixer(nn.Linear, {"bias": False}, FAST)
    assert report.failure is FailureClass.SHAPE  # nn.Linear has no init_state


def test_accepts_the_kernels_baselines() -> None:
    baselines = pytest.importorskip("kernels.baselines").BASELINES
    for name, mixer in baselines.items():
        # Softmax attention is the quadratic reference: only its cost is exempt.
        ratio = None if name == "softmax" else 10.0
        report = screen_mixer(
            mixer, {}, ScreenConfig(cost_lengths=(128, 512), max_cost_ratio=ratio)
        )
        assert report.passed, (name, report.message)
    report = screen_mixer(baselines["softmax"], {}, ScreenConfig())
    assert report.failure is FailureClass.TOO_SLOW


GOOD_SOURCE = """
from __future__ import annotations
import math
import torch
import torch.nn.functional as F
from torch import nn
from kernels.ops import chunk_linear_rnn


class Mixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, **options) -> None:
        super().__init__()
        self.act = getattr(F, "silu")
        self.scale = 1 / math.sqrt(d_model)
        self._cache = None
        super()._apply(lambda t: t)

    def _helper(self):
        return self._cache
"""


def test_static_check_accepts_allowed_code_and_baseline_imports() -> None:
    assert check_source(GOOD_SOURCE).passed
    assert check_source("from kernels.baselines import DeltaNet as Mixer\n").passed
    assert check_source("import kernels.baselines\nMixer = kernels.baselines.DeltaNet\n").passed


@pytest.mark.parametrize(
    "code",
    [
        "import os\nclass Mixer: pass\n",
        "import subprocess\nclass Mixer: pass\n",
        "import socket as s\nclass Mixer: pass\n",
        "from ctypes import CDLL\nclass Mixer: pass\n",
        "import importlib.util\nclass Mixer: pass\n",
        "from sys import modules\nclass Mixer: pass\n",
        "import builtins\nclass Mixer: pass\n",
    ],
)
def test_static_check_forbids_dangerous_imports(code: str) -> None:
    report = check_source(code)
    assert report.failure is FailureClass.FORBIDDEN
    module = code.split()[1].split(".")[0]
    assert f"import of module {module!r} is not allowed" in report.message
    assert report.message.startswith("line 1:")


@pytest.mark.parametrize(
    ("snippet", "words"),
    [
        ("open('/etc/passwd')", "'open'"),
        ("exec('1')", "'exec'"),
        ("eval('1')", "'eval'"),
        ("compile('1', 'x', 'exec')", "'compile'"),
        ("__import__('os')", "'__import__'"),
        ("globals()", "'globals'"),
        ("vars()", "'vars'"),
        ("breakpoint()", "'breakpoint'"),
        ("().__class__.__base__.__subclasses__()", "'__class__'"),
        ("(lambda: 0).__globals__", "'__globals__'"),
        ("(lambda: 0).__code__", "'__code__'"),
        ("print(__builtins__)", "'__builtins__'"),
        ("getattr(torch, '__dict__')", "'__dict__'"),
        ("getattr(torch, 'o' + 's')", "string literal"),
        ("setattr(torch, name, 1)", "string literal"),
        ("torch.from_file('/root/key', size=10)", "'from_file'"),
        ("torch.load('x.pt')", "'load'"),
        ("torch.ops.load_library('evil.so')", "'load_library'"),
        ("torch.utils.cpp_extension.load_inline('x', '')", "'cpp_extension'"),
        ("torch._C._get_tracing_state()", "'_C'"),
        ("'{0.__class__}'.format(torch)", "dunder"),
        ("torch.fx.graph_module._forward_from_src('x', {})", "'_forward_from_src'"),
        ("typing.get_type_hints(Mixer)", "'get_type_hints'"),
    ],
)
def test_static_check_forbids_escape_hatches(snippet: str, words: str) -> None:
    code = f"import torch\n\n\nclass Mixer:\n    x = {snippet}\n"
    report = check_source(code)
    assert report.failure is FailureClass.FORBIDDEN, snippet
    assert words in report.message
    assert "line 5" in report.message


def test_static_check_forbids_torch_submodules_that_load_or_save() -> None:
    for code in ("import torch.utils.cpp_extension", "from torch import load", "from . import x"):
        assert check_source(code + "\nclass Mixer: pass\n").failure is FailureClass.FORBIDDEN


def test_static_check_reports_every_violation_with_lines() -> None:
    report = check_source("import os\nimport sys\nclass Mixer:\n    f = open\n")
    assert report.failure is FailureClass.FORBIDDEN
    for line in ("line 1", "line 2", "line 4"):
        assert line in report.message


@pytest.mark.parametrize(
    ("code", "line"),
    [("class Mixer(:\n    pass\n", 1), ("import torch\n\ndef f(:\n", 3), ("x = (\n", 1)],
)
def test_static_check_reports_syntax_errors_with_the_line(code: str, line: int) -> None:
    report = check_source(code)
    assert report.failure is FailureClass.SYNTAX_IMPORT
    assert report.message.startswith(f"line {line}:")


def test_static_check_needs_a_mixer_and_bounded_size() -> None:
    assert check_source("import torch\nclass Other: pass\n").failure is FailureClass.SYNTAX_IMPORT
    assert check_source("x = 1\n" * 50_000).failure is FailureClass.FORBIDDEN
    assert check_source("x = 1\0").failure is FailureClass.SYNTAX_IMPORT
    deep = "x = " + "(" * 5000 + ")" * 5000 + "\nclass Mixer: pass\n"
    assert check_source(deep).failure is FailureClass.SYNTAX_IMPORT
