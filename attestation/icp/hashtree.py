"""IC hash trees: parsing from CBOR, root-hash reconstruction, and path lookup.

The shapes, the domain-separated SHA-256 and the lookup rules (found / absent / unknown /
error) follow the Internet Computer interface specification, section "Certification".
An absent answer is a proof that nothing is there; an unknown answer means the part of
the tree that would hold it was pruned away and proves nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from attestation.errors import VerificationError
from attestation.icp.steps import Step

# A real certificate nests a few dozen levels; this bounds the recursion on hostile input.
MAX_DEPTH = 200


def _domain(name: bytes) -> bytes:
    return bytes([len(name)]) + name


_EMPTY = _domain(b"ic-hashtree-empty")
_FORK = _domain(b"ic-hashtree-fork")
_LABELED = _domain(b"ic-hashtree-labeled")
_LEAF = _domain(b"ic-hashtree-leaf")


@dataclass(frozen=True)
class Empty:
    pass


@dataclass(frozen=True)
class Fork:
    left: HashTree
    right: HashTree


@dataclass(frozen=True)
class Labeled:
    label: bytes
    subtree: HashTree


@dataclass(frozen=True)
class Leaf:
    value: bytes


@dataclass(frozen=True)
class Pruned:
    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != 32:
            raise ValueError("a pruned node holds a 32-byte digest")


HashTree = Empty | Fork | Labeled | Leaf | Pruned


class Outcome(Enum):
    FOUND = "found"
    ABSENT = "absent"
    UNKNOWN = "unknown"
    ERROR = "error"


@dataclass(frozen=True)
class Lookup:
    """The answer to a path lookup; `value` is set only when `outcome` is FOUND."""

    outcome: Outcome
    value: bytes | None = None
    subtree: HashTree | None = None


ABSENT = Lookup(Outcome.ABSENT)
UNKNOWN = Lookup(Outcome.UNKNOWN)
ERROR = Lookup(Outcome.ERROR)


def parse_tree(obj: object, depth: int = 0) -> HashTree:
    """Build a HashTree from its decoded CBOR form; raises VerificationError (decode)."""
    if depth > MAX_DEPTH:
        raise VerificationError(Step.DECODE.text, f"hash tree nested deeper than {MAX_DEPTH}")
    if not isinstance(obj, list | tuple) or not obj or type(obj[0]) is not int:
        raise VerificationError(Step.DECODE.text, "hash tree node is not an array with a tag")
    tag, args = obj[0], obj[1:]
    shapes = {0: 0, 1: 2, 2: 2, 3: 1, 4: 1}
    if tag not in shapes:
        raise VerificationError(Step.DECODE.text, f"hash tree node has unknown tag {tag}")
    if len(args) != shapes[tag]:
        raise VerificationError(
            Step.DECODE.text, f"hash tree node {tag} has {len(args)} fields, not {shapes[tag]}"
        )
    if tag == 0:
        return Empty()
    if tag == 1:
        return Fork(parse_tree(args[0], depth + 1), parse_tree(args[1], depth + 1))
    if not isinstance(args[0], bytes):
        raise VerificationError(Step.DECODE.text, f"hash tree node {tag} holds a non-blob")
    if tag == 2:
        return Labeled(args[0], parse_tree(args[1], depth + 1))
    if tag == 3:
        return Leaf(args[0])
    if len(args[0]) != 32:
        raise VerificationError(Step.DECODE.text, "pruned hash tree node is not 32 bytes")
    return Pruned(args[0])


def reconstruct(tree: HashTree) -> bytes:
    """The root hash of a tree (its digest as the interface specification defines it)."""
    if isinstance(tree, Empty):
        return hashlib.sha256(_EMPTY).digest()
    if isinstance(tree, Fork):
        return hashlib.sha256(_FORK + reconstruct(tree.left) + reconstruct(tree.right)).digest()
    if isinstance(tree, Labeled):
        return hashlib.sha256(_LABELED + tree.label + reconstruct(tree.subtree)).digest()
    if isinstance(tree, Leaf):
        return hashlib.sha256(_LEAF + tree.value).digest()
    return tree.digest


def flatten_forks(tree: HashTree) -> list[HashTree]:
    """The non-fork nodes of a fork subtree, left to right (Empty contributes nothing)."""
    out: list[HashTree] = []
    stack: list[HashTree] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Fork):
            stack.append(node.right)
            stack.append(node.left)
        elif not isinstance(node, Empty):
            out.append(node)
    return out


def _find_label(label: bytes, nodes: Sequence[HashTree]) -> Lookup:
    for index, node in enumerate(nodes):
        if not isinstance(node, Labeled):
            continue
        if node.label == label:
            return Lookup(Outcome.FOUND, subtree=node.subtree)
        if node.label > label:
            # Absent only when nothing could hide between: this is the first node, or the
            # node just before it is a labeled node (whose label is then below `label`).
            if index == 0 or isinstance(nodes[index - 1], Labeled):
                return ABSENT
            return UNKNOWN
    if not nodes or isinstance(nodes[-1], Labeled):
        return ABSENT
    return UNKNOWN


def lookup_subtree(path: Sequence[bytes], tree: HashTree) -> Lookup:
    """Follow `path` by labels; FOUND carries the subtree reached."""
    node = tree
    for label in path:
        found = _find_label(label, flatten_forks(node))
        if found.outcome is not Outcome.FOUND or found.subtree is None:
            return found
        node = found.subtree
    return Lookup(Outcome.FOUND, subtree=node)


def lookup(path: Sequence[bytes], tree: HashTree) -> Lookup:
    """Look a path up as the specification does: a leaf value, absent, unknown or error."""
    reached = lookup_subtree(path, tree)
    if reached.outcome is not Outcome.FOUND or reached.subtree is None:
        return reached
    node = reached.subtree
    if isinstance(node, Leaf):
        return Lookup(Outcome.FOUND, value=node.value, subtree=node)
    if isinstance(node, Empty):
        return ABSENT
    if isinstance(node, Pruned):
        return UNKNOWN
    return ERROR


def check_sorted(tree: HashTree, depth: int = 0) -> None:
    """Labels under each fork group must strictly increase: absence proofs rely on it."""
    if depth > MAX_DEPTH:
        raise VerificationError(Step.DECODE.text, f"hash tree nested deeper than {MAX_DEPTH}")
    nodes = flatten_forks(tree) if isinstance(tree, Fork) else [tree]
    last: bytes | None = None
    for node in nodes:
        if isinstance(node, Labeled):
            if last is not None and node.label <= last:
                raise VerificationError(Step.DECODE.text, "hash tree labels are not in order")
            last = node.label
            check_sorted(node.subtree, depth + 1)
