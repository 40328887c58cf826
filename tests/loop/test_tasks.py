"""MQAR layout invariants, reproducibility of test sets, and the LM corpus and readers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from loop.tasks import IGNORE_INDEX, LMSpec, MQARSpec, derive_seed, generated_corpus


def _check_layout(tokens: torch.Tensor, targets: torch.Tensor, pairs: int, spec: MQARSpec) -> None:
    for row_tokens, row_targets in zip(tokens.tolist(), targets.tolist(), strict=True):
        keys, values = row_tokens[0 : 2 * pairs : 2], row_tokens[1 : 2 * pairs : 2]
        assert len(set(keys)) == pairs and len(set(values)) == pairs
        assert all(spec.key_range[0] <= k <= spec.key_range[1] for k in keys)
        assert all(spec.value_range[0] <= v <= spec.value_range[1] for v in values)
        value_of = dict(zip(keys, values, strict=True))
        assert all(t == IGNORE_INDEX for t in row_targets[: 2 * pairs])
        queried = []
        for token, target in zip(row_tokens[2 * pairs :], row_targets[2 * pairs :], strict=True):
            if target == IGNORE_INDEX:
                assert token == 0  # filler everywhere except the queries
            else:
                assert target == value_of[token]
                queried.append(token)
        assert sorted(queried) == sorted(keys)  # every key queried exactly once


def test_mqar_examples_follow_the_documented_layout() -> None:
    spec = MQARSpec()
    for step in range(2):
        batch = spec.train_batch(step, seed=3)
        seq_len, pairs = spec.train_shapes[step]
        assert batch.tokens.shape == (64, seq_len) and batch.tokens.dtype == torch.long
        _check_layout(batch.tokens, batch.targets, pairs, spec)
    for test_set, (_, pairs) in zip(spec.test_sets(seed=5), spec.test_shapes, strict=True):
        _check_layout(test_set.batch.tokens[:50], test_set.batch.targets[:50], pairs, spec)


def test_mqar_training_batches_alternate_shapes_and_are_fresh() -> None:
    spec = MQARSpec()
    shapes = [tuple(spec.train_batch(step, seed=0).tokens.shape) for step in range(4)]
    assert shapes == [(64, 64), (64, 128), (64, 64), (64, 128)]
    assert not torch.equal(spec.train_batch(0, seed=0).tokens, spec.train_batch(2, seed=0).tokens)
    assert torch.equal(spec.train_batch(7, seed=1).tokens, spec.train_batch(7, seed=1).tokens)


def test_mqar_test_sets_are_fixed_by_their_seed() -> None:
    spec = MQARSpec(test_examples=40)
    first, again, other = spec.test_sets(11), spec.test_sets(11), spec.test_sets(12)
    assert [s.name for s in first] == ["64x8", "128x16", "128x32", "256x64"]
    assert [s.batch.tokens.shape[0] for s in first] == [40] * 4
    for a, b, c in zip(first, again, other, strict=True):
        assert torch.equal(a.batch.tokens, b.batch.tokens)
        assert torch.equal(a.batch.targets, b.batch.targets)
        assert not torch.equal(a.batch.tokens, c.batch.tokens)


def test_mqar_test_sets_do_not_depend_on_the_other_shapes() -> None:
    both = MQARSpec(test_shapes=((64, 8), (128, 16)), test_examples=10).test_sets(4)
    alone = MQARSpec(test_shapes=((128, 16),), test_examples=10).test_sets(4)
    assert torch.equal(both[1].batch.tokens, alone[0].batch.tokens)


def test_spec_digest_is_stable_and_covers_every_field() -> None:
    spec = MQARSpec()
    assert spec.spec_digest() == MQARSpec().spec_digest()
    assert spec.spec_digest().startswith("sha256:") and len(spec.spec_digest()) == 71
    assert MQARSpec(test_examples=499).spec_digest() != spec.spec_digest()
    assert MQARSpec(train_shapes=((64, 8),)).spec_digest() != spec.spec_digest()
    assert LMSpec().spec_digest() != LMSpec(corpus_seed=1).spec_digest()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"test_shapes": ((64, 30),)},  # no room for 30 queries after 60 pair tokens
        {"key_range": (0, 511)},  # 0 is the filler
        {"key_range": (1, 600)},  # overlaps the values
        {"test_shapes": ()},
    ],
)
def test_mqar_spec_rejects_impossible_layouts(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MQARSpec(**kwargs)  # type: ignore[arg-type]


def test_derived_seeds_separate_purposes() -> None:
    assert derive_seed(1, "train", 7) != derive_seed(7, "train", 1)
    assert derive_seed(1, "train", 7) == derive_seed(1, "train", 7)
    assert 0 <= derive_seed(2**40, "x") < 2**63


def test_lm_corpus_is_deterministic_ascii() -> None:
    text = generated_corpus(0, 50_000)
    assert len(text) == 50_000 and text == generated_corpus(0, 50_000)
    assert text != generated_corpus(1, 50_000)
    assert max(text) < 128 and b"where is the" in text
    # Golden digest: a change here means every LM record's corpus changed.
    assert hashlib.sha256(text).hexdigest()[:16] == "4be381cd81012f56"


def test_lm_batches_are_shifted_windows_of_the_stream() -> None:
    spec = LMSpec(corpus_bytes=20_000, seq_len=32, batch_size=8, heldout_windows=5)
    batch = spec.train_batch(0, seed=0)
    assert batch.tokens.shape == (8, 32)
    assert torch.equal(batch.tokens[:, 1:], batch.targets[:, :-1])
    (heldout,) = spec.test_sets(1)
    assert heldout.name == "heldout_32" and heldout.batch.tokens.shape == (5, 32)
    assert torch.equal(heldout.batch.tokens[:, 1:], heldout.batch.targets[:, :-1])


def _window_ids(batch_tokens: torch.Tensor, window: int) -> set[int]:
    """Window indices of an arange stream's windows (token i sits at position i)."""
    starts = batch_tokens[:, 0].tolist()
    assert all(start % window == 0 for start in starts)  # whole windows, never a straddle
    return {start // window for start in starts}


@pytest.mark.parametrize("suffix", [".npy", ".bin"])
def test_lm_training_never_reads_a_held_out_window(tmp_path: Path, suffix: str) -> None:
    stream = np.arange(60_000, dtype=np.uint16)
    path = tmp_path / f"shard{suffix}"
    if suffix == ".npy":
        np.save(path, stream)
    else:
        stream.tofile(path)
    spec = LMSpec(
        vocab_size=60_000, data_path=str(path), seq_len=15, batch_size=64, heldout_windows=300
    )
    window = spec.seq_len + 1
    heldout = _window_ids(spec.test_sets(seed=0)[0].batch.tokens, window)
    assert len(heldout) == 300
    n_train = 60_000 // window - 300
    seen: set[int] = set()
    for step in range(2 * n_train // 64 + 2):  # two epochs and a bit
        seen |= _window_ids(spec.train_batch(step, seed=0).tokens, window)
    assert not seen & heldout
    assert len(seen) == n_train  # every training window is read
    assert not _window_ids(spec.probe_batch(seed=0).tokens, window) & heldout
    # The held-out windows are spread over the stream, not its tail.
    assert min(heldout) < n_train // 4 and max(heldout) > 3 * n_train // 4


def test_lm_held_out_windows_depend_on_the_split_key_alone() -> None:
    spec = LMSpec(corpus_bytes=40_000, seq_len=32, heldout_windows=20, split_key="a" * 64)
    first, again = spec.test_sets(seed=1)[0].batch, spec.test_sets(seed=2)[0].batch
    assert torch.equal(first.tokens, again.tokens)  # every experiment's seed: one set
    other = LMSpec(corpus_bytes=40_000, seq_len=32, heldout_windows=20, split_key="b" * 64)
    assert not torch.equal(first.tokens, other.test_sets(seed=1)[0].batch.tokens)
    # The key is a secret of the node: not part of what records name.
    assert (
        spec.spec_digest()
        == other.spec_digest()
        == LMSpec(corpus_bytes=40_000, seq_len=32, heldout_windows=20).spec_digest()
    )
    # Golden: the split rule is plain integer arithmetic, the same on every machine.
    split = LMSpec(seq_len=15, heldout_windows=4, split_key="k").split(16 * 100)
    assert split.heldout.tolist() == [0, 11, 23, 65]


def test_lm_refuses_a_stream_without_room_for_training() -> None:
    spec = LMSpec(corpus_bytes=33 * 10, seq_len=32, heldout_windows=10)
    with pytest.raises(ValueError, match="held-out split needs 10 and training at least one"):
        spec.train_batch(0, seed=0)
    LMSpec(corpus_bytes=33 * 11, seq_len=32, heldout_windows=10).train_batch(0, seed=0)


def test_lm_rejects_tokens_outside_the_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "shard.npy"
    np.save(path, np.arange(500, dtype=np.uint16))
    with pytest.raises(ValueError, match="outside vocab_size"):
        spec = LMSpec(vocab_size=100, data_path=str(path), seq_len=8, heldout_windows=2)
        spec.train_batch(0, seed=0)
