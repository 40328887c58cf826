"""The Triton FIR kernel against its oracle and F.conv1d, run by the Triton interpreter.

Odd shapes on purpose (T not a multiple of the time block, C not of the channel block,
taps from 1 to the maximum 64, some longer than the sequence).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from kernels.conv1d.conv import causal_conv1d
from kernels.fir import triton as fir_triton
from kernels.fir.naive import naive_causal_fir
from kernels.fir.triton import causal_fir_triton

# Every T, C and W of the brief appears, without the slow full cross product.
SHAPES = [  # (T, C, W)
    (7, 5, 1),
    (7, 70, 4),
    (33, 5, 31),
    (33, 70, 64),
    (7, 5, 64),
    (33, 70, 1),
    (33, 5, 4),
    (7, 70, 31),
]


def rel_error(actual: Tensor, expected: Tensor) -> float:
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


def _inputs(t: int, c: int, w: int, dtype: torch.dtype, seed: int) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, t, c, generator=g).to(dtype).requires_grad_()
    weight = torch.randn(c, w, generator=g).requires_grad_()
    bias = torch.randn(c, generator=g).requires_grad_()
    upstream = torch.randn(2, t, c, generator=g).to(dtype)
    return x, weight, bias, upstream


def _run(fn: object, x: Tensor, weight: Tensor, bias: Tensor, upstream: Tensor) -> list[Tensor]:
    for tensor in (x, weight, bias):
        tensor.grad = None
    y = fn(x, weight, bias)  # type: ignore[operator]
    y.backward(upstream)
    grads = [x.grad, weight.grad, bias.grad]
    assert all(g is not None for g in grads)
    return [y.detach(), *(g.detach() for g in grads if g is not None)]


def test_interpreter_is_on_and_keeps_one_config() -> None:
    assert fir_triton.INTERPRETED
    assert len(fir_triton._fir_fwd_kernel.configs) == 1
    assert len(fir_triton._fir_bwd_kernel.configs) == 1


@pytest.mark.parametrize(("t", "c", "w"), SHAPES)
def test_fir_kernel_matches_oracle_and_conv1d_in_float32(t: int, c: int, w: int) -> None:
    x, weight, bias, upstream = _inputs(t, c, w, torch.float32, seed=t * 1000 + c * 10 + w)
    got = _run(causal_fir_triton, x, weight, bias, upstream)
    oracle = _run(naive_causal_fir, x, weight, bias, upstream)
    conv = _run(causal_conv1d, x, weight, bias, upstream)
    for name, a, b, r in zip(("y", "dx", "dw", "db"), got, oracle, conv, strict=True):
        assert torch.isfinite(a).all(), f"{name} has NaN (a tile was never written)"
        assert a.dtype == b.dtype
        assert rel_error(a, b) < 1e-5, name
        assert rel_error(a, r) < 1e-5, name


@pytest.mark.parametrize(("t", "c", "w"), [(33, 70, 31), (7, 5, 4)])
def test_fir_kernel_in_bfloat16_accumulates_in_float32(t: int, c: int, w: int) -> None:
    x, weight, bias, upstream = _inputs(t, c, w, torch.bfloat16, seed=5)
    got = _run(causal_fir_triton, x, weight, bias, upstream)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.bfloat16
    assert got[2].dtype == torch.float32  # weight keeps its own dtype (autocast keeps fp32)
    x32 = x.detach().float().requires_grad_()
    oracle = _run(naive_causal_fir, x32, weight, bias, upstream.float())
    # One bf16 rounding of the output (2**-8 relative) and of the inputs, not of the sums.
    for name, a, b in zip(("y", "dx", "dw", "db"), got, oracle, strict=True):
        assert rel_error(a, b) < 1e-2, name


def test_fir_kernel_without_bias_matches_oracle() -> None:
    x, weight, _, upstream = _inputs(33, 70, 4, torch.float32, seed=9)
    y = causal_fir_triton(x, weight)
    y.backward(upstream)
    assert x.grad is not None and weight.grad is not None
    dx, dw = x.grad.clone(), weight.grad.clone()
    x.grad = weight.grad = None
    naive_causal_fir(x, weight).backward(upstream)
    assert rel_error(y.detach(), naive_causal_fir(x, weight).detach()) < 1e-5
    assert rel_error(dx, x.grad) < 1e-5
    assert rel_error(dw, weight.grad) < 1e-5
