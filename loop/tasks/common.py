"""What every task shares: batches, named test sets, seed derivation and spec digests.

Kept free of `kernels` and of any model code, because the trusted evaluator imports it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

IGNORE_INDEX = -100  # target value at positions that carry no loss (cross_entropy's default)


@dataclass(frozen=True)
class Batch:
    """Inputs and next-token targets; `targets` is IGNORE_INDEX where no loss is taken."""

    tokens: Tensor  # (B, T) int64
    targets: Tensor  # (B, T) int64

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    def rows(self, start: int, stop: int) -> Batch:
        """A contiguous slice of examples, for fixed-batch evaluation."""
        return Batch(self.tokens[start:stop], self.targets[start:stop])


@dataclass(frozen=True)
class TestSet:
    """A fixed evaluation set with a stable name such as '128x32' (length x pairs)."""

    __test__ = False  # not a pytest test class despite the name

    name: str
    batch: Batch


def derive_seed(seed: int, *labels: str | int) -> int:
    """A 63-bit seed for one purpose, so that streams for different purposes never overlap.

    Hashing (rather than adding offsets) keeps, say, step 7 of seed 1 unrelated to step 1
    of seed 7.
    """
    text = json.dumps([seed, *labels], separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def generator(seed: int, *labels: str | int) -> torch.Generator:
    """A fresh CPU generator for one call, independent of torch's global RNG."""
    return torch.Generator(device="cpu").manual_seed(derive_seed(seed, *labels))


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read a megabyte at a time (shards and graphs are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_digest(spec: Any) -> str:
    """sha256 of the dataclass fields as canonical JSON (sorted keys, no spaces)."""
    fields = dataclasses.asdict(spec)
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
