"""chunk_linear_rnn and linear_rnn_step agree with the token-by-token oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.linear_rnn.naive import naive_linear_rnn
from kernels.ops import chunk_linear_rnn, linear_rnn_step

MODES = {
    "additive": (False, False),
    "decay": (False, True),
    "delta": (True, False),
    "gated_delta": (True, True),
}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-4}


def rel_error(actual: Tensor, expected: Tensor) -> float:
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def make_inputs(
    mode: str, length: int, dtype: torch.dtype, *, k_dim: int = 35, v_dim: int = 19, seed: int = 0
) -> dict[str, Tensor]:
    """Random inputs in the regime the mixers produce: unit keys for the delta rule."""
    use_beta, use_decay = MODES[mode]
    g = torch.Generator().manual_seed(seed)
    batch, heads = 2, 2

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    k = randn(batch, length, heads, k_dim)
    inputs = {
        "q": randn(batch, length, heads, k_dim),
        "k": F.normalize(k, dim=-1) if use_beta else k * 0.3,
        "v": randn(batch, length, heads, v_dim),
        "initial_state": randn(batch, heads, k_dim, v_dim) * 0.1,
    }
    if use_beta:
        inputs["beta"] = torch.sigmoid(randn(batch, length, heads))
    if use_decay:
        inputs["log_decay"] = F.logsigmoid(randn(batch, length, heads) + 2.0)
    return inputs


def run_with_grads(fn: object, inputs: dict[str, Tensor], **kwargs: object) -> list[Tensor]:
    """Outputs, final state and the gradients of a fixed random projection of both."""
    leaves = {name: x.clone().requires_grad_(True) for name, x in inputs.items()}
    o, state = fn(**leaves, **kwargs)  # type: ignore[operator]
    g = torch.Generator().manual_seed(99)
    loss = (o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum()
    loss = loss + (state * torch.randn(state.shape, generator=g, dtype=o.dtype)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [o.detach(), state.detach(), *grads]


def _call_chunk(*, q: Tensor, k: Tensor, v: Tensor, **kw: object) -> tuple[Tensor, Tensor]:
    return chunk_linear_rnn(q, k, v, **kw)  # type: ignore[arg-type]


def _call_naive(*, q: Tensor, k: Tensor, v: Tensor, **kw: object) -> tuple[Tensor, Tensor]:
    return naive_linear_rnn(q, k, v, **kw)  # type: ignore[arg-type]


# Every chunk size in float64; float32 at one chunk size keeps the run short.
PRECISION_GRID = [(torch.float64, 8), (torch.float64, 16), (torch.float64, 32), (torch.float32, 16)]


@pytest.mark.parametrize(
    ("dtype", "chunk_size"), PRECISION_GRID, ids=["f64-c8", "f64-c16", "f64-c32", "f32-c16"]
)
@pytest.mark.parametrize("length", [7, 33, 65])
@pytest.mark.parametrize("mode", list(MODES))
def test_chunked_matches_naive_outputs_and_gradients(
    mode: str, length: int, dtype: torch.dtype, chunk_size: int
) -> None:
    inputs = make_inputs(mode, length, dtype)
    chunked = run_with_grads(_call_chunk, inputs, chunk_size=chunk_size)
    reference = run_with_grads(_call_naive, inputs)
    names = ["o", "state", *(f"d{name}" for name in inputs)]
    for name, actual, expected in zip(names, chunked, reference, strict=True):
        assert rel_error(actual, expected) < TOLERANCE[dtype], name


@pytest.mark.parametrize("mode", list(MODES))
def test_step_loop_matches_naive(mode: str) -> None:
    inputs = make_inputs(mode, 33, torch.float64)
    expected_o, expected_state = naive_linear_rnn(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        beta=inputs.get("beta"),
        log_decay=inputs.get("log_decay"),
        initial_state=inputs["initial_state"],
    )
    state = inputs["initial_state"]
    outputs = []
    for t in range(33):
        beta, log_decay = inputs.get("beta"), inputs.get("log_decay")
        o_t, state = linear_rnn_step(
            inputs["q"][:, t],
            inputs["k"][:, t],
            inputs["v"][:, t],
            state,
            beta_t=None if beta is None else beta[:, t],
            log_decay_t=None if log_decay is None else log_decay[:, t],
        )
        outputs.append(o_t)
    assert rel_error(torch.stack(outputs, dim=1), expected_o) < 1e-12
    assert rel_error(state, expected_state) < 1e-12


@pytest.mark.parametrize("mode", list(MODES))
def test_two_halves_through_initial_state_equal_one_pass(mode: str) -> None:
    inputs = make_inputs(mode, 41, torch.float64)
    per_token = {
        name: inputs[name] for name in ("q", "k", "v", "beta", "log_decay") if name in inputs
    }

    def run(lo: int, hi: int, state: Tensor) -> tuple[Tensor, Tensor]:
        part = {name: x[:, lo:hi] for name, x in per_token.items()}
        return _call_chunk(**part, initial_state=state, chunk_size=16)

    full_o, full_state = run(0, 41, inputs["initial_state"])
    first_o, mid_state = run(0, 20, inputs["initial_state"])
    second_o, end_state = run(20, 41, mid_state)
    assert rel_error(torch.cat([first_o, second_o], dim=1), full_o) < 1e-12
    assert rel_error(end_state, full_state) < 1e-12


def test_custom_scale_multiplies_outputs() -> None:
    inputs = make_inputs("gated_delta", 9, torch.float64)
    base, _ = _call_chunk(**inputs, scale=1.0)
    scaled, _ = _call_chunk(**inputs, scale=0.25)
    assert rel_error(scaled, 0.25 * base) < 1e-12


def test_strong_decay_over_long_chunks_stays_finite_and_exact() -> None:
    """Cumulative log-decays of -3000 inside a 64-token chunk must not overflow exp."""
    inputs = make_inputs("gated_delta", 130, torch.float32)
    inputs["log_decay"] = torch.full_like(inputs["log_decay"], -50.0)
    inputs["log_decay"][:, ::7] = -1e-3
    chunked = run_with_grads(_call_chunk, inputs, chunk_size=64)
    reference = run_with_grads(_call_naive, inputs)
    for actual, expected in zip(chunked, reference, strict=True):
        assert torch.isfinite(actual).all()
        assert rel_error(actual, expected) < TOLERANCE[torch.float32]


def test_exports_at_fixed_shape_with_padding() -> None:
    class Wrapped(torch.nn.Module):
        def forward(
            self, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_decay: Tensor
        ) -> tuple[Tensor, Tensor]:
            return chunk_linear_rnn(q, k, v, beta=beta, log_decay=log_decay, chunk_size=16)

    inputs = make_inputs("gated_delta", 33, torch.float32)
    args = tuple(inputs[name] for name in ("q", "k", "v", "beta", "log_decay"))
    exported = torch.export.export(Wrapped(), args, strict=False)
    o, state = exported.module()(*args)
    expected_o, expected_state = Wrapped()(*args)
    assert rel_error(o, expected_o) < 1e-6
    assert rel_error(state, expected_state) < 1e-6
