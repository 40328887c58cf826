"""Token-by-token linear RNN: the readable oracle the chunked path is tested against.

It is the recurrence exactly as written in `kernels.ops.chunk_linear_rnn`'s docstring, one
token at a time, so a reader can check the algebra of the chunked form against it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def naive_linear_rnn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    beta: Tensor | None = None,
    log_decay: Tensor | None = None,
    scale: float | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the recurrence over (B, T, H, ·) inputs; returns (o (B, T, H, V), S_T (B, H, K, V))."""
    batch, length, heads, k_dim = q.shape
    v_dim = v.shape[-1]
    scale = k_dim**-0.5 if scale is None else scale
    state = q.new_zeros(batch, heads, k_dim, v_dim) if initial_state is None else initial_state
    outputs = []
    for t in range(length):
        k_t, v_t = k[:, t], v[:, t]
        if log_decay is not None:
            state = state * log_decay[:, t].exp()[..., None, None]
        if beta is None:
            written = v_t
        else:
            # The delta rule writes the error of what the decayed state predicts for k_t.
            predicted = torch.einsum("bhkv,bhk->bhv", state, k_t)
            written = beta[:, t, :, None] * (v_t - predicted)
        state = state + k_t[..., :, None] * written[..., None, :]
        outputs.append(scale * torch.einsum("bhkv,bhk->bhv", state, q[:, t]))
    return torch.stack(outputs, dim=1), state
