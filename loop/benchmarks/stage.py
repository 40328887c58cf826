"""Stage benchmark files for a campaign: requests -> the campaign tokenizer's ids on disk.

`stage` reads each source file in lm-evaluation-harness's row format (loop.benchmarks.
formats), tokenises every request as the harness's causal models do (the context, and
context + continuation as one string whose ids past the context's are the
continuation's), and writes the staged folder that loop.benchmarks.staged reads. It
runs on the node, never in a sandbox, and only on local files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loop.benchmarks.formats import BenchmarkFormatError, Item, read_items, task_format
from loop.benchmarks.staged import (
    FORMAT,
    MANIFEST_FILE,
    Manifest,
    StagedEntry,
)
from loop.tasks.common import file_sha256
from loop.tasks.shards import Encoder, encoder, token_dtype, tokenizer_digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """A benchmark name and the local file of its rows."""

    name: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> Source:
        """NAME=FILE, as the command line takes it."""
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise BenchmarkFormatError(f"{text!r}: give a benchmark as NAME=FILE (piqa=piqa.jsonl)")
        task_format(name)
        return cls(name, Path(path))


def _tokenise(items: Sequence[Item], encode: Encoder) -> dict[str, np.ndarray]:
    tokens: list[int] = []
    context_len: list[int] = []
    continuation_len: list[int] = []
    owner: list[int] = []
    choice_chars: list[int] = []
    for index, item in enumerate(items):
        for request in item.requests:
            context = encode(request.context)
            whole = encode(request.context + request.continuation)
            if not context or len(whole) <= len(context):
                raise BenchmarkFormatError(
                    f"{item.where}: a context or continuation encodes to no tokens"
                )
            tokens += whole
            context_len.append(len(context))
            continuation_len.append(len(whole) - len(context))
            owner.append(index)
            choice_chars.append(request.choice_chars)
    return {
        "tokens": np.asarray(tokens, dtype=np.int64),
        "context_len": np.asarray(context_len, dtype=np.int32),
        "continuation_len": np.asarray(continuation_len, dtype=np.int32),
        "item": np.asarray(owner, dtype=np.int32),
        "choice_chars": np.asarray(choice_chars, dtype=np.int32),
        "gold": np.asarray([item.gold for item in items], dtype=np.int32),
    }


def stage(
    out_dir: Path,
    sources: Sequence[Source],
    *,
    tokenizer: str = "bytes",
    limit: int | None = None,
) -> Manifest:
    """Stage `sources` (the first `limit` rows of each) into `out_dir` with `tokenizer`
    ("bytes" or a tokenizer.json path, the campaign shard's). Every file is read and
    checked before anything is written; BenchmarkFormatError names the first bad row."""
    if not sources:
        raise BenchmarkFormatError("name at least one benchmark as NAME=FILE")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise BenchmarkFormatError(f"each benchmark once: {', '.join(names)}")
    if limit is not None and limit < 2:
        raise BenchmarkFormatError(f"--limit {limit}: a benchmark needs at least 2 rows")
    encode, vocab = encoder(tokenizer)
    dtype = token_dtype(vocab)
    staged: list[tuple[Source, dict[str, np.ndarray]]] = []
    for source in sources:
        items = read_items(source.name, source.path, limit)
        staged.append((source, _tokenise(items, encode)))
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for source, arrays in staged:
        task = task_format(source.name)
        file = out_dir / f"{source.name}.npz"
        arrays["tokens"] = arrays["tokens"].astype(dtype)
        np.savez(file, **arrays)  # type: ignore[arg-type]  # the stub reads ** as allow_pickle
        lengths = arrays["context_len"] + arrays["continuation_len"]
        entries.append(
            StagedEntry(
                name=source.name,
                kind=task.kind.value,
                headline=task.headline,
                acc_norm=task.acc_norm,
                file=file.name,
                sha256=file_sha256(file),
                source=str(source.path.resolve()),
                source_sha256=file_sha256(source.path),
                items=len(arrays["gold"]),
                requests=len(arrays["item"]),
                max_continuation_tokens=int(arrays["continuation_len"].max()),
                max_request_tokens=int(lengths.max()),
            )
        )
    manifest = Manifest(
        format=FORMAT,
        tokenizer=tokenizer,
        tokenizer_sha256=tokenizer_digest(tokenizer),
        vocab_size=vocab,
        benchmarks=entries,
    )
    (out_dir / MANIFEST_FILE).write_text(
        json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
    )
    logger.info("benchmarks staged", extra={"directory": str(out_dir), "benchmarks": names})
    return manifest
