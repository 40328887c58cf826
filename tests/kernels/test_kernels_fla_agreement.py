"""Our operators agree with flash-linear-attention 0.6's own naive references.

Skipped when fla (fla-core) is not installed. fla's references compute in float32, so the
comparison is float32 with a relative bound; shapes are odd on purpose (T=33, K=35).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.baselines import retnet_log_decays
from kernels.ops import chunk_linear_rnn

B, T, H, K, V = 2, 33, 2, 35, 19
BOUND = 2e-4

Loader = Callable[[str], ModuleType]


def rel_error(actual: Tensor, expected: Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def heads_first(x: Tensor) -> Tensor:
    """(B, T, H, D) -> (B, H, T, D), the layout of fla's older references."""
    return x.transpose(1, 2).contiguous()


@pytest.fixture
def data() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(7)
    return {
        "q": torch.randn(B, T, H, K, generator=g),
        "k": F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1),
        "v": torch.randn(B, T, H, V, generator=g),
        "beta": torch.rand(B, T, H, generator=g),
        "g": F.logsigmoid(torch.randn(B, T, H, generator=g) + 2.0),
        "h0": 0.1 * torch.randn(B, H, K, V, generator=g),
    }


def test_delta_rule_matches_fla_recurrence(fla_naive: Loader, data: dict[str, Tensor]) -> None:
    ref = fla_naive("delta_rule")
    q, k, v = (heads_first(data[n]) for n in ("q", "k", "v"))
    beta = data["beta"].transpose(1, 2).contiguous()
    expected_o, expected_s = ref.delta_rule_recurrence(q, k, v, beta, initial_state=data["h0"])
    o, s = chunk_linear_rnn(
        data["q"], data["k"], data["v"], beta=data["beta"], initial_state=data["h0"], chunk_size=16
    )
    assert rel_error(heads_first(o), expected_o) < BOUND
    assert rel_error(s, expected_s) < BOUND


def test_delta_rule_matches_fla_chunkwise(fla_naive: Loader, data: dict[str, Tensor]) -> None:
    ref = fla_naive("delta_rule")
    length = 32  # fla's chunkwise reference needs T divisible by its chunk
    q, k, v = (heads_first(data[n][:, :length]) for n in ("q", "k", "v"))
    beta = data["beta"][:, :length].transpose(1, 2).contiguous()
    expected_o, expected_s = ref.delta_rule_chunkwise(q, k, v, beta, chunk_size=16)
    o, s = chunk_linear_rnn(
        data["q"][:, :length],
        data["k"][:, :length],
        data["v"][:, :length],
        beta=data["beta"][:, :length],
        chunk_size=8,
    )
    assert rel_error(heads_first(o), expected_o) < BOUND
    assert rel_error(s, expected_s) < BOUND


@pytest.mark.parametrize(
    "reference", ["naive_recurrent_gated_delta_rule", "naive_chunk_gated_delta_rule"]
)
def test_gated_delta_rule_matches_fla(
    fla_naive: Loader, data: dict[str, Tensor], reference: str
) -> None:
    fn = getattr(fla_naive("gated_delta_rule"), reference)
    expected_o, expected_s = fn(
        q=data["q"],
        k=data["k"],
        v=data["v"],
        beta=data["beta"],
        g=data["g"],
        initial_state=data["h0"],
        output_final_state=True,
    )
    o, s = chunk_linear_rnn(
        data["q"],
        data["k"],
        data["v"],
        beta=data["beta"],
        log_decay=data["g"],
        initial_state=data["h0"],
        chunk_size=16,
    )
    assert rel_error(o, expected_o) < BOUND
    assert rel_error(s, expected_s) < BOUND


@pytest.mark.parametrize("reference", ["naive_recurrent_simple_gla", "naive_chunk_simple_gla"])
def test_scalar_decay_matches_fla_simple_gla(
    fla_naive: Loader, data: dict[str, Tensor], reference: str
) -> None:
    fn = getattr(fla_naive("simple_gla"), reference)
    expected_o, expected_s = fn(
        q=data["q"],
        k=data["k"],
        v=data["v"],
        g=data["g"],
        initial_state=data["h0"],
        output_final_state=True,
    )
    o, s = chunk_linear_rnn(
        data["q"], data["k"], data["v"], log_decay=data["g"], initial_state=data["h0"], chunk_size=8
    )
    assert rel_error(o, expected_o) < BOUND
    assert rel_error(s, expected_s) < BOUND


def test_retnet_decays_match_fla_retention(fla_naive: Loader, data: dict[str, Tensor]) -> None:
    ref = fla_naive("retention")
    q, k, v = (heads_first(data[n]) for n in ("q", "k", "v"))
    expected = ref.naive_retention(q, k, v)
    log_decay = retnet_log_decays(H).expand(B, T, H)
    o, _ = chunk_linear_rnn(data["q"], data["k"], data["v"], log_decay=log_decay, chunk_size=16)
    assert rel_error(heads_first(o), expected) < BOUND


def test_additive_matches_fla_linear_attention(fla_naive: Loader, data: dict[str, Tensor]) -> None:
    ref = fla_naive("linear_attn")
    expected_o, expected_s = ref.naive_recurrent_linear_attn(
        data["q"], data["k"], data["v"], initial_state=data["h0"], output_final_state=True
    )
    o, s = chunk_linear_rnn(
        data["q"], data["k"], data["v"], initial_state=data["h0"], chunk_size=16
    )
    assert rel_error(o, expected_o) < BOUND
    assert rel_error(s, expected_s) < BOUND
