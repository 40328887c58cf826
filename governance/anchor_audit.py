"""Audit of a log's on-chain anchors: every checkpoint anchored, with its root, by an approved key.

A node anchors its log under an id bound to its own address (`chain_log_id`), so the
anchors under one log name by different accounts are different logs: the audit checks
the log of an approved node, and anchors of that name by other accounts (a squatter's, or
another node's) are set aside. Pin the log's own node with `approved_nodes` (its address
is in the binding document of the node's attestation) for the strictest check.

`verify_anchors` returns the verified anchors or raises `VerificationError` naming the
failing step; `verify_on` adds the controller's stored roots; `audit --rpc` calls
`verify_with_allow_list`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from eth_utils.address import to_checksum_address

from governance.chain import AnchorEvent, Chain, Controller
from governance.errors import ChainError, VerificationError


@dataclass(frozen=True)
class VerifiedAnchor:
    """A checkpoint whose root the chain holds, anchored by an approved node."""

    tree_size: int
    root: bytes
    node: str
    block_number: int
    tx_hash: bytes


def verify_anchors(
    anchors: Sequence[AnchorEvent],
    log_id: bytes,
    checkpoints: Sequence[tuple[int, bytes]],
    approved_nodes: Collection[str],
) -> list[VerifiedAnchor]:
    """Check the chain's `anchors` of log `log_id` (under every account) against the log's
    `checkpoints`.

    1. The policy is not empty: at least one approved node and one checkpoint.
    2. An approved node anchored this log (anchors by other accounts are their own logs).
    3. In that node's log every checkpoint (tree size, root) has an anchor of that size...
    4. ...with the same root.

    When several approved nodes anchored under this name, the log passes if one node's
    log holds every checkpoint; otherwise the error is that of the fullest one.
    """
    if not approved_nodes:
        raise VerificationError("step 1 (policy): no approved node addresses were given")
    if not checkpoints:
        raise VerificationError("step 1 (policy): no checkpoints to check")
    try:
        approved = {str(to_checksum_address(a)) for a in approved_nodes}
    except ValueError as exc:
        raise VerificationError(
            f"step 1 (policy): an approved node is not an address: {exc}"
        ) from None
    logs: dict[str, dict[int, AnchorEvent]] = {}
    others: set[str] = set()
    for anchor in anchors:
        if anchor.log_id != log_id:
            raise VerificationError(
                f"step 2 (anchors): an anchor of log 0x{anchor.log_id.hex()} was returned "
                f"for log 0x{log_id.hex()}"
            )
        node = str(to_checksum_address(anchor.node))
        if node in approved:
            logs.setdefault(node, {})[anchor.tree_size] = anchor
        else:
            others.add(node)
    if not logs and others:
        raise VerificationError(
            f"step 2 (anchor key): log 0x{log_id.hex()} was anchored only by "
            f"{', '.join(sorted(others))}, which is not an approved node key"
        )
    failures: list[VerificationError] = []
    for node in sorted(logs, key=lambda n: (-len(logs[n]), n)):
        try:
            return _verify_log(logs[node], checkpoints)
        except VerificationError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    return _verify_log({}, checkpoints)  # nothing anchored: names the first checkpoint


def _verify_log(
    by_size: Mapping[int, AnchorEvent], checkpoints: Sequence[tuple[int, bytes]]
) -> list[VerifiedAnchor]:
    """Steps 3 and 4 over one node's log."""
    verified = []
    for tree_size, root in sorted(checkpoints):
        found = by_size.get(tree_size)
        if found is None:
            raise VerificationError(
                f"step 3 (missing anchor): checkpoint of size {tree_size} "
                f"(root 0x{root.hex()}) has no anchor on the chain"
            )
        if found.root != root:
            raise VerificationError(
                f"step 4 (wrong root): checkpoint of size {tree_size} has root 0x{root.hex()} "
                f"but the chain anchored 0x{found.root.hex()} (tx 0x{found.tx_hash.hex()})"
            )
        verified.append(
            VerifiedAnchor(
                tree_size=tree_size,
                root=root,
                node=found.node,
                block_number=found.block_number,
                tx_hash=found.tx_hash,
            )
        )
    return verified


def verify_log_anchors(
    rpc_url: str,
    controller_address: str,
    log_id: bytes,
    checkpoints: Sequence[tuple[int, bytes]],
    approved_nodes: Collection[str],
    *,
    expected_chain_id: int | None = None,
    from_block: int = 0,
) -> list[VerifiedAnchor]:
    """Connect to `rpc_url`, check the controller's code, then `verify_anchors`.

    A chain that cannot be read fails closed too: VerificationError at step 0.
    """
    try:
        chain = Chain.connect(rpc_url, expected_chain_id=expected_chain_id)
        return verify_on(
            Controller(chain, controller_address),
            log_id,
            checkpoints,
            approved_nodes,
            from_block=from_block,
        )
    except ChainError as exc:
        raise VerificationError(f"step 0 (chain): {exc}") from exc


def verify_on(
    controller: Controller,
    log_id: bytes,
    checkpoints: Sequence[tuple[int, bytes]],
    approved_nodes: Collection[str],
    *,
    from_block: int = 0,
) -> list[VerifiedAnchor]:
    """`verify_anchors` over the events an already-open controller holds, then:

    5. The controller stores the same root for each verified size of that node's log
       (`anchoredRoot`: its own record, which later anchors chain onto).
    """
    try:
        anchors = controller.anchors(log_id, from_block=from_block)
    except ChainError as exc:
        raise VerificationError(f"step 0 (chain): reading the anchors failed: {exc}") from exc
    verified = verify_anchors(anchors, log_id, checkpoints, approved_nodes)
    for anchor in verified:
        try:
            stored = controller.anchored_root(log_id, anchor.node, anchor.tree_size)
        except ChainError as exc:
            raise VerificationError(
                f"step 0 (chain): reading the stored roots failed: {exc}"
            ) from exc
        if stored != anchor.root:
            shown = "none" if stored is None else f"0x{stored.hex()}"
            raise VerificationError(
                f"step 5 (stored root): the controller stores {shown} for size "
                f"{anchor.tree_size} of {anchor.node}'s log, but its anchor event says "
                f"0x{anchor.root.hex()}"
            )
    return verified


def verify_with_allow_list(
    controller: Controller,
    log_id: bytes,
    checkpoints: Sequence[tuple[int, bytes]],
    approved_nodes: Collection[str] | None = None,
) -> tuple[list[VerifiedAnchor], set[str]]:
    """`verify_on`, with the controller's own node allow-list when none is given.

    Returns the verified anchors and the approved set that was applied. An empty
    allow-list on the chain fails closed (step 1), like an empty one given.
    """
    if approved_nodes is None:
        try:
            approved: set[str] = set(controller.approved_nodes())
        except ChainError as exc:
            raise VerificationError(
                f"step 0 (chain): reading the allow-list failed: {exc}"
            ) from exc
    else:
        approved = set(approved_nodes)
    return verify_on(controller, log_id, checkpoints, approved), approved
