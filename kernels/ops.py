"""The token-mixer operators other packages may import: plain torch, CPU-friendly, exportable.

- `chunk_linear_rnn`: whole sequence of a linear RNN with matrix state (additive linear
  attention, fixed or data-dependent scalar decay, delta rule, gated delta rule).
- `linear_rnn_step`: the same recurrence, one token.
- `causal_conv1d` / `causal_conv1d_step`: depthwise causal short convolution.
- `causal_fir`: the same convolution under the name candidates use for long filters (up to
  64 taps run on our Triton kernel on CUDA).

On CUDA, `chunk_linear_rnn` and `causal_conv1d` run fast paths (fla's chunked kernels, our
Triton FIR kernel) chosen per call in `kernels.dispatch`; on the CPU they are the plain
torch references, unchanged.

Readable token-by-token oracles live beside each op in `naive.py`.
"""

from __future__ import annotations

from kernels.conv1d.conv import causal_conv1d_step
from kernels.dispatch import causal_conv1d, chunk_linear_rnn
from kernels.linear_rnn.step import linear_rnn_step

causal_fir = causal_conv1d

__all__ = [
    "causal_conv1d",
    "causal_conv1d_step",
    "causal_fir",
    "chunk_linear_rnn",
    "linear_rnn_step",
]
