"""The baseline mixers keep the Mixer contract: causal, step == forward, fixed state, exportable."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kernels.baselines import (
    BASELINES,
    DeltaNet,
    GatedDeltaNet,
    LinearAttention,
    Mamba2Like,
    RetNet,
    SoftmaxAttention,
    retnet_log_decays,
)

D_MODEL, N_HEADS, BATCH = 70, 2, 2
NAMES = list(BASELINES)


def build(name: str, dtype: torch.dtype = torch.float64, **options: object) -> nn.Module:
    torch.manual_seed(0)
    return BASELINES[name](D_MODEL, N_HEADS, **options).to(dtype)


def sequence(length: int, dtype: torch.dtype = torch.float64, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, length, D_MODEL, generator=g, dtype=torch.float64).to(dtype)


def step_through(mixer: nn.Module, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    state = mixer.init_state(x.shape[0])  # type: ignore[operator]
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)  # type: ignore[operator]
        outputs.append(y_t)
    return torch.stack(outputs, dim=1), state


def test_registry_names_the_six_baselines() -> None:
    assert dict(BASELINES) == {
        "softmax": SoftmaxAttention,
        "linear": LinearAttention,
        "retnet": RetNet,
        "mamba2": Mamba2Like,
        "deltanet": DeltaNet,
        "gated_deltanet": GatedDeltaNet,
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("length", [7, 33])
@pytest.mark.parametrize("name", NAMES)
def test_step_by_step_equals_forward(name: str, length: int, dtype: torch.dtype) -> None:
    mixer = build(name, dtype)
    x = sequence(length, dtype)
    with torch.no_grad():
        parallel = mixer(x)
        recurrent, _ = step_through(mixer, x)
    assert parallel.shape == (BATCH, length, D_MODEL)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(recurrent, parallel, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", NAMES)
def test_state_shapes_fixed_and_independent_of_length(name: str) -> None:
    mixer = build(name)
    initial = mixer.init_state(BATCH)  # type: ignore[operator]
    assert isinstance(initial, tuple) and initial
    for tensor in initial:
        assert isinstance(tensor, Tensor)
        assert tensor.shape[0] == BATCH and tensor.dtype == torch.float64
    with torch.no_grad():
        for length in (3, 9):
            _, final = step_through(mixer, sequence(length))
            assert [t.shape for t in final] == [t.shape for t in initial]
            assert [t.dtype for t in final] == [t.dtype for t in initial]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_finite_and_reach_every_parameter(name: str) -> None:
    mixer = build(name, torch.float32)
    x = sequence(33, torch.float32).requires_grad_(True)
    mixer(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, param in mixer.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_perturbing_the_future_leaves_the_past_unchanged(name: str) -> None:
    mixer = build(name)
    x = sequence(33)
    for t in (0, 16, 31):
        changed = x.clone()
        changed[:, t + 1 :] += torch.randn_like(changed[:, t + 1 :])
        with torch.no_grad():
            before, after = mixer(x), mixer(changed)
        torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(after[:, t + 1 :], before[:, t + 1 :])


class StepModule(nn.Module):
    """`step` as a module with flat tensor arguments, the way the exporter sees it."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x_t: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        y_t, new_state = self.mixer.step(x_t, state)  # type: ignore[operator]
        return (y_t, *new_state)


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_step_export_at_fixed_shapes(name: str) -> None:
    mixer = build(name, torch.float32).eval()
    x = sequence(33, torch.float32)
    program = torch.export.export(mixer, (x,), strict=False)
    torch.testing.assert_close(program.module()(x), mixer(x))

    stepper = StepModule(mixer)
    args = (x[:, 0], *mixer.init_state(BATCH))  # type: ignore[operator]
    step_program = torch.export.export(stepper, args, strict=False)
    for got, want in zip(step_program.module()(*args), stepper(*args), strict=True):
        torch.testing.assert_close(got, want)


def test_softmax_step_matches_sliding_window_past_capacity() -> None:
    mixer = build("softmax", max_len=8)
    x = sequence(21)
    with torch.no_grad():
        recurrent, state = step_through(mixer, x)
        parallel = mixer(x)
    torch.testing.assert_close(recurrent, parallel, rtol=1e-10, atol=1e-10)
    k_cache, _, pos = state
    assert k_cache.shape == (BATCH, N_HEADS, 8, D_MODEL // N_HEADS)
    assert float(pos[0]) == 21.0


@pytest.mark.parametrize(
    ("name", "options", "n_state"),
    [
        ("softmax", {"use_short_conv": True}, 4),
        ("linear", {"use_short_conv": True}, 2),
        ("retnet", {"output_gate": True}, 1),
        ("mamba2", {"output_gate": True, "a_init_range": (1.0, 16.0)}, 2),
        ("deltanet", {"use_short_conv": False}, 1),
        ("gated_deltanet", {"use_short_conv": False}, 1),
    ],
)
def test_non_default_options_keep_step_equal_to_forward(
    name: str, options: dict[str, object], n_state: int
) -> None:
    mixer = build(name, **options)
    x = sequence(7)
    assert len(mixer.init_state(BATCH)) == n_state  # type: ignore[operator]
    with torch.no_grad():
        recurrent, _ = step_through(mixer, x)
        torch.testing.assert_close(recurrent, mixer(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_rejects_heads_that_do_not_divide_the_width(name: str) -> None:
    with pytest.raises(ValueError, match="n_heads"):
        BASELINES[name](70, 3)


@pytest.mark.parametrize("name", NAMES)
def test_rejects_unknown_options(name: str) -> None:
    with pytest.raises(TypeError):
        BASELINES[name](64, 2, no_such_option=1)


def test_retnet_decays_are_multi_scale() -> None:
    gammas = retnet_log_decays(4).double().exp()
    expected = 1 - 2.0 ** (-5 - torch.arange(4, dtype=torch.float64))
    torch.testing.assert_close(gammas, expected, rtol=1e-6, atol=0)
