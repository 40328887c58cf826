"""Audit of a log's on-chain anchors: every checkpoint anchored, with its root, by an approved key.

A node anchors its log under an id bound to its own address (`chain_log_id`), so the
anchors under one log name by different accounts are different logs: the audit checks
the log of an approved node, and anchors of that name by other accounts (a squatter's, or
another node's) are set aside. Pin the log's own node with `approved_nodes` (its address
is in the binding document of the node's attestation) for the strictest check.

`verify_anchors` returns the verified anchors or raises the trust package's
`VerificationError` naming the failing step ("step 3 (missing anchor)"); `verify_on`
adds the controller's stored roots and checks every anchor of the node's log against
the log's entries; `audit --rpc` calls `verify_with_allow_list`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from eth_utils.address import to_checksum_address

from attestation.errors import VerificationError
from attestation.merkle import Tree
from governance.chain import AnchorEvent, Chain, Controller
from governance.errors import ChainError


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
        raise VerificationError("step 1 (policy)", "no approved node addresses were given")
    if not checkpoints:
        raise VerificationError("step 1 (policy)", "no checkpoints to check")
    try:
        approved = {str(to_checksum_address(a)) for a in approved_nodes}
    except ValueError as exc:
        raise VerificationError(
            "step 1 (policy)", f"an approved node is not an address: {exc}"
        ) from None
    logs: dict[str, dict[int, AnchorEvent]] = {}
    others: set[str] = set()
    for anchor in anchors:
        if anchor.log_id != log_id:
            raise VerificationError(
                "step 2 (anchors)",
                f"an anchor of log 0x{anchor.log_id.hex()} was returned for log 0x{log_id.hex()}",
            )
        node = str(to_checksum_address(anchor.node))
        if node in approved:
            logs.setdefault(node, {})[anchor.tree_size] = anchor
        else:
            others.add(node)
    if not logs and others:
        raise VerificationError(
            "step 2 (anchor key)",
            f"log 0x{log_id.hex()} was anchored only by "
            f"{', '.join(sorted(others))}, which is not an approved node key",
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
                "step 3 (missing anchor)",
                f"checkpoint of size {tree_size} (root 0x{root.hex()}) has no anchor on the chain",
            )
        if found.root != root:
            raise VerificationError(
                "step 4 (wrong root)",
                f"checkpoint of size {tree_size} has root 0x{root.hex()} "
                f"but the chain anchored 0x{found.root.hex()} (tx 0x{found.tx_hash.hex()})",
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
        raise VerificationError("step 0 (chain)", str(exc)) from exc


def verify_on(
    controller: Controller,
    log_id: bytes,
    checkpoints: Sequence[tuple[int, bytes]],
    approved_nodes: Collection[str],
    *,
    from_block: int = 0,
    leaves: Sequence[bytes] | None = None,
) -> list[VerifiedAnchor]:
    """`verify_anchors` over the events an already-open controller holds, then:

    5. The controller stores the same root for each verified size of that node's log
       (`anchoredRoot`: its own record, which later anchors chain onto).
    6. Every anchor of that node's log is accounted for: the controller's last anchor of
       it (`logHead`) is the last anchor event returned (an endpoint that filtered events
       fails here), and, given the log's entries as `leaves` (their RFC 6962 leaf
       hashes), each anchored root is the root of the first `tree_size` entries: a log
       rewritten after it was anchored, whose bundle carries only the checkpoints that
       still match, fails, as does a bundle that stops short of an anchored size.
    """
    try:
        head = controller.chain.head()
        anchors = controller.anchors(log_id, from_block=from_block, to_block=head)
    except ChainError as exc:
        raise VerificationError("step 0 (chain)", f"reading the anchors failed: {exc}") from exc
    verified = verify_anchors(anchors, log_id, checkpoints, approved_nodes)
    for anchor in verified:
        try:
            stored = controller.anchored_root(log_id, anchor.node, anchor.tree_size)
        except ChainError as exc:
            raise VerificationError(
                "step 0 (chain)", f"reading the stored roots failed: {exc}"
            ) from exc
        if stored != anchor.root:
            shown = "none" if stored is None else f"0x{stored.hex()}"
            raise VerificationError(
                "step 5 (stored root)",
                f"the controller stores {shown} for size "
                f"{anchor.tree_size} of {anchor.node}'s log, but its anchor event says "
                f"0x{anchor.root.hex()}",
            )
    _verify_history(controller, log_id, anchors, verified[0].node, head, leaves)
    return verified


def _verify_history(
    controller: Controller,
    log_id: bytes,
    anchors: Sequence[AnchorEvent],
    node: str,
    head_block: int,
    leaves: Sequence[bytes] | None,
) -> None:
    """Step 6 over `node`'s own log, as of block `head_block`."""
    step = "step 6 (anchored history)"
    own = sorted(
        (a for a in anchors if to_checksum_address(a.node) == to_checksum_address(node)),
        key=lambda a: a.tree_size,
    )
    try:
        head = controller.log_head_at(log_id, node, block=head_block)
    except ChainError as exc:
        raise VerificationError("step 0 (chain)", f"reading the log's head failed: {exc}") from exc
    if not own or (head.tree_size, head.root) != (own[-1].tree_size, own[-1].root):
        returned = f"end at size {own[-1].tree_size}" if own else "hold none"
        raise VerificationError(
            step,
            f"the controller's last anchor of {node}'s log is at size {head.tree_size} "
            f"(root 0x{head.root.hex()}), but the anchor events the endpoint returned "
            f"{returned}: the endpoint filtered events; audit through another RPC endpoint",
        )
    if leaves is None:
        return
    tree = Tree(leaves)
    for a in own:
        where = f"block {a.block_number}, tx 0x{a.tx_hash.hex()}"
        if a.tree_size > tree.size:
            raise VerificationError(
                step,
                f"the chain holds anchors past the bundle: {node} anchored size {a.tree_size} "
                f"({where}) but the bundle holds {tree.size} entries: a truncated or "
                "rewritten log (or one that grew since this bundle: export it again)",
            )
        if tree.root(a.tree_size) != a.root:
            raise VerificationError(
                step,
                f"{node} anchored root 0x{a.root.hex()} for size {a.tree_size} ({where}), "
                f"but the bundle's first {a.tree_size} entries hash to "
                f"0x{tree.root(a.tree_size).hex()}: the log was rewritten after it was "
                "anchored",
            )


def verify_with_allow_list(
    controller: Controller,
    log_id: bytes,
    checkpoints: Sequence[tuple[int, bytes]],
    approved_nodes: Collection[str] | None = None,
    *,
    leaves: Sequence[bytes] | None = None,
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
                "step 0 (chain)", f"reading the allow-list failed: {exc}"
            ) from exc
    else:
        approved = set(approved_nodes)
    return verify_on(controller, log_id, checkpoints, approved, leaves=leaves), approved
