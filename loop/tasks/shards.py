"""Tokenised data shards for the language-model task: build them, describe them, make a small one.

A shard is a 1-D `.npy` array of token ids (uint16 when the vocabulary fits, else uint32)
that `LMSpec(data_path=...)` reads memory-mapped, so a shard of any size costs no memory.
`build_shards` tokenises text files in order, cuts the stream into shards of at most
`shard_tokens` tokens and writes `manifest.json` beside them (vocabulary size, tokenizer
and its file's sha256, per-shard token count and sha256) so a campaign config can name
a shard and its digest.

Tokenizers: "bytes" (ids 0..255, nothing to download) or the path of a Hugging Face
`tokenizer.json` (needs the `tokenizers` package; nothing is fetched from the network).
`generated_shard` writes the LM task's generated corpus as a byte shard, for tests.

Command line (`python -m loop.tasks.shards` or scripts/build_shards.py):

    build OUT_DIR TEXT_FILE... [--tokenizer bytes|PATH] [--shard-tokens N]
    generated OUT_FILE [--bytes N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from loop.errors import LoopError
from loop.tasks.common import file_sha256
from loop.tasks.lm import generated_corpus

MANIFEST = "manifest.json"
DEFAULT_SHARD_TOKENS = 100_000_000


class ShardError(LoopError):
    """Shards could not be built from the given inputs; the message names the input to fix.

    Fix that input (a path, the tokenizer, the shard size) and build again; nothing
    usable was written.
    """


@dataclass(frozen=True)
class ShardInfo:
    file: str
    tokens: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    tokenizer: str
    vocab_size: int
    dtype: str
    shards: tuple[ShardInfo, ...]
    tokenizer_sha256: str | None = None  # of the tokenizer.json; None for bytes (and old shards)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards)


Encoder = Callable[[str], list[int]]


def _byte_encoder() -> tuple[Encoder, int]:
    return (lambda text: list(text.encode("utf-8"))), 256


def _file_encoder(path: Path) -> tuple[Encoder, int]:
    if not path.is_file():
        raise ShardError(f"tokenizer file {path} does not exist")
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ShardError(
            f"tokenizer {path} needs the `tokenizers` package (pip install tokenizers)"
        ) from exc
    tokenizer = Tokenizer.from_file(str(path))

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False).ids)

    return encode, int(tokenizer.get_vocab_size(with_added_tokens=True))


def encoder(tokenizer: str) -> tuple[Encoder, int]:
    """The encoder and vocabulary size of "bytes" or a tokenizer.json path."""
    return _byte_encoder() if tokenizer == "bytes" else _file_encoder(Path(tokenizer))


def tokenizer_digest(tokenizer: str) -> str | None:
    """The sha256 (hex) of a tokenizer.json, which names it wherever it is copied; None for
    "bytes"."""
    if tokenizer == "bytes":
        return None
    return file_sha256(Path(tokenizer))


def token_dtype(vocab_size: int) -> np.dtype[np.unsignedinteger]:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _write(path: Path, tokens: npt.NDArray[np.unsignedinteger]) -> ShardInfo:
    np.save(path, tokens)
    return ShardInfo(file=path.name, tokens=int(tokens.size), sha256="sha256:" + file_sha256(path))


def _texts(files: Sequence[Path], chunk_chars: int = 1 << 20) -> Iterable[str]:
    for file in files:
        if not file.is_file():
            raise ShardError(f"text file {file} does not exist")
        with file.open("r", encoding="utf-8", errors="replace") as handle:
            while block := handle.read(chunk_chars):
                yield block


def build_shards(
    out_dir: Path,
    text_files: Sequence[Path],
    *,
    tokenizer: str = "bytes",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
) -> Manifest:
    """Tokenise `text_files` in order into shard_00000.npy, ... and manifest.json in out_dir."""
    if shard_tokens < 2:
        raise ShardError(f"shard_tokens={shard_tokens} must be at least 2")
    if not text_files:
        raise ShardError("give at least one text file to tokenise")
    encode, vocab = encoder(tokenizer)
    dtype = token_dtype(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards: list[ShardInfo] = []
    pending: list[npt.NDArray[np.unsignedinteger]] = []
    pending_size = 0

    def flush(limit: int) -> None:
        nonlocal pending, pending_size
        stream = np.concatenate(pending) if pending else np.zeros(0, dtype=dtype)
        while stream.size >= limit and stream.size > 0:
            head, stream = stream[:shard_tokens], stream[shard_tokens:]
            shards.append(_write(out_dir / f"shard_{len(shards):05d}.npy", head))
        pending, pending_size = ([stream] if stream.size else []), int(stream.size)

    for text in _texts(text_files):
        pending.append(np.asarray(encode(text), dtype=dtype))
        pending_size += pending[-1].size
        if pending_size >= shard_tokens:
            flush(shard_tokens)
    flush(1)  # the rest, as a last shorter shard
    if not shards:
        raise ShardError("the text files hold no text to tokenise")
    manifest = Manifest(tokenizer, vocab, dtype.name, tuple(shards), tokenizer_digest(tokenizer))
    (out_dir / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def read_manifest(out_dir: Path) -> Manifest:
    data = json.loads((out_dir / MANIFEST).read_text())
    shards = tuple(ShardInfo(**s) for s in data.pop("shards"))
    return Manifest(shards=shards, **data)


def generated_shard(path: Path, n_tokens: int = 262_144, seed: int = 0) -> ShardInfo:
    """The LM task's generated corpus as a uint16 byte shard (vocab 256), for tests."""
    corpus = np.frombuffer(generated_corpus(seed, n_tokens), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write(path, corpus.astype(np.uint16))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loop.tasks.shards", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="tokenise text files into .npy shards + manifest.json")
    build.add_argument("out_dir", type=Path)
    build.add_argument("text_files", type=Path, nargs="+")
    build.add_argument("--tokenizer", default="bytes", help='"bytes" or a tokenizer.json path')
    build.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    gen = sub.add_parser("generated", help="write the generated corpus as one byte shard")
    gen.add_argument("out_file", type=Path)
    gen.add_argument("--bytes", type=int, default=262_144)
    gen.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            manifest = build_shards(
                args.out_dir,
                args.text_files,
                tokenizer=args.tokenizer,
                shard_tokens=args.shard_tokens,
            )
            print(
                f"{len(manifest.shards)} shard(s), {manifest.tokens} tokens, "
                f"vocab {manifest.vocab_size} ({manifest.dtype}) in {args.out_dir}"
            )
        else:
            info = generated_shard(args.out_file, args.bytes, args.seed)
            print(f"{info.tokens} tokens in {args.out_file} ({info.sha256})")
    except ShardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
