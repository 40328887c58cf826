"""Causal depthwise FIR convolution as a sum of shifted copies: the oracle for kernels.fir.

y[b, t, c] = sum_i weight[c, i] * x[b, t - W + 1 + i, c] (+ bias[c]), with x = 0 before
the first token. Tap W-1 meets the current token, tap 0 the one W-1 steps back, the same
convention as `kernels.conv1d` (and a cross-correlation, as F.conv1d computes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def naive_causal_fir(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (B, T, C), weight (C, W), bias (C,) -> (B, T, C), computed in float32 or wider."""
    width = weight.shape[1]
    length = x.shape[1]
    wide = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(wide)
    y = xf.new_zeros(xf.shape)
    for i in range(width):
        lag = width - 1 - i  # tap i looks `lag` tokens back
        if lag >= length:
            continue
        shifted = F.pad(xf[:, : length - lag], (0, 0, lag, 0))
        y = y + weight[:, i].to(wide) * shifted
    if bias is not None:
        y = y + bias.to(wide)
    return y.to(x.dtype)
