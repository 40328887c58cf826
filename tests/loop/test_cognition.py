"""The cognition base: shipped entries, BM25 retrieval, the user's own entries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from loop.cognition import (
    BM25,
    CognitionBase,
    CognitionError,
    Entry,
    append_user_entry,
    read_user_entries,
    shipped_entries,
    similarity,
    tokens,
)

TOPICS = {"linear attention", "state space", "gating", "delta rule", "convolution", "routing"}
METRIC_WORDS = re.compile(
    r"acc_|mean_acc|state_size|params|time_ratio|fitness|too_slow|nan_divergence|"
    r"future_leak|hopeless|recurrent_mismatch|state_growth|oom|param_budget"
)


def test_ships_at_least_forty_entries_covering_every_topic() -> None:
    entries = shipped_entries()
    assert len(entries) >= 40
    assert {e.topic for e in entries} == TOPICS
    assert len({e.source for e in entries}) == len(entries)
    assert all(re.fullmatch(r"arXiv:\d{4}\.\d{4,5}", e.source) for e in entries)


def test_every_entry_states_its_symptoms_in_our_metric_vocabulary() -> None:
    missing = [e.source for e in shipped_entries() if not METRIC_WORDS.search(e.symptoms)]
    assert missing == []


def test_search_finds_the_delta_rule_for_interference_on_many_pairs() -> None:
    base = CognitionBase.load()
    found = base.search("overwrite interference delta rule acc_256x64", k=3)
    assert any(e.topic == "delta rule" for e in found)
    assert base.search("future_leak routing over the sequence", k=1)[0].topic == "routing"


def test_bm25_ranks_the_matching_document_first_and_ignores_unrelated_ones() -> None:
    index = BM25(["gated decay forget", "short convolution kernel", "router experts"])
    assert index.top("convolution kernels", 3) == [
        (1, pytest.approx(index.scores("convolution kernels")[1]))
    ]
    assert index.top("nothing matches", 3) == []


def test_tokens_keep_test_set_names_and_trim_plurals() -> None:
    assert tokens("The gates on 128x32 kernels") == ["gate", "128x32", "kernel"]


def test_similarity_is_one_for_the_same_words_and_low_for_different_ones() -> None:
    assert similarity("gate the state", "the state gate") == pytest.approx(1.0)
    assert similarity("gate the state", "convolution kernel") == 0.0


def test_user_entries_round_trip_and_join_the_search(tmp_path: Path) -> None:
    path = tmp_path / "cognition.jsonl"
    entry = Entry("arXiv:9999.00001", "Zebra mixer", "gating", "stripes", "acc_64x8 low", "paint")
    append_user_entry(path, entry)
    assert read_user_entries(path) == [entry]
    base = CognitionBase.load(path)
    assert base.search("zebra stripes", k=1) == [entry]


def test_a_malformed_user_entry_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "cognition.jsonl"
    path.write_text(json.dumps({"source": "x"}) + "\n")
    with pytest.raises(CognitionError, match=r"cognition.jsonl:1: missing or empty field"):
        read_user_entries(path)
