"""RFC 6962 / RFC 9162 Merkle trees: hashing, a compact tree, proofs and their checks.

The tree keeps every perfect subtree hash, level by level, in one bytearray per level
(about 64 bytes per leaf in all), so any subtree hash, root, inclusion or consistency
proof costs O(log n) lookups and hashes, at a million leaves as at ten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from attestation.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """An append-only Merkle tree over leaf hashes."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> int:
        """Add a leaf hash; return its index."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes, got {len(leaf)}")
        index = self._size
        self._levels[0] += leaf
        self._size += 1
        level, i, h = 0, index, leaf
        while i & 1:
            left = self._perfect(level, i - 1)
            h = node_hash(left, h)
            level += 1
            i >>= 1
            if len(self._levels) == level:
                self._levels.append(bytearray())
            self._levels[level] += h
        return index

    def leaf(self, index: int) -> bytes:
        self._check_size(index + 1)
        return self._perfect(0, index)

    def _perfect(self, level: int, i: int) -> bytes:
        return bytes(self._levels[level][i * HASH_SIZE : (i + 1) * HASH_SIZE])

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise ValueError(f"the tree has {self._size} leaves; asked about size {size}")

    def subtree_hash(self, start: int, end: int) -> bytes:
        """MTH of the leaves [start, end); start must sit on an RFC 6962 subtree boundary."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            return self._perfect(n.bit_length() - 1, start // n)
        k = _split(n)
        return node_hash(self.subtree_hash(start, start + k), self.subtree_hash(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        size = self._size if size is None else size
        self._check_size(size)
        return self.subtree_hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:size])."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf {index} is not in a tree of size {size}")
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self.subtree_hash(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree_hash(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 6962 PROOF(first, D[0:second]); empty when first is 0 or equals second."""
        self._check_size(second)
        if not 0 <= first <= second:
            raise ValueError(f"no consistency proof from size {first} to {second}")
        if first in (0, second):
            return []
        proof: list[bytes] = []
        start, end, m, known = 0, second, first, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self.subtree_hash(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree_hash(start, start + k))
                start, m, known = start + k, m - k, False
        if not known:
            proof.append(self.subtree_hash(start, end))
        proof.reverse()
        return proof


def _check_hashes(step: str, hashes: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise VerificationError(step, f"{what} {i} has {len(h)} bytes, not {HASH_SIZE}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 2.1.3.2); raises VerificationError
    when the proof cannot belong to a tree of that size."""
    step = "inclusion proof"
    if not 0 <= index < size:
        raise VerificationError(step, f"leaf index {index} is outside a tree of size {size}")
    _check_hashes(step, [leaf, *proof], "hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError(step, "the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(step, "the proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise VerificationError unless `proof` shows leaf `index` in the tree (size, root)."""
    _check_hashes("inclusion proof", [root], "root")
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise VerificationError(
            "inclusion proof", f"leaf {index} does not lead to the root of the tree of size {size}"
        )


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise VerificationError unless the tree (second, second_root) extends
    (first, first_root) per RFC 9162 2.1.4.2."""
    step = "consistency proof"
    _check_hashes(step, proof, "proof hash")
    if not 0 <= first <= second:
        raise VerificationError(step, f"size {first} cannot grow into size {second}")
    if first == 0:
        # Every tree extends the empty one: such a "proof" proves nothing, so it is refused.
        raise VerificationError(step, "a consistency proof from the empty tree proves nothing")
    if first == second:
        if proof:
            raise VerificationError(step, "equal sizes need an empty proof")
        if first_root != second_root:
            raise VerificationError(step, f"two different roots for the same size {first}")
        return
    if not proof:
        raise VerificationError(step, "the proof is empty")
    _check_hashes(step, [first_root, second_root], "root")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(step, "the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(step, "the proof is shorter than the tree is deep")
    if fr != first_root:
        raise VerificationError(step, f"the proof does not lead to the root of size {first}")
    if sr != second_root:
        raise VerificationError(step, f"the proof does not lead to the root of size {second}")


def verify_subtree_inclusion(
    index: int, start: int, end: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise VerificationError unless `proof` shows leaf `index` in the subtree [start, end)
    with hash `root`. A subtree is a Merkle tree of its own leaves, valid only where
    start is a multiple of the smallest power of two >= end - start."""
    step = "subtree inclusion proof"
    n = end - start
    if n <= 0 or start % (1 << (n - 1).bit_length()) != 0:
        raise VerificationError(step, f"[{start}, {end}) is not a subtree")
    if not start <= index < end:
        raise VerificationError(step, f"leaf {index} is outside [{start}, {end})")
    verify_inclusion(index - start, n, leaf, proof, root)


def verify_subtree_consistency(
    start: int, end: int, size: int, proof: Sequence[bytes], subtree: bytes, root: bytes
) -> None:
    """Raise VerificationError unless `proof` shows the subtree [start, end) with hash
    `subtree` inside the tree (size, root): the procedure of the Merkle Tree
    Certificates draft ("verifying a subtree consistency proof")."""
    step = "subtree consistency proof"
    n = end - start
    _check_hashes(step, proof, "proof hash")
    if n == 0 and 0 <= start <= size:
        # The empty subtree sits in every tree; its hash must be the empty root.
        if proof or subtree != EMPTY_ROOT:
            raise VerificationError(step, "an empty subtree has the empty hash and no proof")
        return
    if n <= 0 or start % (1 << (n - 1).bit_length()) != 0 or end > size:
        raise VerificationError(step, f"[{start}, {end}) is not a subtree of size {size}")
    fn, sn, tn = start, end - 1, size - 1
    # Climb the levels that need no proof hash: all of them while the subtree's right
    # edge is the tree's, else only while the subtree's last node is a right child.
    while fn != sn and (sn == tn or sn & 1):
        fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    if fn == sn:
        fr = sr = subtree
        rest = list(proof)
    else:
        if not proof:
            raise VerificationError(step, "the proof is empty")
        fr = sr = proof[0]
        rest = list(proof[1:])
    for c in rest:
        if tn == 0:
            raise VerificationError(step, "the proof is longer than the tree is deep")
        if sn & 1 or sn == tn:
            if fn < sn:
                fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not sn & 1 and sn != 0:
                fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    if tn != 0:
        raise VerificationError(step, "the proof is shorter than the tree is deep")
    if fr != subtree:
        raise VerificationError(step, "the proof does not lead to the subtree hash")
    if sr != root:
        raise VerificationError(step, f"the proof does not lead to the root of size {size}")


class CompactRange:
    """The right edge of an append-only tree: one perfect subtree hash per set bit of its
    size, largest first. It takes leaves and gives the root at the current size in
    O(log n) memory and hashes, so a verifier can stream a log of any length."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError(f"a compact range of size {size} holds {size.bit_count()} hashes")
        _check_hashes("compact range", hashes, "hash")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash: merge the perfect subtrees it completes."""
        hashes, size, h = self._hashes, self._size, leaf
        while size & 1:
            h = node_hash(hashes.pop(), h)
            size >>= 1
        hashes.append(h)
        self._size += 1

    def root(self) -> bytes:
        """MTH of the leaves so far: the subtree hashes folded from the right."""
        if not self._hashes:
            return EMPTY_ROOT
        it = reversed(self._hashes)
        h = next(it)
        for left in it:
            h = node_hash(left, h)
        return h
