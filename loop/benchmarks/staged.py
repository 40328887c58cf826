"""A staged benchmark folder: token ids the evaluator scores, and the manifest naming them.

`asi-node bench stage` writes, into one folder:

- `<benchmark>.npz`, arrays without pickles: `tokens` (every request's context and
  continuation tokens, concatenated), per request `context_len`, `continuation_len`,
  `item` (its row) and `choice_chars` (acc_norm's divisor), and per row `gold` (the
  index of the right request among the row's);
- `benchmarks.json` (`Manifest`): format version, tokenizer ("bytes" or a tokenizer.json
  path, with its sha256), vocab_size, and per benchmark its kind, headline metric,
  counts, longest continuation and request, the sha256 of its .npz and the path and
  sha256 of the file it was staged from.

`load` checks the manifest, every file's sha256 and the arrays' shapes and ranges, and
returns them in memory; the node (at campaign create and run start) and the evaluator
both read a folder through it. It imports no tokenizer: only ids cross this line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pydantic

from loop.errors import LoopError
from loop.tasks.common import file_sha256

FORMAT = "asi-node-benchmarks/1"
MANIFEST_FILE = "benchmarks.json"
ARRAYS = ("tokens", "context_len", "continuation_len", "item", "choice_chars", "gold")
_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class StagedError(LoopError):
    """A staged benchmark folder is missing, altered or malformed. Stage it again with
    `asi-node bench stage` (from the same source files) and point the campaign at it."""


class StagedEntry(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: str = pydantic.Field(pattern=_NAME)
    kind: Literal["multiple_choice", "last_word"]
    headline: Literal["acc", "acc_norm"]
    acc_norm: bool
    file: str = pydantic.Field(pattern=r"^[a-z][a-z0-9_]{0,63}\.npz$")
    sha256: str = pydantic.Field(pattern=r"^[0-9a-f]{64}$")
    source: str
    source_sha256: str = pydantic.Field(pattern=r"^[0-9a-f]{64}$")
    items: int = pydantic.Field(ge=2)
    requests: int = pydantic.Field(ge=2)
    max_continuation_tokens: int = pydantic.Field(ge=1)
    max_request_tokens: int = pydantic.Field(ge=2)


class Manifest(pydantic.BaseModel):
    """`benchmarks.json` of a staged folder."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    format: Literal["asi-node-benchmarks/1"]
    tokenizer: str
    tokenizer_sha256: str | None = pydantic.Field(default=None, pattern=r"^[0-9a-f]{64}$")
    vocab_size: int = pydantic.Field(ge=2)
    benchmarks: list[StagedEntry] = pydantic.Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _distinct(self) -> Manifest:
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names) or len({b.file for b in self.benchmarks}) != len(names):
            raise ValueError("benchmark names and files must be distinct")
        return self


Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Benchmark:
    """One staged benchmark in memory. Request r's tokens are
    tokens[start[r] : start[r] + context_len[r] + continuation_len[r]], continuation last;
    the requests of a row are consecutive, in choice order."""

    entry: StagedEntry
    tokens: Ints
    start: Ints
    context_len: Ints
    continuation_len: Ints
    item: Ints
    choice_chars: Ints
    gold: Ints

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class Staged:
    """A verified staged folder."""

    directory: Path
    manifest: Manifest
    benchmarks: tuple[Benchmark, ...]


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_FILE
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise StagedError(
            f"{directory}: no {MANIFEST_FILE}; stage benchmarks there with `asi-node bench stage`"
        ) from None
    except (OSError, pydantic.ValidationError) as exc:
        raise StagedError(f"{path}: not a staged benchmark manifest: {exc}") from None


def _arrays(path: Path) -> dict[str, Ints]:
    try:
        with np.load(path, allow_pickle=False) as data:
            found = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, KeyError) as exc:
        raise StagedError(f"{path}: not a staged benchmark archive: {exc}") from None
    missing = [name for name in ARRAYS if name not in found]
    if missing or set(found) - set(ARRAYS):
        raise StagedError(f"{path}: holds {sorted(found)}, expected {list(ARRAYS)}")
    for name, array in found.items():
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise StagedError(f"{path}: {name} is not a 1-D integer array")
    return {name: array.astype(np.int64) for name, array in found.items()}


def _benchmark(directory: Path, entry: StagedEntry, vocab_size: int) -> Benchmark:
    path = directory / entry.file
    if not path.is_file():
        raise StagedError(f"{path}: missing")
    if file_sha256(path) != entry.sha256:
        raise StagedError(f"{path}: sha256 does not match {MANIFEST_FILE}")
    a = _arrays(path)
    n = entry.requests
    per_request = ("context_len", "continuation_len", "item", "choice_chars")
    if any(len(a[k]) != n for k in per_request) or len(a["gold"]) != entry.items:
        raise StagedError(f"{path}: array lengths do not match the manifest's counts")
    lengths = a["context_len"] + a["continuation_len"]
    if (
        a["context_len"].min() < 1
        or a["continuation_len"].min() < 1
        or int(lengths.sum()) != len(a["tokens"])
        or int(a["continuation_len"].max()) != entry.max_continuation_tokens
        or int(lengths.max()) != entry.max_request_tokens
    ):
        raise StagedError(f"{path}: request lengths do not add up")
    if len(a["tokens"]) and (a["tokens"].min() < 0 or a["tokens"].max() >= vocab_size):
        raise StagedError(f"{path}: a token id lies outside the vocabulary of {vocab_size}")
    item = a["item"]
    if item[0] != 0 or np.any(np.diff(item) < 0) or np.any(np.diff(item) > 1):
        raise StagedError(f"{path}: requests are not grouped by row in order")
    counts = np.bincount(item, minlength=entry.items)
    if int(item[-1]) != entry.items - 1 or np.any(a["gold"] < 0) or np.any(a["gold"] >= counts):
        raise StagedError(f"{path}: a row's gold index is not one of its requests")
    if entry.kind == "last_word" and np.any(counts != 1):
        raise StagedError(f"{path}: a last-word benchmark has one request per row")
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return Benchmark(
        entry,
        a["tokens"],
        start,
        a["context_len"],
        a["continuation_len"],
        item,
        a["choice_chars"],
        a["gold"],
    )


def load(directory: Path) -> Staged:
    """Read and verify a staged folder; StagedError names what is wrong."""
    manifest = read_manifest(directory)
    benchmarks = tuple(_benchmark(directory, e, manifest.vocab_size) for e in manifest.benchmarks)
    return Staged(directory, manifest, benchmarks)
