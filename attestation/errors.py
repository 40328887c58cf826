"""The trust package's exceptions: one root, each docstring saying what the caller should do.

`attestation` sits below `node` and cannot import `node.errors`; the CLI and the HTTP
layer catch `TrustError` beside `AsiNodeError`.
"""

from __future__ import annotations


class TrustError(Exception):
    """Root of every error the trust code raises on purpose; the message is for a person."""


class FormatError(TrustError):
    """Input (a key file, an envelope, a note, a bundle) is not in the expected format or
    version. The message names the field; fix or re-export the input. Nothing was trusted.
    """


class KeyFileError(TrustError):
    """The node key file is missing, unreadable, has loose permissions or a wrong
    passphrase. Check the path and the passphrase; `asi-node init` creates a key.
    """


class VerificationError(TrustError):
    """A signature, proof or record did not verify. `step` names the check that failed.

    Do not trust the input: the log, bundle or record was altered, forked or signed by
    someone else. Retrying will not help.
    """

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.detail = message
