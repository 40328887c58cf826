"""Causal depthwise convolution as an explicit sum over taps: the oracle for kernels.conv1d."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (B, T, C), weight (C, W): y_t = sum_i weight[:, i] * x_{t-W+1+i} (+ bias)."""
    width = weight.shape[1]
    outputs = []
    for t in range(x.shape[1]):
        acc = torch.zeros_like(x[:, 0]) if bias is None else bias.expand_as(x[:, 0])
        for i in range(width):
            source = t - width + 1 + i
            if source >= 0:
                acc = acc + weight[:, i] * x[:, source]
        outputs.append(acc)
    return torch.stack(outputs, dim=1)
