"""The node's transparency log and the records it signs."""
