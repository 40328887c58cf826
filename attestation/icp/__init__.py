"""Internet Computer certificate verification: hash trees, BLS12-381, delegations.

Knows nothing of the node or the network: bytes in, a verified certificate or a
`VerificationError` (naming the failing step) out.
"""

from attestation.icp.certificate import (
    MAINNET_ROOT_KEY_DER,
    Certificate,
    VerifiedCertificate,
    certificate_from_read_state,
    parse_certificate,
    verify_certificate,
)
from attestation.icp.errors import Step, VerificationError

__all__ = [
    "MAINNET_ROOT_KEY_DER",
    "Certificate",
    "Step",
    "VerificationError",
    "VerifiedCertificate",
    "certificate_from_read_state",
    "parse_certificate",
    "verify_certificate",
]
