"""Governance errors: one root, each saying what the caller should do.

The HTTP routes map these to 4xx statuses in one table (`governance.api.STATUS_OF`).
"""

from __future__ import annotations


class GovernanceError(Exception):
    """Root of the governance errors; the message says what was wrong and what to do."""


class SourceError(GovernanceError):
    """A directive source (the EVM controller, the SNS) could not be read just now.

    Transient: the watcher keeps its last state and reads again on the next poll; if no
    fresh state arrives for `stale_after_s`, the node pauses itself. Check the RPC URL or
    the replica if it persists.
    """


class ForkConfigError(GovernanceError):
    """A fork names a config whose hash does not match the config the node was given.

    Nothing was created: supply the exact config the proposal committed to.
    """


class BallotError(GovernanceError):
    """A signed ballot was refused before anything was relayed. Fix the ballot and retry."""

    status = 400


class BadSignatureError(BallotError):
    """The ballot's signature is malformed or does not recover to the stated voter.

    Sign the EIP-712 typed data again with the voter's own key.
    """

    status = 401


class WrongDomainError(BallotError):
    """The ballot was signed for another chain id or another Governor contract.

    Sign again with the domain this node serves (GET /gov/domain).
    """

    status = 422


class ReplayError(BallotError):
    """The ballot's nonce was already used (or is not the voter's next nonce).

    A ballot counts once: sign a new one with the voter's current nonce.
    """

    status = 409


class NoVotingPowerError(BallotError):
    """The voter had no votes at the proposal's snapshot. Delegate (to yourself) before
    the next proposal; votes delegated later do not count for this one."""

    status = 403


class UnknownCampaignError(BallotError):
    """The campaign named is not one this node knows. List campaigns first."""

    status = 404


class ProposalStateError(BallotError):
    """The proposal is not open for voting (pending, defeated, executed, ...).

    Votes are only accepted while the proposal is Active; check its state first.
    """

    status = 409


class UnknownProposalError(BallotError):
    """No proposal with that id exists on the Governor. Check the id."""

    status = 404


class MalformedCallError(BallotError):
    """A proposal's targets or calldata cannot be decoded, or name an unknown campaign.

    Build the call from the controller's ABI with a known campaign id.
    """

    status = 422
