"""Linear RNNs with a matrix state: additive, decayed and delta-rule updates (see kernels.ops)."""
