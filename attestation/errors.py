"""The trust package's exceptions: one root, each docstring saying what the caller should do.

`attestation` sits below `node` and cannot import `node.errors`; the CLI and the HTTP
layer catch `TrustError` beside `AsiNodeError`.
"""

from __future__ import annotations


class TrustError(Exception):
    """Root of every error the trust code raises on purpose; the message is for a person.

    Catch it at the outermost layer (the CLI, an HTTP handler) to show the message; the
    subclasses say whether to fix the input, the policy or the host. Nothing was trusted.
    """


class FormatError(TrustError):
    """Input (a key file, an envelope, a note, a bundle) is not in the expected format or
    version. The message names the field; fix or re-export the input. Nothing was trusted.
    """


class KeyFileError(TrustError):
    """The node key file is missing, unreadable, has loose permissions or a wrong
    passphrase. Check the path and the passphrase; `asi-node init` creates a key.
    """


class VerificationError(TrustError):
    """A signature, proof, record, certificate, anchor or TEE evidence did not verify.

    `step` names the check that failed (``"seen checkpoints"``, ``"snp.6 report
    signature"``, ``"step 4 (signature)"``), `detail` what failed there, and `passed`
    the steps that succeeded before it, where the verifier counts them. The message is
    ``"{step}: {detail}"``.

    Do not trust the input or anything it carries: treat it as absent. Retrying the same
    input fails the same way: the log, bundle, record or evidence was altered, forked or
    signed by someone else, or the policy (trusted keys, approved nodes, allow-lists)
    does not admit it; fix or replace the input or the policy the message names. Only
    an answer fetched over the network may pass on a retry: an IC certificate that is
    stale (check the local clock) or corrupted (fetch it again from another boundary
    node), or a chain that could not be read (step 0 of the anchor audit).
    """

    def __init__(self, step: str, detail: str, passed: tuple[str, ...] = ()) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail
        self.passed = passed
