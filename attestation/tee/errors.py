"""Errors of TEE evidence collection and policies, under the trust package's root
(`attestation.errors.TrustError`, which the CLI catches beside `AsiNodeError`).

Evidence that fails a verification step raises the trust package's one
`attestation.errors.VerificationError`, its `passed` listing the steps before it.
"""

from __future__ import annotations

from attestation.errors import TrustError


class TeeError(TrustError):
    """An error of TEE collection, policy or binding (see the subclasses for what to do).

    The `attest` command catches it to report a usage or host problem (exit 2) apart
    from evidence that failed verification (exit 1).
    """


class PolicyError(TeeError):
    """The verification policy is empty, malformed or names an unknown key.

    Fix the policy file (or the `[attestation]` settings) as the message says; no
    evidence was judged.
    """


class CollectionError(TeeError):
    """Evidence could not be collected from this machine's TEE interface.

    The message names the interface (configfs-tsm, /dev/sev-guest, the NVIDIA SDK) and
    the error it returned. EBUSY-style conflicts are retried once already; check that the
    guest kernel exposes the interface and that no other process is using it, or choose
    the `none` provider on a machine without a TEE.
    """


class BindingError(TeeError):
    """A binding document is malformed: a missing field or a value of the wrong shape.

    Fix the named field (the node's key, EVM address, ICP principal, config hash, nonce).
    """
