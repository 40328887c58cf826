"""Depthwise causal short convolutions, as used before the token mixers (see kernels.ops)."""
