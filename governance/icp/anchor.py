"""The anchor canister (contracts/icp/anchor.did) as the node uses it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ic.candid import Types, encode

from attestation.errors import VerificationError
from attestation.icp.certificate import decode_cbor
from attestation.icp.hashtree import Outcome, lookup, parse_tree
from attestation.icp.steps import Step
from governance.icp.candid import blob, typed_value
from governance.icp.client import IcpClient
from governance.icp.errors import IcpConflictError, IcpRejectError, IcpReplyError

_ANCHOR_ERROR = Types.Variant(
    {
        "bad_log_id": Types.Null,
        "bad_directive": Types.Text,
        "bad_root": Types.Record({"length": Types.Nat}),
        "not_authorised": Types.Null,
        "not_controller": Types.Null,
        "size_not_growing": Types.Record({"latest": Types.Nat64}),
    }
)
_ANCHOR_RESULT = Types.Variant({"ok": Types.Nat, "err": _ANCHOR_ERROR})
_ENTRY = Types.Record(
    {
        "root": Types.Vec(Types.Nat8),
        "time_ns": Types.Nat64,
        "tree_size": Types.Nat64,
        "writer": Types.Principal,
    }
)
_LATEST = Types.Record(
    {
        "anchor": Types.Opt(_ENTRY),
        "certificate": Types.Opt(Types.Vec(Types.Nat8)),
        "witness": Types.Vec(Types.Nat8),
    }
)


def log_label(log_id: bytes) -> str:
    """The canister's text id for a 32-byte log id (the EVM chain's): `0x` + hex."""
    if len(log_id) != 32:
        raise ValueError(f"a log id is 32 bytes, got {len(log_id)}")
    return "0x" + log_id.hex()


@dataclass(frozen=True)
class CertifiedAnchor:
    """A log root the anchor canister certified, checked back to the IC root key."""

    log_id: str
    tree_size: int
    root: bytes
    certified_at_ns: int


class AnchorCanister:
    """The anchor canister (contracts/icp/anchor.did) as the node uses it."""

    def __init__(self, client: IcpClient, canister_id: bytes) -> None:
        self.client = client
        self.canister_id = canister_id

    def anchor(self, log_id: str, tree_size: int, root: bytes) -> int:
        """Append a root; returns the log's anchor count. IcpRejectError if the canister
        refuses (the message names why), IcpNetworkError if it could not be reached."""
        return self.anchor_certified(log_id, tree_size, root)[0]

    def anchor_certified(self, log_id: str, tree_size: int, root: bytes) -> tuple[int, int]:
        """As `anchor`, with the time (ns) of the certificate that vouched for the reply."""
        arg = encode(
            [
                {"type": Types.Text, "value": log_id},
                {"type": Types.Nat64, "value": tree_size},
                {"type": Types.Vec(Types.Nat8), "value": root},
            ]
        )
        reply = self.client.call(self.canister_id, "anchor", arg)
        result = typed_value(reply.arg, _ANCHOR_RESULT, "anchor reply")
        if not isinstance(result, dict) or len(result) != 1:
            raise IcpReplyError("anchor reply is not a result variant")
        if "ok" in result:
            if reply.certificate is None:
                raise IcpReplyError("anchor reply came without a certificate")
            return int(result["ok"]), reply.certificate.time_ns
        error = result.get("err")
        kind = next(iter(error)) if isinstance(error, dict) and error else "unknown"
        detail = error.get(kind) if isinstance(error, dict) else None
        raise IcpRejectError(f"anchor canister refused {log_id}@{tree_size}: {kind} {detail or ''}")

    def latest(self, log_id: str) -> CertifiedAnchor | None:
        """The log's latest anchor, verified through certificate + witness; None if the
        certified tree proves the log has none. VerificationError if anything fails."""
        reply = self.client.query(
            self.canister_id, "latest", encode([{"type": Types.Text, "value": log_id}])
        )
        value = typed_value(reply.arg, _LATEST, "latest reply")
        if not isinstance(value, dict) or not isinstance(value.get("certificate"), list):
            raise IcpReplyError("latest reply is not the expected record")
        if not value["certificate"]:
            raise VerificationError(Step.DECODE.text, "the canister returned no certificate")
        certificate = blob(value["certificate"][0], "certificate")
        witness_cbor = blob(value.get("witness"), "witness")
        cert = self.client.verify(certificate, self.canister_id)
        witness = parse_tree(decode_cbor(witness_cbor, "witness"))
        cert.certified_data(self.canister_id, witness)
        label = log_id.encode()
        size = lookup([b"anchors", label, b"size"], witness)
        root = lookup([b"anchors", label, b"root"], witness)
        if size.outcome is Outcome.ABSENT and root.outcome is Outcome.ABSENT:
            return None
        if size.value is None or root.value is None or len(size.value) != 8:
            raise VerificationError(
                Step.CERTIFIED_DATA.text,
                f"the witness does not reveal anchors/{log_id} (size: {size.outcome.value}, "
                f"root: {root.outcome.value})",
            )
        return CertifiedAnchor(log_id, int.from_bytes(size.value, "big"), root.value, cert.time_ns)


@dataclass(frozen=True)
class IcpReceipt:
    """What the outbox keeps once a root is on the IC."""

    target: str
    log_id: str
    tree_size: int
    root: bytes
    anchor_count: int | None  # the log's anchor count after this call; None if found later
    certified_at_ns: int  # the certificate's time: the update call's, or the certified query's


class IcpAnchorTarget:
    """ICP as an anchoring-outbox target: `publish` either returns a receipt or raises.

    IcpNetworkError (retryable): keep the root in the outbox and retry. IcpRejectError:
    the canister refused (unauthorised node, bad log id): alert the operator, keep the
    root. IcpConflictError (a reject): the IC holds another root at this size. A retry
    after a lost answer is safe: when the canister says the size does not grow, the
    certified latest anchor is read back, and an equal size with the same root, or a
    later size, counts as done.
    """

    name = "icp"

    def __init__(self, canister: AnchorCanister) -> None:
        self.canister = canister

    def publish(self, log_id: str, tree_size: int, root: bytes) -> IcpReceipt:
        try:
            count, certified_at = self.canister.anchor_certified(log_id, tree_size, root)
        except IcpRejectError as exc:
            if "size_not_growing" not in str(exc):
                raise
            latest = self.canister.latest(log_id)
            if latest is None or latest.tree_size < tree_size:
                raise
            if latest.tree_size == tree_size and latest.root != root:
                raise IcpConflictError(
                    f"{log_id}@{tree_size} is already anchored on the IC with a different "
                    f"root {latest.root.hex()}: the log forked; stop and investigate"
                ) from exc
            return IcpReceipt(self.name, log_id, tree_size, root, None, latest.certified_at_ns)
        return IcpReceipt(self.name, log_id, tree_size, root, count, certified_at)


@dataclass(frozen=True)
class AnchorAudit:
    """An auditor's verdict on a log's latest ICP anchor (a value, not an exception:
    a mismatch is a finding to report)."""

    log_id: str
    anchor: CertifiedAnchor | None
    problem: str | None  # None when the anchor matches the log (or there is none)


def audit_latest(
    canister: AnchorCanister, log_id: str, root_at: Callable[[int], bytes | None]
) -> AnchorAudit:
    """Compare the certified latest anchor with the log's own root at that size.

    `root_at(size)` is the log's root at `size`, or None if the log is shorter. A
    certificate that fails verification raises VerificationError (the caller reports it).
    """
    anchor = canister.latest(log_id)
    if anchor is None:
        return AnchorAudit(log_id, None, None)
    expected = root_at(anchor.tree_size)
    if expected is None:
        problem = f"anchored at size {anchor.tree_size}, beyond the log's end"
    elif expected != anchor.root:
        problem = (
            f"anchored root {anchor.root.hex()} at size {anchor.tree_size} differs from "
            f"the log's root {expected.hex()}"
        )
    else:
        problem = None
    return AnchorAudit(log_id, anchor, problem)
