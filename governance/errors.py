"""Governance errors: one root, each saying what the caller should do.

The HTTP routes map these to 4xx statuses in one table (`governance.api.STATUS_OF`).
`governance` sits below `node` and cannot import `node.errors`; the CLI catches
`GovernanceError` beside `AsiNodeError`. Chain (web3, provider, eth-tester) failures are
translated into the `ChainError` tree in `governance.chain`; the ICP client's into the
`IcpError` tree in `governance.icp.errors`, under the same root.
"""

from __future__ import annotations


class GovernanceError(Exception):
    """Root of the governance errors; the message says what was wrong and what to do.

    Catch it at the outermost layer (the CLI, the HTTP handlers) to show the message; a
    `status` attribute, where a subclass has one, is its HTTP status. The anchor audit's
    failures are the trust package's `attestation.errors.VerificationError`.
    """


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


class ChainError(GovernanceError):
    """Root of the errors talking to an EVM chain (see the subclasses for what to do)."""

    status = 502  # behind an HTTP route: the chain the node relays to failed


class ChainUnavailableError(ChainError):
    """The RPC endpoint did not answer (refused, timed out, or returned a server error).

    Transient: anchors wait in the outbox and are retried with backoff. If it persists,
    check that the node at the URL in the message is running and reachable.
    """

    status = 503


class NotAnEvmNodeError(ChainError):
    """The URL answered, but not as an Ethereum JSON-RPC node (no eth_chainId).

    Check the `--rpc` URL or `chain.rpc_url`: it must be an EVM JSON-RPC endpoint.
    """


class WrongChainError(ChainError):
    """The endpoint serves a different chain id than the one configured or recorded.

    Point the node at the right network, or fix `chain.chain_id`; nothing was sent.
    """


class ContractMismatchError(ChainError):
    """The address holds no contract, or code that is not the expected contract.

    Check the addresses in `<home>/chain.json` (or redeploy with `asi-node chain deploy`).
    """


class UnfundedAccountError(ChainError):
    """The node's chain account cannot pay for gas.

    Fund the address in the message on that chain; queued anchors are kept meanwhile.
    """

    status = 503


class TransactionRevertedError(ChainError):
    """A contract call reverted. `reason` is the decoded custom error or message.

    Usually a state or permission problem named by the reason (an unapproved node, a
    tree size that does not grow): fix that; resending the same call fails the same way.
    """

    status = 409

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class NonceError(ChainError):
    """The nonce used was taken: another transaction from the same account got it.

    The anchor publisher handles it by checking what was mined and signing again; a
    caller outside it should read the pending nonce again and retry.
    """

    status = 503


class NodeNotApprovedError(ChainError):
    """The node's chain address is not on the CampaignController's node allow-list.

    Ask governance to approve the address in the message (`approveNode`), or deploy a
    local set with `asi-node chain deploy`, which approves this node.
    """


class ControllerUnknownError(GovernanceError):
    """The CampaignController a proposal is to call is not known: the Governor does not
    name it, and no earlier proposal of the Governor calls it.

    Give its address (`--controller`, the deployment's CampaignController); nothing was
    sent.
    """
