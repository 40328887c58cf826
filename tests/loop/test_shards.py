"""Building tokenised shards: bytes and a real tokenizer.json, manifests, the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loop.tasks import LMSpec
from loop.tasks.shards import (
    ShardError,
    build_shards,
    generated_shard,
    main,
    read_manifest,
    token_dtype,
)


def _texts(tmp_path: Path) -> list[Path]:
    files = []
    for i, text in enumerate(["where is the red cup? in the attic.\n" * 40, "héllo wörld\n" * 30]):
        path = tmp_path / f"part{i}.txt"
        path.write_text(text, encoding="utf-8")
        files.append(path)
    return files


def test_byte_shards_hold_the_utf8_stream_in_order(tmp_path: Path) -> None:
    files = _texts(tmp_path)
    manifest = build_shards(tmp_path / "out", files, shard_tokens=500)
    expected = b"".join(f.read_bytes() for f in files)
    arrays = [np.load(tmp_path / "out" / s.file, mmap_mode="r") for s in manifest.shards]
    assert [a.size for a in arrays[:-1]] == [500] * (len(arrays) - 1)
    assert 0 < arrays[-1].size <= 500
    assert bytes(np.concatenate(arrays).astype(np.uint8)) == expected
    assert manifest.vocab_size == 256 and manifest.dtype == "uint16"
    assert read_manifest(tmp_path / "out") == manifest
    spec = LMSpec(
        data_path=str(tmp_path / "out" / manifest.shards[0].file), seq_len=32, heldout_windows=4
    )
    assert spec.train_batch(0, seed=1).tokens.shape == (32, 32)


def test_shards_from_a_tokenizer_json(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]"])
    files = _texts(tmp_path)
    tokenizer.train([str(f) for f in files], trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    manifest = build_shards(tmp_path / "bpe", files, tokenizer=str(tmp_path / "tokenizer.json"))
    ids = np.load(tmp_path / "bpe" / manifest.shards[0].file)
    assert manifest.vocab_size == tokenizer.get_vocab_size()
    assert int(ids.max()) < manifest.vocab_size
    assert ids.size < sum(len(f.read_bytes()) for f in files) / 2  # merges happened
    assert tokenizer.decode(ids[:9].tolist()).startswith("where is the red cup")


def test_bad_inputs_raise_shard_errors_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="does not exist"):
        build_shards(tmp_path / "o", [tmp_path / "missing.txt"])
    with pytest.raises(ShardError, match="tokenizer file"):
        build_shards(tmp_path / "o", _texts(tmp_path), tokenizer=str(tmp_path / "nope.json"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ShardError, match="no text"):
        build_shards(tmp_path / "o", [empty])
    assert token_dtype(70_000) == np.uint32


def test_command_line_writes_a_generated_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generated", str(tmp_path / "g.npy"), "--bytes", "4096"]) == 0
    assert "4096 tokens" in capsys.readouterr().out
    assert np.load(tmp_path / "g.npy").size == 4096
    assert main(["build", str(tmp_path / "o"), str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    info = generated_shard(tmp_path / "h.npy", 1000, seed=1)
    assert info.tokens == 1000 and info.sha256.startswith("sha256:")
