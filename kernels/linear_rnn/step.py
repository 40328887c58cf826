"""One token of the linear RNN: the recurrent (decoding) path every baseline's `step` uses."""

from __future__ import annotations

import torch
from torch import Tensor


def linear_rnn_step(
    q_t: Tensor,
    k_t: Tensor,
    v_t: Tensor,
    state: Tensor,
    *,
    beta_t: Tensor | None = None,
    log_decay_t: Tensor | None = None,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Advance the state by one token.

    q_t, k_t: (B, H, K); v_t: (B, H, V); state: (B, H, K, V); beta_t, log_decay_t: (B, H).
    Returns (o_t (B, H, V), new_state (B, H, K, V)); same update as `chunk_linear_rnn`.
    """
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    if log_decay_t is not None:
        state = state * log_decay_t.exp()[..., None, None]
    if beta_t is None:
        written = v_t
    else:
        predicted = torch.einsum("bhkv,bhk->bhv", state, k_t)
        written = beta_t[..., None] * (v_t - predicted)
    state = state + k_t[..., :, None] * written[..., None, :]
    return scale * torch.einsum("bhkv,bhk->bhv", state, q_t), state
