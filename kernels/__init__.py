"""Token-mixer operators: a plain-torch reference for each, fast paths on GPU.

Layout (after flash-linear-attention: each op's readable oracle sits beside its fast path):

    ops.py                 the public operator API; other packages import only these names
    linear_rnn/naive.py    token-by-token recurrence, the oracle
    linear_rnn/chunk.py    chunked form, vectorised within chunks (WY form for the delta rule)
    linear_rnn/step.py     one-token recurrence for decoding and `Mixer.step`
    conv1d/naive.py        causal depthwise conv as an explicit sum over taps, the oracle
    conv1d/conv.py         causal depthwise conv (a depthwise conv2d) and its one-token step
    dispatch.py            per call: fast path on CUDA (fla, our Triton) or the reference
    fla_ops.py             fla 0.6's chunked ops behind our interface (only fla import)
    fir/naive.py           causal depthwise FIR as a sum of shifted copies, the oracle
    fir/triton.py          Triton FIR kernel, forward and backward, up to 64 taps
    errors.py              KernelInputError, raised before a kernel launches
    layers.py              parts the baselines share: short conv, norms, Mamba2 inits
    baselines.py           the six baseline mixers and the BASELINES registry

Nothing here runs at import time. Candidate code may import this package, so it holds
no file, process or network access.
"""
