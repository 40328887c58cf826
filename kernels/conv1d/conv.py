"""Causal depthwise convolution: the whole-sequence path (F.conv1d) and the one-token step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (B, T, C), weight (C, W) -> (B, T, C) with y_t = sum_i w[:, i] x_{t-W+1+i} (+ bias).

    Left padding by W-1 zeros makes it causal; F.conv1d is a cross-correlation, so tap i of
    the weight meets input t-W+1+i exactly as the formula says.
    """
    width = weight.shape[1]
    padded = F.pad(x.transpose(1, 2), (width - 1, 0))
    return F.conv1d(padded, weight[:, None, :], bias, groups=weight.shape[0]).transpose(1, 2)


def causal_conv1d_step(
    x_t: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """x_t (B, C); conv_state (B, C, W-1) holds the previous W-1 inputs, oldest first.

    Returns (y_t (B, C), new_state (B, C, W-1)). A fresh state of zeros matches the zero
    left-padding of `causal_conv1d`.
    """
    window = torch.cat([conv_state, x_t[..., None]], dim=-1)  # (B, C, W)
    y = (window * weight).sum(-1)
    if bias is not None:
        y = y + bias
    return y, window[..., 1:]
