"""Errors of TEE evidence collection and verification, under the trust package's root
(`attestation.errors.TrustError`, which the CLI catches beside `AsiNodeError`).
"""

from __future__ import annotations

from attestation.errors import TrustError


class TeeError(TrustError):
    """Root of the errors this package raises on purpose; the message is for a person."""


class VerificationError(TeeError):
    """Evidence failed a verification step: it is not trusted, and nothing was concluded.

    `step` names the failing step (e.g. ``"snp.6 report signature"``) and `passed` lists
    the steps that succeeded before it. Retrying will not help: fix or replace the
    evidence, the certificate chain or the policy named in the message.
    """

    def __init__(self, step: str, message: str, passed: tuple[str, ...] = ()) -> None:
        super().__init__(f"step {step}: {message}")
        self.step = step
        self.reason = message
        self.passed = passed


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
