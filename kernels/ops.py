"""The token-mixer operators other packages may import: plain torch, CPU-friendly, exportable.

- `chunk_linear_rnn`: whole sequence of a linear RNN with matrix state (additive linear
  attention, fixed or data-dependent scalar decay, delta rule, gated delta rule).
- `linear_rnn_step`: the same recurrence, one token.
- `causal_conv1d` / `causal_conv1d_step`: depthwise causal short convolution.

Readable token-by-token oracles live beside each op in `naive.py`.
"""

from __future__ import annotations

from kernels.conv1d.conv import causal_conv1d, causal_conv1d_step
from kernels.linear_rnn.chunk import chunk_linear_rnn
from kernels.linear_rnn.step import linear_rnn_step

__all__ = ["causal_conv1d", "causal_conv1d_step", "chunk_linear_rnn", "linear_rnn_step"]
