"""The Merkle tree against the reference roots, and its proofs against its own checks."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.errors import VerificationError
from attestation.merkle import (
    EMPTY_ROOT,
    Tree,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)

# transparency-dev/merkle testonly/constants.go (copied beside the test data).
LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243",
          "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]  # fmt: skip
ROOTS = [
    EMPTY_ROOT.hex(),
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH written as the spec's recursion, over leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


def _tree(n: int) -> Tree:
    return Tree(leaf_hash(i.to_bytes(4, "big")) for i in range(n))


def test_roots_of_every_prefix_match_the_reference_constants() -> None:
    tree = Tree(leaf_hash(x) for x in LEAVES)
    assert [tree.root(n).hex() for n in range(9)] == ROOTS
    assert tree.root(0) == hashlib.sha256(b"").digest()


@given(st.integers(min_value=0, max_value=300))
def test_the_compact_tree_root_equals_the_spec_recursion(n: int) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    assert Tree(leaves).root() == _reference_root(leaves)


@settings(max_examples=300)
@given(st.data())
def test_every_inclusion_proof_verifies_and_any_flip_is_rejected(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=200))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    tree = _tree(size)
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(index, size, tree.leaf(index), proof, tree.root(size))
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = [*proof]
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(VerificationError):
            verify_inclusion(index, size, tree.leaf(index), bad, tree.root(size))
    other = data.draw(st.integers(min_value=0, max_value=size - 1))
    if other != index:
        with pytest.raises(VerificationError):
            verify_inclusion(other, size, tree.leaf(index), proof, tree.root(size))


@settings(max_examples=300)
@given(st.data())
def test_every_consistency_proof_verifies_and_a_fork_is_rejected(data: st.DataObject) -> None:
    second = data.draw(st.integers(min_value=1, max_value=200))
    first = data.draw(st.integers(min_value=1, max_value=second))
    tree = _tree(second)
    proof = tree.consistency_proof(first, second)
    verify_consistency(first, second, tree.root(first), tree.root(second), proof)
    # A log that rewrote one old entry cannot prove itself consistent with the old root.
    victim = data.draw(st.integers(min_value=0, max_value=first - 1))
    forked = Tree(leaf_hash(b"forged") if i == victim else tree.leaf(i) for i in range(second))
    with pytest.raises(VerificationError):
        verify_consistency(
            first, second, tree.root(first), forked.root(second),
            forked.consistency_proof(first, second),
        )  # fmt: skip
    if proof:
        with pytest.raises(VerificationError):
            verify_consistency(first, second, tree.root(first), tree.root(second), proof[:-1])


def test_proofs_at_a_million_leaves_are_quick_and_short() -> None:
    import time

    tree = Tree()
    h = leaf_hash(b"x")
    for _ in range(1 << 20):
        tree.append(h)
    started = time.perf_counter()
    for index in (0, 12345, (1 << 20) - 1):
        proof = tree.inclusion_proof(index, tree.size)
        assert len(proof) == 20
        assert root_from_inclusion(index, tree.size, h, proof) == tree.root()
    c = tree.consistency_proof(777_777, tree.size)
    verify_consistency(777_777, tree.size, tree.root(777_777), tree.root(), c)
    assert time.perf_counter() - started < 0.5


def test_a_proof_for_a_leaf_outside_the_tree_is_refused() -> None:
    tree = _tree(5)
    with pytest.raises(ValueError):
        tree.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        tree.consistency_proof(3, 6)
    with pytest.raises(VerificationError, match="outside"):
        verify_inclusion(5, 5, tree.leaf(0), [], tree.root())
