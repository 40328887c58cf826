"""Hash-tree lookups follow the specification; parsers never crash on hostile bytes."""

from __future__ import annotations

import random

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.errors import VerificationError
from attestation.icp import parse_certificate
from attestation.icp.certificate import decode_leb128
from attestation.icp.hashtree import (
    Empty,
    Fork,
    HashTree,
    Labeled,
    Leaf,
    Outcome,
    Pruned,
    check_sorted,
    flatten_forks,
    lookup,
    parse_tree,
    reconstruct,
)
from attestation.icp.principal import from_text, to_text
from attestation.icp.steps import Step

PRUNED = Pruned(bytes(32))


def test_lookup_found_absent_unknown_and_error() -> None:
    tree = Fork(Labeled(b"b", Leaf(b"1")), Fork(PRUNED, Labeled(b"d", Fork(Empty(), Empty()))))
    assert lookup([b"b"], tree).value == b"1"
    assert lookup([b"a"], tree).outcome is Outcome.ABSENT  # before the first label
    assert lookup([b"c"], tree).outcome is Outcome.UNKNOWN  # a pruned node sits between b and d
    assert lookup([b"e"], tree).outcome is Outcome.ABSENT  # after the last label
    assert lookup([b"d"], tree).outcome is Outcome.ERROR  # a fork where a value was expected
    assert lookup([b"d", b"x"], tree).outcome is Outcome.ABSENT  # below d nothing is there
    assert lookup([], PRUNED).outcome is Outcome.UNKNOWN
    assert lookup([], Empty()).outcome is Outcome.ABSENT


def test_absence_between_adjacent_labels_is_proven() -> None:
    tree = Fork(Labeled(b"a", Leaf(b"")), Labeled(b"c", Leaf(b"")))
    assert lookup([b"b"], tree).outcome is Outcome.ABSENT


def test_reconstruction_matches_the_specification_example() -> None:
    # The interface specification's example tree and its published root hash.
    tree = Fork(
        Fork(
            Labeled(
                b"a",
                Fork(Fork(Labeled(b"x", Leaf(b"hello")), Empty()), Labeled(b"y", Leaf(b"world"))),
            ),
            Labeled(b"b", Leaf(b"good")),
        ),
        Fork(Labeled(b"c", Empty()), Labeled(b"d", Leaf(b"morning"))),
    )
    assert reconstruct(tree).hex() == (
        "eb5c5b2195e62d996b84c9bcc8259d19a83786a2f59e0878cec84c811f669aa0"
    )


def test_unsorted_labels_are_rejected() -> None:
    with pytest.raises(VerificationError, match="not in order"):
        check_sorted(Fork(Labeled(b"b", Empty()), Labeled(b"a", Empty())))


@pytest.mark.parametrize(
    "obj",
    [[], [9], [1, [0]], [2, "text", [0]], [4, b"short"], [3], "x", [0, 1], [True, [0], [0]]],
)
def test_malformed_tree_nodes_are_decode_errors(obj: object) -> None:
    with pytest.raises(VerificationError) as info:
        parse_tree(obj)
    assert info.value.step == Step.DECODE.text


def test_deep_nesting_is_refused_not_overflowed() -> None:
    obj: object = [0]
    for _ in range(5000):
        obj = [2, b"x", obj]
    with pytest.raises(VerificationError, match="deeper"):
        parse_tree(obj)


def test_leb128_time_must_fill_its_leaf() -> None:
    assert decode_leb128(b"\xe5\x8e\x26", "t", Step.FRESHNESS) == 624485
    for bad in (b"", b"\x80", b"\x01\x01", b"\xff" * 11):
        with pytest.raises(VerificationError):
            decode_leb128(bad, "t", Step.FRESHNESS)


def test_principal_text_round_trips_and_rejects_typos() -> None:
    raw = from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
    assert raw.hex() == "00000000000000020101"
    assert to_text(raw) == "ryjl3-tyaaa-aaaaa-aaaba-cai"
    with pytest.raises(ValueError, match="checksum"):
        from_text("ryjl3-tyaaa-aaaaa-aaaba-caa")


@settings(max_examples=120, deadline=None)
@given(st.binary(max_size=300))
def test_parser_never_crashes_on_random_bytes(data: bytes) -> None:
    try:
        parse_certificate(data)
    except VerificationError as exc:
        assert exc.step == Step.DECODE.text


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.binary(max_size=40)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)
tree_like = st.recursive(
    st.sampled_from([[0], [3, b"v"], [4, bytes(32)], [4, b"x"], [7]]),
    lambda inner: (
        st.tuples(st.sampled_from([1, 2]), inner, inner).map(
            lambda t: [t[0], t[1], t[2]] if t[0] == 1 else [2, b"l", t[2]]
        )
        | st.lists(inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=120, deadline=None)
@given(tree=tree_like | cbor_values, signature=cbor_values, delegation=cbor_values)
def test_parser_never_crashes_on_structured_cbor(
    tree: object, signature: object, delegation: object
) -> None:
    data = cbor2.dumps({"tree": tree, "signature": signature, "delegation": delegation})
    try:
        cert = parse_certificate(data)
    except VerificationError as exc:
        assert exc.step == Step.DECODE.text
    else:
        assert isinstance(cert.signature, bytes)


def _build(entries: dict[bytes, bytes]) -> HashTree:
    """A well-formed tree: sorted labels under a balanced fork, a leaf under each."""
    items = [Labeled(k, Leaf(v)) for k, v in sorted(entries.items())]

    def forks(part: list[HashTree]) -> HashTree:
        if not part:
            return Empty()
        if len(part) == 1:
            return part[0]
        mid = len(part) // 2
        return Fork(forks(part[:mid]), forks(part[mid:]))

    return forks(list(items))


def _prune(tree: HashTree, keep: set[bytes], rng: random.Random) -> HashTree:
    """Prune, at random, subtrees that hold no kept label."""
    if isinstance(tree, Fork):
        labels = {n.label for n in flatten_forks(tree) if isinstance(n, Labeled)}
        if not labels & keep and rng.random() < 0.3:
            return Pruned(reconstruct(tree))
        return Fork(_prune(tree.left, keep, rng), _prune(tree.right, keep, rng))
    if isinstance(tree, Labeled) and tree.label not in keep and rng.random() < 0.5:
        return Pruned(reconstruct(tree))
    return tree


@settings(max_examples=150, deadline=None)
@given(
    entries=st.dictionaries(st.binary(min_size=1, max_size=3), st.binary(max_size=4), max_size=12),
    keep=st.sets(st.binary(min_size=1, max_size=3), max_size=4),
    rng=st.randoms(use_true_random=False),
    data=st.data(),
)
def test_pruning_keeps_the_root_and_lookups_never_lie(
    entries: dict[bytes, bytes], keep: set[bytes], rng: random.Random, data: st.DataObject
) -> None:
    probes = st.binary(min_size=1, max_size=3)
    if entries:  # mostly probe labels that exist, so that a false absence would show
        probes = st.sampled_from(sorted(entries)) | probes
    probe = data.draw(probes)
    full = _build(entries)
    witness = _prune(full, keep, rng)
    assert reconstruct(witness) == reconstruct(full)
    found = lookup([probe], witness)
    if found.outcome is Outcome.FOUND:
        assert entries[probe] == found.value
    elif found.outcome is Outcome.ABSENT:
        assert probe not in entries  # an absence proof must be sound
    if probe in keep and probe in entries:
        assert found.value == entries[probe]  # what the witness kept stays provable
