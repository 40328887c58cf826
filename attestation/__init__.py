"""Trust: keys, DSSE envelopes, transparency log, TEE evidence, audit (issues 4 and 7)."""
