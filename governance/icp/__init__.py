"""The node's Internet Computer client: the one package that imports ic-py.

It holds the node's ICP identity (an Ed25519 key; ic-py signs requests and encodes
Candid), speaks the IC's HTTP interface itself (call, read_state polling, query) so
that timeouts and errors stay under our control, and trusts nothing it has not
verified: every certificate goes through `attestation.icp.verify_certificate`
(hash tree, BLS12-381, delegation and canister ranges, freshness), and a query answer
counts only when the canister's certified data covers it through a witness.
"""

from governance.icp.anchor import (
    AnchorAudit,
    AnchorCanister,
    CertifiedAnchor,
    IcpAnchorTarget,
    IcpReceipt,
    audit_latest,
    log_label,
)
from governance.icp.client import HttpTransport, IcpClient, NodeIdentity, Reply, Transport
from governance.icp.errors import (
    IcpConflictError,
    IcpError,
    IcpNetworkError,
    IcpRejectError,
    IcpReplyError,
    IcpTimeoutError,
)
from governance.icp.sns import (
    SnsGovernance,
    SnsProposal,
    decode_directive_payload,
    encode_directive_payload,
)

__all__ = [
    "AnchorAudit",
    "AnchorCanister",
    "CertifiedAnchor",
    "HttpTransport",
    "IcpAnchorTarget",
    "IcpClient",
    "IcpConflictError",
    "IcpError",
    "IcpNetworkError",
    "IcpReceipt",
    "IcpRejectError",
    "IcpReplyError",
    "IcpTimeoutError",
    "NodeIdentity",
    "Reply",
    "SnsGovernance",
    "SnsProposal",
    "Transport",
    "audit_latest",
    "decode_directive_payload",
    "encode_directive_payload",
    "log_label",
]
