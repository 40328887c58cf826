"""Small parts the baseline mixers share: short convolution, norms, head reshapes, inits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels.ops import causal_conv1d, causal_conv1d_step


def head_dim(d_model: int, n_heads: int) -> int:
    """Width of one head; the baselines need d_model to split evenly into heads."""
    if n_heads < 1 or d_model % n_heads != 0:
        raise ValueError(
            f"d_model={d_model} must be a positive multiple of n_heads={n_heads}; "
            "pick n_heads dividing d_model"
        )
    return d_model // n_heads


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(..., H*D) -> (..., H, D)."""
    return x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Unit-norm rows, smooth at zero (the eps sits inside the root, unlike F.normalize)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def rms_norm(x: Tensor, weight: Tensor, gate: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """RMSNorm over the last dim (per head), optionally times a SiLU output gate."""
    y = F.rms_norm(x, (x.shape[-1],), weight, eps)
    return y if gate is None else y * F.silu(gate)


def dt_bias_init(
    n: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4
) -> Tensor:
    """Mamba2's time-step bias: softplus(bias) is log-uniform in [dt_min, dt_max] at init.

    Short and long memories both exist from the start, so heads specialise instead of all
    forgetting at one rate.
    """
    log_dt = torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = log_dt.exp().clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


def a_log_init(n: int, low: float = 1.0, high: float = 16.0) -> Tensor:
    """Mamba2's decay rates A ~ U[low, high], stored as log A so that -exp(A_log) stays < 0."""
    return torch.empty(n).uniform_(low, high).log()


class ShortConv(nn.Module):
    """Depthwise causal convolution followed by SiLU, with its one-token step."""

    def __init__(self, channels: int, kernel_size: int, *, bias: bool = False) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size={kernel_size} must be at least 1")
        self.channels = channels
        self.kernel_size = kernel_size
        bound = 1.0 / math.sqrt(kernel_size)  # nn.Conv1d's default for a depthwise conv
        self.weight = nn.Parameter(torch.empty(channels, kernel_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(causal_conv1d(x, self.weight, self.bias))

    def init_state(self, batch: int) -> Tensor:
        return self.weight.new_zeros(batch, self.channels, self.kernel_size - 1)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        y, state = causal_conv1d_step(x_t, state, self.weight, self.bias)
        return F.silu(y), state
