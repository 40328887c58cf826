"""Trust: keys, canonical JSON, DSSE envelopes, the Merkle log, checkpoints, audit.

Knows nothing of training or of the node: it signs and verifies bytes and documents.
TEE evidence goes here too.
"""
