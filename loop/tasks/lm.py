"""A small byte-level language-modelling task: next-token prediction on a token stream.

The stream is either a corpus this module generates deterministically from a small
probabilistic grammar (the default; nothing to download, identical on every machine), or
a tokenised shard on local disk: a `.npy` array or a raw little-endian uint16 file, read
memory-mapped so a large shard costs no memory.

The split (`window_split`): the stream is cut into consecutive windows of seq_len + 1
tokens (inputs and shifted targets); `heldout_windows` of them, chosen by a keyed
permutation of the window indices (`split_key`, which the node derives from its secret
and the campaign id), are the campaign's held-out set; every other window is for
training. Training reads only training windows (each epoch in its own seeded order) and
never a held-out one; every candidate and baseline of a campaign is scored on the same
held-out windows, whatever its experiment's seed. The metric is the held-out loss in nats
per token (and next-token accuracy) over all of them.

The grammar puts facts early in a paragraph and asks about them later ("where is the red
cup? in the attic."), so recalling context matters and not only local statistics.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from loop.tasks.common import Batch, TestSet, canonical_digest, derive_seed

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


_MASK64 = (1 << 64) - 1


def _mix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser, elementwise: a bijection of uint64 with full avalanche."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keyed_order(n: int, key: bytes) -> npt.NDArray[np.int64]:
    """0..n-1 in the order of a keyed pseudo-random score: a permutation that `key` fixes.

    score(i) = mix(mix(i) xor k), k the first 8 bytes of SHA-256(key), mix splitmix64's
    finaliser: plain uint64 arithmetic, so every machine and version gets the same order,
    and all scores differ (a bijection), so there are no ties to break.
    """
    k = np.uint64(int.from_bytes(hashlib.sha256(key).digest()[:8], "big") & _MASK64)
    scores = _mix64(_mix64(np.arange(n, dtype=np.uint64)) ^ k)
    return np.argsort(scores, kind="stable").astype(np.int64)


@dataclass(frozen=True)
class WindowSplit:
    """Window indices of a stream: the held-out ones and the training ones, each ascending."""

    window: int  # tokens per window: seq_len + 1
    heldout: npt.NDArray[np.int64]
    train: npt.NDArray[np.int64]


@functools.lru_cache(maxsize=8)
def window_split(n_windows: int, window: int, n_heldout: int, split_key: str) -> WindowSplit:
    """The held-out windows are the first `n_heldout` of the keyed order of all windows."""
    order = keyed_order(n_windows, f"lm-heldout:{split_key}".encode())
    heldout, train = np.sort(order[:n_heldout]), np.sort(order[n_heldout:])
    heldout.setflags(write=False)
    train.setflags(write=False)
    return WindowSplit(window, heldout, train)


@functools.lru_cache(maxsize=4)
def _epoch_order(n_train: int, seed: int, epoch: int) -> npt.NDArray[np.int64]:
    order = keyed_order(n_train, f"lm-train:{derive_seed(seed, 'lm-train', epoch)}".encode())
    order.setflags(write=False)
    return order


@dataclass(frozen=True)
class LMSpec:
    """Everything that defines the language-modelling task; its digest goes into records.

    `split_key` picks the held-out windows; the node derives it from its secret and the
    campaign id (node.campaign.tasks.split_key). It is left out of `spec_digest` and the
    records, as the held-out seed is: "" (tests, benches) is a fixed public split.
    """

    kind: Literal["lm"] = "lm"
    vocab_size: int = 256
    corpus_seed: int = 0
    corpus_bytes: int = 262_144
    data_path: str | None = None  # a tokenised shard (.npy, or raw uint16) instead of the grammar
    batch_size: int = 32
    seq_len: int = 128
    heldout_windows: int = 200  # held-out windows of seq_len + 1 tokens, the whole test set
    probe_examples: int = 32
    split_key: str = ""

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError("sequence lengths must be positive")
        if self.batch_size < 1 or self.heldout_windows < 1 or self.probe_examples < 1:
            raise ValueError("batch and test sizes must be positive")

    @classmethod
    def quick(cls) -> LMSpec:
        """The demo preset: a smaller corpus and held-out set."""
        return cls(corpus_bytes=131_072, heldout_windows=100)

    @property
    def heldout_tokens(self) -> int:
        """Target tokens in the held-out set."""
        return self.heldout_windows * self.seq_len

    def spec_digest(self) -> str:
        return canonical_digest(dataclasses.replace(self, split_key=""))

    def test_lengths(self) -> tuple[int, ...]:
        return (self.seq_len,)

    def windows_needed(self) -> int:
        """Windows a stream must hold: the held-out split plus one training window."""
        return self.heldout_windows + 1

    def split(self, stream_tokens: int) -> WindowSplit:
        """The split of a stream of `stream_tokens` tokens; ValueError when it cannot hold
        the held-out windows and a training window."""
        window = self.seq_len + 1
        n_windows = stream_tokens // window
        if n_windows < self.windows_needed():
            raise ValueError(
                f"a stream of {stream_tokens:,} tokens holds {n_windows:,} windows of {window} "
                f"tokens; the held-out split needs {self.heldout_windows:,} and training at "
                f"least one more ({self.windows_needed() * window:,} tokens)"
            )
        return window_split(n_windows, window, self.heldout_windows, self.split_key)

    def _read(
        self, stream: npt.NDArray[np.integer], split: WindowSplit, windows: npt.NDArray[np.int64]
    ) -> Batch:
        """Whole windows by index: inputs and shifted targets."""
        index = windows[:, None] * split.window + np.arange(split.window)[None, :]
        tokens = torch.from_numpy(np.asarray(stream[index], dtype=np.int64))
        if tokens.numel() and int(tokens.max()) >= self.vocab_size:
            raise ValueError(
                f"token id {int(tokens.max())} is outside vocab_size {self.vocab_size}"
            )
        return Batch(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())

    def _train_windows(
        self, split: WindowSplit, first: int, count: int, seed: int
    ) -> npt.NDArray[np.int64]:
        """Training windows `first` .. `first + count - 1` of the seeded sequence: each epoch
        is the training windows in an order of its own."""
        n_train = len(split.train)
        positions = np.arange(first, first + count, dtype=np.int64)
        chosen = np.empty(count, dtype=np.int64)
        for epoch in np.unique(positions // n_train):
            here = positions // n_train == epoch
            order = _epoch_order(n_train, seed, int(epoch))
            chosen[here] = split.train[order[positions[here] % n_train]]
        return chosen

    def train_batch(self, step: int, seed: int) -> Batch:
        stream = read_stream(self)
        split = self.split(len(stream))
        windows = self._train_windows(split, step * self.batch_size, self.batch_size, seed)
        return self._read(stream, split, windows)

    def probe_batch(self, seed: int) -> Batch:
        stream = read_stream(self)
        split = self.split(len(stream))
        order = keyed_order(len(split.train), f"lm-probe:{derive_seed(seed, 'lm-probe')}".encode())
        take = order[np.arange(self.probe_examples) % len(order)]
        return self._read(stream, split, split.train[take])

    def test_sets(self, seed: int) -> tuple[TestSet, ...]:
        """The campaign's held-out set: every held-out window, in window order. The same for
        every seed (the split key decides it), so all experiments are scored alike."""
        del seed
        stream = read_stream(self)
        split = self.split(len(stream))
        batch = self._read(stream, split, split.heldout)
        return (TestSet(name=f"heldout_{self.seq_len}", batch=batch),)


def heldout_windows_for(tokens: int, seq_len: int) -> int:
    """Held-out windows holding at least `tokens` target tokens at this context."""
    return max(1, math.ceil(tokens / seq_len))
