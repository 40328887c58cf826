"""Multi-query associative recall (MQAR, after Zoology): the CPU screening task.

Layout of one example of length T with P key-value pairs (positions are 0-based):

    positions 0 .. 2P-1   the pairs, interleaved: k_1 v_1 k_2 v_2 ... k_P v_P
    positions 2P .. T-1   the query region: every key k_1..k_P appears exactly once, at P
                          distinct positions drawn uniformly from the region, in random
                          order; every other position holds the filler token 0

Keys are distinct within an example and drawn from `key_range` (default 1..511); values
are distinct within an example and drawn from `value_range` (default 512..1023); 0 is
filler and never a key or a value. The target at a query position is the value that was
paired with the key sitting there; every other target is IGNORE_INDEX, so loss and
accuracy are taken at query positions only. A causal model therefore has to recall, at
the query, the value that followed the same key earlier in the sequence.

Training batches are fresh: step s draws its examples from a generator seeded by
(seed, s) and alternates over `train_shapes`. Test sets are fixed by the seed the caller
gives; the trusted evaluator uses a held-out seed that the training sandbox never sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from loop.tasks.common import IGNORE_INDEX, Batch, TestSet, canonical_digest, generator

Shape = tuple[int, int]  # (sequence length T, number of pairs P)


@dataclass(frozen=True)
class MQARSpec:
    """Everything that defines the MQAR task; its digest goes into experiment records."""

    kind: Literal["mqar"] = "mqar"
    vocab_size: int = 1024
    key_range: tuple[int, int] = (1, 511)  # inclusive
    value_range: tuple[int, int] = (512, 1023)  # inclusive
    batch_size: int = 64
    train_shapes: tuple[Shape, ...] = ((64, 8), (128, 16))
    test_shapes: tuple[Shape, ...] = ((64, 8), (128, 16), (128, 32), (256, 64))
    test_examples: int = 500
    probe_examples: int = 128  # size of the early-abort check batch

    def __post_init__(self) -> None:
        key_lo, key_hi = self.key_range
        val_lo, val_hi = self.value_range
        if not (0 < key_lo <= key_hi < self.vocab_size and 0 < val_lo <= val_hi < self.vocab_size):
            raise ValueError("key and value ranges must lie in 1..vocab_size-1 (0 is filler)")
        if not (key_hi < val_lo or val_hi < key_lo):
            raise ValueError("key and value ranges must not overlap")
        if not self.train_shapes or not self.test_shapes:
            raise ValueError("MQAR needs at least one training shape and one test shape")
        for seq_len, pairs in (*self.train_shapes, *self.test_shapes):
            if pairs < 1 or seq_len - 2 * pairs < pairs:
                raise ValueError(f"shape ({seq_len}, {pairs}) leaves no room for the queries")
            if pairs > min(key_hi - key_lo + 1, val_hi - val_lo + 1):
                raise ValueError(f"shape ({seq_len}, {pairs}) needs more distinct keys or values")
        if self.batch_size < 1 or self.test_examples < 1 or self.probe_examples < 1:
            raise ValueError("batch and test sizes must be positive")

    @classmethod
    def quick(cls) -> MQARSpec:
        """The demo's smaller MQAR: 63 keys and 64 values, half-length sequences, 100 test
        examples per set. On 2 CPU cores the full task needs minutes per candidate before
        any mixer learns; this one separates recall-capable mixers in a few hundred steps."""
        return cls(
            vocab_size=128,
            key_range=(1, 63),
            value_range=(64, 127),
            train_shapes=((32, 4), (64, 8)),
            test_shapes=((32, 4), (64, 8), (64, 16), (128, 32)),
            test_examples=100,
        )

    @property
    def n_values(self) -> int:
        return self.value_range[1] - self.value_range[0] + 1

    def spec_digest(self) -> str:
        return canonical_digest(self)

    def test_lengths(self) -> tuple[int, ...]:
        """The distinct sequence lengths of the test sets, ascending (one graph each)."""
        return tuple(sorted({seq_len for seq_len, _ in self.test_shapes}))

    def train_batch(self, step: int, seed: int) -> Batch:
        """Fresh examples for one optimiser step; shapes alternate with the step index."""
        seq_len, pairs = self.train_shapes[step % len(self.train_shapes)]
        return self.examples(self.batch_size, seq_len, pairs, generator(seed, "mqar-train", step))

    def probe_batch(self, seed: int) -> Batch:
        """A small batch at the first test shape, from the training distribution."""
        seq_len, pairs = self.test_shapes[0]
        return self.examples(self.probe_examples, seq_len, pairs, generator(seed, "mqar-probe"))

    def test_sets(self, seed: int) -> tuple[TestSet, ...]:
        """The fixed test sets for `seed`; each shape has its own stream, so adding a shape
        leaves the others unchanged."""
        return tuple(
            TestSet(
                name=f"{seq_len}x{pairs}",
                batch=self.examples(
                    self.test_examples,
                    seq_len,
                    pairs,
                    generator(seed, "mqar-test", seq_len, pairs),
                ),
            )
            for seq_len, pairs in self.test_shapes
        )

    def examples(self, n: int, seq_len: int, pairs: int, gen: torch.Generator) -> Batch:
        """`n` examples in the layout of the module docstring, vectorised over examples."""
        key_lo, key_hi = self.key_range
        val_lo, val_hi = self.value_range
        # Distinct draws per row, in random order: the indices of the `pairs` largest of
        # uniform noise (topk is several times cheaper than a full argsort here).
        keys = torch.rand(n, key_hi - key_lo + 1, generator=gen).topk(pairs, dim=1).indices
        values = torch.rand(n, val_hi - val_lo + 1, generator=gen).topk(pairs, dim=1).indices
        keys += key_lo
        values += val_lo
        region = seq_len - 2 * pairs
        noise = torch.rand(n, region, generator=gen)
        query_pos = noise.topk(pairs, dim=1).indices + 2 * pairs

        tokens = torch.zeros(n, seq_len, dtype=torch.long)
        targets = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
        tokens[:, 0 : 2 * pairs : 2] = keys
        tokens[:, 1 : 2 * pairs : 2] = values
        tokens.scatter_(1, query_pos, keys)
        targets.scatter_(1, query_pos, values)
        return Batch(tokens, targets)
