"""Causal depthwise convolution: the whole sequence (as a depthwise conv2d) and one token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (B, T, C), weight (C, W) -> (B, T, C) with y_t = sum_i w[:, i] x_{t-W+1+i} (+ bias).

    F.pad puts W-1 zeros before the sequence in x's own (B, T, C) layout, and the depthwise
    conv2d reads that as (B, C, 1, W-1+T): for a contiguous tensor, channels-last order. So
    nothing is copied in or out, oneDNN runs its channels-last depthwise kernels forward
    and backward, and the output is contiguous as (B, T, C) again. conv2d is a
    cross-correlation, so tap i meets input t-W+1+i. (Padding inside conv2d instead hung
    oneDNN for minutes when the taps outnumber the tokens, 64 over 16.) On 2 CPU cores at
    the MQAR recipe's shapes this took conv and SiLU from 33 to 16 ms a call (192 channels,
    4 taps), where F.conv1d on the transposed input copied it, ran the planar kernels and
    returned a transposed view, which SiLU then read slowly.
    """
    padded = F.pad(x, (0, 0, weight.shape[1] - 1, 0))  # (B, W-1+T, C), contiguous
    planes = padded.transpose(1, 2).unsqueeze(2)  # (B, C, 1, W-1+T), channels-last
    taps = weight[:, None, None, :].contiguous(memory_format=torch.channels_last)
    y = F.conv2d(planes, taps, bias, groups=weight.shape[0])  # (B, C, 1, T)
    return y.squeeze(2).transpose(1, 2)


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
