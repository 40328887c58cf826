"""Internet Computer certificate verification: hash trees, BLS12-381, delegations.

Knows nothing of the node or the network: bytes in, a verified certificate or the trust
package's `attestation.errors.VerificationError` (naming the failing `Step`) out.
"""

from attestation.icp.certificate import (
    MAINNET_ROOT_KEY_DER,
    Certificate,
    VerifiedCertificate,
    certificate_from_read_state,
    parse_certificate,
    verify_certificate,
)
from attestation.icp.steps import Step

__all__ = [
    "MAINNET_ROOT_KEY_DER",
    "Certificate",
    "Step",
    "VerifiedCertificate",
    "certificate_from_read_state",
    "parse_certificate",
    "verify_certificate",
]
