"""Small hand-written mixers the loop tests share."""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class CumulativeMean(nn.Module):
    """A causal mixer with a (B, D) running sum and a count as its state."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        count = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1)
        out: Tensor = self.proj(x.cumsum(dim=1) / count)
        return out

    def init_state(self, batch: int) -> State:
        weight = self.proj.weight
        return weight.new_zeros(batch, weight.shape[1]), weight.new_zeros(batch, 1)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        total, count = state[0] + x_t, state[1] + 1
        out: Tensor = self.proj(total / count)
        return out, (total, count)
