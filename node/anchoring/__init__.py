"""Anchoring the log's checkpoints on an EVM chain and the Internet Computer."""
