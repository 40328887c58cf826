"""The ICP client's errors, under the governance root: each says what the caller should do."""

from __future__ import annotations

from governance.errors import GovernanceError


class IcpError(GovernanceError):
    """Root of the ICP client's errors; the message says what went wrong and what to do.

    `retryable` says whether the same call may succeed later (see the subclasses for
    what to do meanwhile); the command line shows the message and exits with 2.
    """

    retryable = False


class IcpNetworkError(IcpError):
    """The boundary node could not be reached, timed out or answered with an HTTP error.

    Transient: keep the root in the outbox and retry later; check the configured URL
    if it persists.
    """

    retryable = True


class IcpTimeoutError(IcpNetworkError):
    """An update call was accepted but no final status was certified within the wait.

    The call may still execute: retry later (anchoring is idempotent per tree size).
    """


class IcpRejectError(IcpError):
    """The IC or the canister rejected the call (reject code and message attached).

    Not retryable as is: fix the cause the message names (an unauthorised node
    principal, a tree size that does not grow, a wrong canister id).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class IcpConflictError(IcpRejectError):
    """The IC already holds a different root for this log and tree size: the log has two
    histories. Retrying can never succeed; stop and investigate."""


class IcpReplyError(IcpError):
    """A reply could not be read: not CBOR, not the expected Candid, or inconsistent.

    The canister or boundary node does not speak the expected interface: check the
    canister id and its version; retrying will not help.
    """
