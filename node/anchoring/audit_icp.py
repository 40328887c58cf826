"""The ICP step of `asi-node audit --icp URL`: the log's certified anchor against the log.

After the bundle verified, the anchor canister's `latest` answer for the bundle's log id
is read and checked back to the IC root key (certificate, delegation and canister range,
freshness, certified data against the witness: `governance.icp.AnchorCanister.latest`).
Its tree size and root must then match the verified log: the root of the bundle's own
entries at that size. An anchor beyond the bundle's end cannot be checked (the bundle is
older than the anchor, or truncated) and fails, saying so; so does a log with no anchor.
Every outcome is a finding (an `IcpFinding`), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from attestation.bundle import parse_bundle, unb64
from attestation.errors import VerificationError
from attestation.icp.principal import from_text
from attestation.merkle import Tree, leaf_hash
from governance.icp import (
    AnchorCanister,
    HttpTransport,
    IcpClient,
    IcpError,
    NodeIdentity,
    audit_latest,
    log_label,
)
from node.tlog.log import log_id

STEP_NAME = "icp anchor"


@dataclass(frozen=True)
class IcpFinding:
    """What the auditor found on the IC about one log."""

    ok: bool
    detail: str
    canister: str
    log_label: str
    tree_size: int | None = None
    root: bytes | None = None
    certified_at_ns: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "detail": self.detail,
            "canister": self.canister,
            "log_id": self.log_label,
            "tree_size": self.tree_size,
            "root": None if self.root is None else self.root.hex(),
            "certified_at_ns": self.certified_at_ns,
        }


def bundle_roots(bundle_data: bytes) -> Tree:
    """The Merkle tree of a bundle's entries (call after the bundle verified)."""
    bundle = parse_bundle(bundle_data)
    return Tree(leaf_hash(unb64(e.envelope, f"entry {e.index}")) for e in bundle.entries)


def check_icp_anchor(
    bundle_data: bytes,
    origin: str,
    *,
    url: str,
    canister: str,
    root_key_der: bytes,
    max_age_s: float = 300.0,
    timeout_s: float = 10.0,
) -> IcpFinding:
    """Read the certified latest anchor of the bundle's log and compare it with the log."""
    label = log_label(log_id(origin))
    tree = bundle_roots(bundle_data)
    try:
        canister_id = from_text(canister)
    except ValueError as exc:
        return IcpFinding(False, f"--canister: {exc}", canister, label)
    client = IcpClient(
        HttpTransport(url, timeout_s=timeout_s),
        NodeIdentity.generate(),  # queries need a signer; an auditor has no standing key
        root_key_der=root_key_der,
        max_age_ns=int(max_age_s * 1e9),
    )

    def root_at(size: int) -> bytes | None:
        return tree.root(size) if 0 < size <= tree.size else None

    try:
        found = audit_latest(AnchorCanister(client, canister_id), label, root_at)
    except VerificationError as exc:
        return IcpFinding(
            False, f"the canister's answer failed verification: {exc}", canister, label
        )
    except IcpError as exc:
        return IcpFinding(
            False, f"could not read the anchor canister at {url}: {exc}", canister, label
        )
    anchor = found.anchor
    if anchor is None:
        return IcpFinding(
            False,
            f"log {label} has no anchor on canister {canister} (certified absent)",
            canister,
            label,
        )
    facts = (anchor.tree_size, anchor.root, anchor.certified_at_ns)
    if found.problem is not None:
        problem = found.problem
        if anchor.tree_size > tree.size:
            problem = (
                f"anchored at size {anchor.tree_size}, beyond the bundle's {tree.size} "
                "entries: the bundle is older than the anchor (export it again) or truncated"
            )
        return IcpFinding(False, problem, canister, label, *facts)
    when = datetime.fromtimestamp(anchor.certified_at_ns / 1e9, UTC).isoformat(timespec="seconds")
    behind = "" if anchor.tree_size == tree.size else f" of {tree.size} (later ones not yet)"
    detail = (
        f"log {label} anchored at size {anchor.tree_size}{behind} on canister {canister}, "
        f"root {anchor.root.hex()[:16]}... matches the log; certified {when}"
    )
    return IcpFinding(True, detail, canister, label, *facts)
