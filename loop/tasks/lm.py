"""A small byte-level language-modelling task: next-token prediction on a token stream.

The stream is either a corpus this module generates deterministically from a small
probabilistic grammar (the default; nothing to download, identical on every machine), or
a tokenised shard on local disk: a `.npy` array or a raw little-endian uint16 file, read
memory-mapped so a large shard costs no memory. The first (1 - heldout_frac) of the
stream is for training and the rest is held out. The metric is the held-out loss in nats
per token (and next-token accuracy), over windows whose starts the caller's seed fixes.

The grammar puts facts early in a paragraph and asks about them later ("where is the red
cup? in the attic."), so recalling context matters and not only local statistics.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from loop.tasks.common import Batch, TestSet, canonical_digest, generator

_NAMES = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    "ivan", "judy", "mallory", "oscar", "peggy", "trent", "victor", "wendy",
]  # fmt: skip
_COLOURS = ["red", "blue", "green", "black", "white", "yellow", "brown", "grey"]
_THINGS = ["cup", "key", "book", "coin", "lamp", "ring", "box", "pen", "hat", "map"]
_PLACES = ["kitchen", "attic", "garden", "cellar", "hall", "library", "garage", "office"]
_ANIMALS = ["cat", "dog", "fox", "owl", "horse", "goat", "duck", "mouse"]
_PLURALS = dict(
    zip(
        _ANIMALS, ["cats", "dogs", "foxes", "owls", "horses", "goats", "ducks", "mice"], strict=True
    )
)
_VERBS = ["sees", "likes", "follows", "feeds", "watches", "chases"]
_ADJECTIVES = ["small", "old", "quick", "lazy", "happy", "quiet"]
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class _Grammar:
    """Sentence generator driven only by `random.Random.random()`, whose sequence for a
    given integer seed Python guarantees across versions (unlike choice or shuffle)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def _pick(self, words: tuple[str, ...] | list[str]) -> str:
        return words[int(self._rng.random() * len(words))]

    def _chance(self, p: float) -> bool:
        return self._rng.random() < p

    def paragraph(self) -> str:
        """Facts, filler sentences, then questions about some of the facts, shuffled.

        A fact never repeats its subject within a paragraph, so every question has one answer.
        """
        located: dict[tuple[str, str], str] = {}  # (colour, thing) -> place
        counted: dict[tuple[str, str], str] = {}  # (name, animal) -> number
        sentences: list[str] = []
        for _ in range(2 + int(self._rng.random() * 4)):
            name = self._pick(_NAMES)
            if self._chance(0.5):
                colour, thing, place = (
                    self._pick(_COLOURS),
                    self._pick(_THINGS),
                    self._pick(_PLACES),
                )
                if (colour, thing) not in located:
                    located[colour, thing] = place
                    sentences.append(f"{name} put the {colour} {thing} in the {place}.")
            else:
                number, animal = self._pick(_NUMBERS), self._pick(_ANIMALS)
                if (name, animal) not in counted:
                    counted[name, animal] = number
                    noun = animal if number == "one" else _PLURALS[animal]
                    sentences.append(f"{name} has {number} {noun}.")
            if self._chance(0.4):
                sentences.append(
                    f"the {self._pick(_ADJECTIVES)} {self._pick(_ANIMALS)} "
                    f"{self._pick(_VERBS)} {self._pick(_NAMES)}."
                )
        questions = [
            f"where is the {colour} {thing}? in the {place}."
            for (colour, thing), place in located.items()
        ] + [
            f"how many {_PLURALS[animal]} has {name}? {number}."
            for (name, animal), number in counted.items()
        ]
        for i in range(len(questions) - 1, 0, -1):  # Fisher-Yates on random() alone
            j = int(self._rng.random() * (i + 1))
            questions[i], questions[j] = questions[j], questions[i]
        sentences.extend(q for q in questions if self._chance(0.8))
        return " ".join(sentences) + "\n"


@functools.lru_cache(maxsize=4)
def generated_corpus(seed: int, n_bytes: int) -> bytes:
    """The grammar's text for `seed`, cut to exactly `n_bytes` ASCII bytes (cached)."""
    grammar = _Grammar(seed)
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        text = grammar.paragraph()
        parts.append(text)
        size += len(text)
    return "".join(parts).encode("ascii")[:n_bytes]


def read_stream(spec: LMSpec) -> npt.NDArray[np.integer]:
    """The whole token stream as an array; shards stay memory-mapped."""
    if spec.data_path is None:
        return np.frombuffer(generated_corpus(spec.corpus_seed, spec.corpus_bytes), dtype=np.uint8)
    path = Path(spec.data_path)
    if path.suffix == ".npy":
        array: npt.NDArray[np.integer] = np.load(path, mmap_mode="r")
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{path}: expected a 1-D integer array, got {array.dtype}{array.shape}"
            )
        return array
    return np.memmap(path, dtype="<u2", mode="r")


@dataclass(frozen=True)
class LMSpec:
    """Everything that defines the language-modelling task; its digest goes into records."""

    kind: Literal["lm"] = "lm"
    vocab_size: int = 256
    corpus_seed: int = 0
    corpus_bytes: int = 262_144
    data_path: str | None = None  # a tokenised shard (.npy, or raw uint16) instead of the grammar
    heldout_frac: float = 0.1
    batch_size: int = 32
    seq_len: int = 128
    test_seq_lens: tuple[int, ...] = (128,)
    test_examples: int = 200
    probe_examples: int = 32

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout_frac < 1.0:
            raise ValueError("heldout_frac must lie strictly between 0 and 1")
        if self.seq_len < 1 or not self.test_seq_lens or min(self.test_seq_lens) < 1:
            raise ValueError("sequence lengths must be positive")
        if self.batch_size < 1 or self.test_examples < 1 or self.probe_examples < 1:
            raise ValueError("batch and test sizes must be positive")

    @classmethod
    def quick(cls) -> LMSpec:
        """The demo preset: a smaller corpus and held-out set."""
        return cls(corpus_bytes=131_072, test_examples=100)

    def spec_digest(self) -> str:
        return canonical_digest(self)

    def test_lengths(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.test_seq_lens)))

    def _split(self) -> tuple[npt.NDArray[np.integer], npt.NDArray[np.integer]]:
        stream = read_stream(self)
        cut = int(len(stream) * (1.0 - self.heldout_frac))
        return stream[:cut], stream[cut:]

    def _windows(
        self, stream: npt.NDArray[np.integer], n: int, length: int, gen: torch.Generator
    ) -> Batch:
        """`n` windows of `length` + 1 tokens at seeded starts: inputs and shifted targets."""
        if len(stream) < length + 1:
            raise ValueError(f"stream of {len(stream)} tokens is shorter than a window of {length}")
        starts = torch.randint(0, len(stream) - length, (n,), generator=gen).numpy()
        index = starts[:, None] + np.arange(length + 1)[None, :]
        windows = torch.from_numpy(np.asarray(stream[index], dtype=np.int64))
        if int(windows.max()) >= self.vocab_size:
            raise ValueError(
                f"token id {int(windows.max())} is outside vocab_size {self.vocab_size}"
            )
        return Batch(windows[:, :-1].contiguous(), windows[:, 1:].contiguous())

    def train_batch(self, step: int, seed: int) -> Batch:
        train, _ = self._split()
        return self._windows(
            train, self.batch_size, self.seq_len, generator(seed, "lm-train", step)
        )

    def probe_batch(self, seed: int) -> Batch:
        train, _ = self._split()
        return self._windows(train, self.probe_examples, self.seq_len, generator(seed, "lm-probe"))

    def test_sets(self, seed: int) -> tuple[TestSet, ...]:
        """Held-out windows, one set per test length; the seed picks the window starts."""
        _, heldout = self._split()
        return tuple(
            TestSet(
                name=f"heldout_{length}",
                batch=self._windows(
                    heldout, self.test_examples, length, generator(seed, "lm-test", length)
                ),
            )
            for length in self.test_lengths()
        )
