"""Which implementation each op runs: the choice by device, dtype, size and Triton version.

The choice is a pure function of a Platform, so made-up CUDA platforms test it on the CPU;
the `gpu` tests at the end compare the fast paths with the references on a real device.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from kernels import dispatch
from kernels.conv1d.conv import causal_conv1d as reference_conv1d
from kernels.dispatch import (
    Backend,
    Platform,
    choose_fir,
    choose_linear_rnn,
    gated_backward_refused,
    parse_version,
)
from kernels.fla_ops import FlaOp, fla_op_for
from kernels.linear_rnn.chunk import chunk_linear_rnn as reference_linear_rnn
from kernels.ops import causal_conv1d, causal_fir, chunk_linear_rnn

H100_TRITON_36 = Platform("cuda", (3, 6, 0), fla=True, hopper=True, tilelang=False)
A100_TRITON_36 = replace(H100_TRITON_36, hopper=False)
CPU = Platform("cpu", (3, 6, 0), fla=True, hopper=False, tilelang=False)


def _rnn(platform: Platform, **overrides: object) -> Backend:
    args: dict[str, object] = dict(
        dtype=torch.bfloat16,
        has_beta=True,
        has_decay=False,
        needs_grad=True,
        k_dim=32,
        v_dim=32,
    )
    args.update(overrides)
    return choose_linear_rnn(platform, **args).backend  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3.6.0", (3, 6, 0)), ("3.7.1", (3, 7, 1)), ("3.4", (3, 4, 0)), ("3.7.1+git1a2b", (3, 7, 1))],
)
def test_versions_parse_to_tuples(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected


def test_cpu_always_runs_the_reference() -> None:
    assert _rnn(CPU) is Backend.REFERENCE
    assert choose_fir(CPU, dtypes=(torch.float32,), taps=4).backend is Backend.REFERENCE


def test_cuda_runs_fla_for_each_form_of_the_recurrence() -> None:
    for beta in (False, True):
        for decay in (False, True):
            assert _rnn(A100_TRITON_36, has_beta=beta, has_decay=decay) is Backend.FLA


@pytest.mark.parametrize(
    ("version", "refused"),
    [((3, 3, 1), False), ((3, 4, 0), True), ((3, 6, 0), True), ((3, 7, 0), True),
     ((3, 7, 1), False), ((3, 8, 0), False)],
)  # fmt: skip
def test_gated_backward_falls_back_only_for_the_broken_triton_range(
    version: tuple[int, int, int], refused: bool
) -> None:
    platform = replace(H100_TRITON_36, triton_version=version)
    assert gated_backward_refused(platform) is refused
    expected = Backend.REFERENCE if refused else Backend.FLA
    assert _rnn(platform, has_decay=True) is expected  # gated delta rule
    assert _rnn(platform, has_beta=False, has_decay=True) is expected  # simple GLA


def test_gated_fallback_is_limited_to_hopper_backward_without_tilelang() -> None:
    assert _rnn(H100_TRITON_36, has_decay=True, needs_grad=False) is Backend.FLA
    assert _rnn(H100_TRITON_36, has_decay=False) is Backend.FLA  # ungated delta rule
    assert _rnn(A100_TRITON_36, has_decay=True) is Backend.FLA
    assert _rnn(replace(H100_TRITON_36, tilelang=True), has_decay=True) is Backend.FLA
    reason = choose_linear_rnn(
        H100_TRITON_36,
        dtype=torch.bfloat16,
        has_beta=True,
        has_decay=True,
        needs_grad=True,
        k_dim=32,
        v_dim=32,
    ).reason
    assert "3.6.0" in reason and "3.7.1" in reason


def test_unsupported_dtypes_sizes_and_missing_packages_run_the_reference() -> None:
    assert _rnn(A100_TRITON_36, dtype=torch.float64) is Backend.REFERENCE
    assert _rnn(A100_TRITON_36, k_dim=512) is Backend.REFERENCE
    assert _rnn(replace(A100_TRITON_36, fla=False)) is Backend.REFERENCE
    assert _rnn(replace(A100_TRITON_36, triton_version=None)) is Backend.REFERENCE


def test_fir_choice_by_dtype_and_taps() -> None:
    ok = (torch.bfloat16, torch.float32)
    assert choose_fir(A100_TRITON_36, dtypes=ok, taps=31).backend is Backend.TRITON
    assert choose_fir(A100_TRITON_36, dtypes=ok, taps=64).backend is Backend.TRITON
    assert choose_fir(A100_TRITON_36, dtypes=ok, taps=65).backend is Backend.REFERENCE
    half = (torch.float16, torch.float32)
    assert choose_fir(A100_TRITON_36, dtypes=half, taps=4).backend is Backend.REFERENCE
    no_triton = replace(A100_TRITON_36, triton_version=None)
    assert choose_fir(no_triton, dtypes=ok, taps=4).backend is Backend.REFERENCE


def test_fla_op_follows_beta_and_decay() -> None:
    assert fla_op_for(has_beta=False, has_decay=False) is FlaOp.LINEAR_ATTN
    assert fla_op_for(has_beta=False, has_decay=True) is FlaOp.SIMPLE_GLA
    assert fla_op_for(has_beta=True, has_decay=False) is FlaOp.DELTA_RULE
    assert fla_op_for(has_beta=True, has_decay=True) is FlaOp.GATED_DELTA_RULE


def test_cpu_calls_are_exactly_the_references() -> None:
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 33, 2, 8, generator=g), F.normalize(torch.randn(2, 33, 2, 8), dim=-1)
    v = torch.randn(2, 33, 2, 5, generator=g)
    beta, decay = torch.rand(2, 33, 2, generator=g), -torch.rand(2, 33, 2, generator=g)
    got = chunk_linear_rnn(q, k, v, beta=beta, log_decay=decay, chunk_size=16)
    want = reference_linear_rnn(q, k, v, beta=beta, log_decay=decay, chunk_size=16)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    x, w = torch.randn(2, 33, 70, generator=g), torch.randn(70, 31, generator=g)
    assert torch.equal(causal_conv1d(x, w), reference_conv1d(x, w))
    assert causal_fir is causal_conv1d


def test_fallback_reason_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    dispatch._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="kernels.dispatch"):
        dispatch._warn_once("chunk_linear_rnn", "some reason")
        dispatch._warn_once("chunk_linear_rnn", "some reason")
    records = [r for r in caplog.records if getattr(r, "reason", None) == "some reason"]
    assert len(records) == 1


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def rel_error(actual: Tensor, expected: Tensor) -> float:
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("has_beta", "has_decay"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_fast_linear_rnn_matches_reference_on_gpu(has_beta: int, has_decay: int) -> None:
    g = torch.Generator(device="cuda").manual_seed(1)
    shape = (2, 200, 4, 32)

    def rand(*s: int) -> Tensor:
        return torch.randn(*s, device="cuda", generator=g)

    q, k, v = rand(*shape), F.normalize(rand(*shape), dim=-1), rand(*shape)
    beta = torch.sigmoid(rand(*shape[:3])) if has_beta else None
    decay = F.logsigmoid(rand(*shape[:3]) + 3.0) if has_decay else None
    with torch.no_grad():
        fast = chunk_linear_rnn(q, k, v, beta=beta, log_decay=decay)
        ref = reference_linear_rnn(q, k, v, beta=beta, log_decay=decay)
    assert rel_error(fast[0], ref[0]) < 2e-3
    assert rel_error(fast[1], ref[1]) < 2e-3


def test_half_precision_reference_runs_in_float32_under_autocast() -> None:
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 20, 2, 8, generator=g), F.normalize(torch.randn(1, 20, 2, 8), dim=-1)
    v, beta = torch.randn(1, 20, 2, 8, generator=g), torch.rand(1, 20, 2, generator=g)
    decay = -torch.rand(1, 20, 2, generator=g)
    want, _ = reference_linear_rnn(q, k, v, beta=beta, log_decay=decay)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, state = chunk_linear_rnn(
            q.bfloat16(), k.bfloat16(), v.bfloat16(), beta=beta, log_decay=decay
        )
    assert got.dtype == torch.bfloat16 and state.dtype == torch.bfloat16
    assert rel_error(got, want) < 2e-2


def test_fp32_delta_rule_stays_on_the_reference_since_fla_refuses_fp32() -> None:
    assert _rnn(A100_TRITON_36, dtype=torch.float32) is Backend.REFERENCE
    assert _rnn(A100_TRITON_36, dtype=torch.float32, has_decay=True) is Backend.FLA
    assert _rnn(A100_TRITON_36, dtype=torch.float32, has_beta=False) is Backend.FLA


def test_compute_dtype_follows_autocast_then_half_inputs() -> None:
    f32, b16 = torch.zeros(1), torch.zeros(1, dtype=torch.bfloat16)
    assert dispatch.compute_dtype(f32, f32, f32) == torch.float32
    assert dispatch.compute_dtype(f32, f32, b16) == torch.bfloat16  # q, k from an fp32 norm
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dispatch.compute_dtype(f32, f32, f32) == torch.bfloat16


def test_importing_and_running_the_ops_on_cpu_loads_neither_triton_nor_fla() -> None:
    """Triton must not be imported before a test can set TRITON_INTERPRET; fla warns on CPU."""
    code = (
        "import sys, torch\n"
        "from kernels.baselines import DeltaNet\n"
        "from kernels.ops import causal_fir\n"
        "DeltaNet(16, 2)(torch.randn(1, 5, 16)).sum().backward()\n"
        "causal_fir(torch.randn(1, 5, 3), torch.randn(3, 31))\n"
        "print(sorted(m for m in ('triton', 'fla') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("has_beta", "has_decay"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_fla_wrapper_passes_each_op_its_arguments(
    monkeypatch: pytest.MonkeyPatch, fake_fla: object, has_beta: int, has_decay: int
) -> None:
    from kernels import fla_ops

    monkeypatch.setattr(fla_ops, "_fla_function", fake_fla)
    monkeypatch.setattr(fla_ops, "DEVICE_TYPES", ("cuda", "cpu"))  # the stand-in runs here
    g = torch.Generator().manual_seed(8)
    q, k = torch.randn(2, 33, 2, 8, generator=g), F.normalize(torch.randn(2, 33, 2, 8), dim=-1)
    v = torch.randn(2, 33, 2, 5, generator=g)
    beta = torch.rand(2, 33, 2, generator=g) if has_beta else None
    decay = -torch.rand(2, 33, 2, generator=g) if has_decay else None
    h0 = 0.1 * torch.randn(2, 2, 8, 5, generator=g)
    want = reference_linear_rnn(q, k, v, beta=beta, log_decay=decay, initial_state=h0, scale=0.7)
    o, s = fla_ops.fla_linear_rnn(
        q, k, v.bfloat16(), beta=beta, log_decay=decay, initial_state=h0, scale=0.7,
        dtype=torch.bfloat16,
    )  # fmt: skip
    assert o.dtype == s.dtype == torch.bfloat16
    assert rel_error(o, want[0]) < 2e-2 and rel_error(s, want[1]) < 2e-2


@pytest.mark.parametrize(
    ("shapes", "dtype", "message"),
    [
        ({"k": (2, 9, 2, 7)}, None, "q and k"),
        ({"v": (2, 8, 2, 8)}, None, "v must be"),
        ({"beta": (2, 9)}, None, "beta must be"),
        ({"log_decay": (2, 9, 3)}, None, "log_decay must be"),
        ({"q": (2, 9, 2, 300), "k": (2, 9, 2, 300)}, None, "exceed 256"),
        ({}, torch.float64, "not torch.float64"),
        ({}, torch.float32, "chunk_delta_rule"),
        ({}, torch.bfloat16, "need CUDA tensors"),
    ],
)
def test_fla_wrapper_rejects_bad_input_before_launch(
    shapes: dict[str, tuple[int, ...]], dtype: torch.dtype | None, message: str
) -> None:
    from kernels.errors import KernelInputError
    from kernels.fla_ops import fla_linear_rnn

    sizes = {"q": (2, 9, 2, 8), "k": (2, 9, 2, 8), "v": (2, 9, 2, 8), "beta": (2, 9, 2)}
    sizes |= shapes
    t = {name: torch.rand(shape) for name, shape in sizes.items()}
    decay = torch.rand(shapes["log_decay"]) if "log_decay" in shapes else None
    with pytest.raises(KernelInputError, match=message):
        fla_linear_rnn(
            t["q"], t["k"], t["v"], beta=t["beta"], log_decay=decay, dtype=dtype or torch.bfloat16
        )
