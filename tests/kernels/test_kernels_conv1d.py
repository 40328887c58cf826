"""causal_conv1d and its step agree with the explicit sum over taps."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from kernels.conv1d.naive import naive_causal_conv1d
from kernels.ops import causal_conv1d, causal_conv1d_step


def inputs(length: int, width: int, with_bias: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    g = torch.Generator().manual_seed(length * 10 + width)
    x = torch.randn(2, length, 35, generator=g, dtype=torch.float64)
    weight = torch.randn(35, width, generator=g, dtype=torch.float64)
    bias = torch.randn(35, generator=g, dtype=torch.float64) if with_bias else None
    return x, weight, bias


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("width", [1, 3, 4])
@pytest.mark.parametrize("length", [1, 7, 33])
def test_conv_matches_naive_outputs_and_gradients(length: int, width: int, with_bias: bool) -> None:
    x, weight, bias = inputs(length, width, with_bias)
    leaves = [t.requires_grad_(True) for t in (x, weight, bias) if t is not None]
    fast = causal_conv1d(x, weight, bias)
    slow = naive_causal_conv1d(x, weight, bias)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(fast)
    fast_grads = torch.autograd.grad((fast * probe).sum(), leaves)
    slow_grads = torch.autograd.grad((slow * probe).sum(), leaves)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("width", [1, 4])
def test_step_loop_from_zero_state_matches_full_sequence(width: int) -> None:
    x, weight, bias = inputs(9, width, True)
    state = x.new_zeros(2, 35, width - 1)
    outputs = []
    for t in range(9):
        y_t, state = causal_conv1d_step(x[:, t], state, weight, bias)
        assert state.shape == (2, 35, width - 1)
        outputs.append(y_t)
    torch.testing.assert_close(torch.stack(outputs, 1), causal_conv1d(x, weight, bias))


def test_output_up_to_t_ignores_later_inputs() -> None:
    x, weight, _ = inputs(12, 4, False)
    changed = x.clone()
    changed[:, 6:] += 1.0
    torch.testing.assert_close(
        causal_conv1d(changed, weight)[:, :6], causal_conv1d(x, weight)[:, :6]
    )


def test_taps_beyond_the_sequence_and_a_strided_input() -> None:
    """64 taps over 5 tokens (the GPU check's long-FIR case on the CPU reference) and an
    input that is a view with gaps, as a slice of a projection's output is."""
    x, weight, bias = inputs(5, 64, True)
    torch.testing.assert_close(
        causal_conv1d(x, weight, bias), naive_causal_conv1d(x, weight, bias), rtol=1e-12, atol=1e-12
    )
    wide, weight, _ = inputs(7, 4, False)
    view = torch.cat([wide, wide], dim=-1)[..., ::2]  # (2, 7, 35), not contiguous
    assert not view.is_contiguous()
    torch.testing.assert_close(causal_conv1d(view, weight), naive_causal_conv1d(view, weight))


def test_output_is_contiguous_in_the_input_s_layout() -> None:
    """The SiLU and the projections after the conv read its output in (B, T, C) order; a
    transposed view there made SiLU 4.5x slower on the CPU."""
    x, weight, bias = inputs(33, 4, True)
    y = causal_conv1d(x.float(), weight.float(), bias.float())
    assert y.shape == x.shape and y.is_contiguous()
