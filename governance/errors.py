"""The governance package's exceptions: one root, each docstring saying what to do.

`governance` sits below `node` and cannot import `node.errors`; the CLI and the HTTP
layer catch `GovernanceError` beside `AsiNodeError`. Third-party (web3, provider,
eth-tester) failures are translated into these in `governance.chain`.
"""

from __future__ import annotations


class GovernanceError(Exception):
    """Root of every error the governance code raises on purpose; the message is for a person."""


class VerificationError(GovernanceError):
    """Evidence failed verification: the message names the failing step and what differed.

    Treat the object checked as untrusted. Retrying will fail the same way unless the
    evidence or the policy (approved keys, expected chain) changes.
    """


class ChainError(GovernanceError):
    """Root of the errors talking to an EVM chain (see the subclasses for what to do)."""


class ChainUnavailableError(ChainError):
    """The RPC endpoint did not answer (refused, timed out, or returned a server error).

    Transient: anchors wait in the outbox and are retried with backoff. If it persists,
    check that the node at the URL in the message is running and reachable.
    """


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


class TransactionRevertedError(ChainError):
    """A contract call reverted. `reason` is the decoded custom error or message.

    Usually a state or permission problem named by the reason (an unapproved node, a
    tree size that does not grow): fix that; resending the same call fails the same way.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class NonceError(ChainError):
    """The nonce used was taken: another transaction from the same account got it.

    The anchor publisher handles it by checking what was mined and signing again; a
    caller outside it should read the pending nonce again and retry.
    """


class NodeNotApprovedError(ChainError):
    """The node's chain address is not on the CampaignController's node allow-list.

    Ask governance to approve the address in the message (`approveNode`), or deploy a
    local set with `asi-node chain deploy`, which approves this node.
    """
