"""Causal depthwise FIR convolution: a plain-torch oracle and a Triton kernel (see kernels.ops)."""
