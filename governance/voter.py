"""A token holder's Governor, over an RPC URL and a key file: no node, no node home.

`VoterGovernor` is a `governance.ballots.GovernorClient` built from what a voter has: a
JSON-RPC endpoint, the Governor's address and, to send anything, a private key that
pays the gas. It reads as the node's relay does (`GovernorReader`), and sends the
holder's own transactions: `delegate` on the voting token (the Governor's `token()`),
`castVote`, `propose`, and, as anyone may, `castVoteBySig` for a ballot a wallet signed,
`queue` and `execute`. Each transaction is estimated before it is signed, so what the
Governor would refuse raises, nothing sent, as the error the relay raises for it
(UnknownProposalError, ProposalStateError, ReplayError, BadSignatureError; other
reverts a TransactionRevertedError naming the contract's error).

The Governor does not name the CampaignController its proposals call: `controller` is
the address given, else the first target of the Governor's proposals whose code is
asi-node's CampaignController (ControllerUnknownError when there is none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from governance.ballots import Ballot, ProposalInfo
from governance.chain import Address, Chain, Controller, address_of, checksum_address
from governance.errors import (
    ContractMismatchError,
    ControllerUnknownError,
    GovernanceError,
    TransactionRevertedError,
)
from governance.proposals import Prepared
from governance.relay import GovernorReader


class NoKeyError(GovernanceError):
    """A transaction was asked for but no key was given to sign it and pay its gas.

    Give the key file of the account that is to send it.
    """


class VoterGovernor(GovernorReader):
    """The Governor at `governor` for a voter (module docstring); `key` signs and pays."""

    def __init__(
        self,
        chain: Chain,
        governor: str,
        *,
        key: bytes | None = None,
        controller: str | None = None,
    ) -> None:
        super().__init__(chain, governor)
        self.key = key
        self._controller = Controller(chain, controller).address if controller else None

    @property
    def sender(self) -> Address:
        """The address of the key that sends (NoKeyError without one)."""
        return address_of(self._key("send a transaction"))

    def controller(self) -> str:
        if self._controller is None:
            self._controller = self.find_controller(self.proposals())
        if self._controller is None:
            raise ControllerUnknownError(
                f"the Governor {self.address} on {self.chain.label} does not name its "
                "CampaignController and no proposal of it calls one: give its address "
                "(--controller)"
            )
        return self._controller

    def find_controller(self, proposals: Sequence[ProposalInfo]) -> Address | None:
        """The address given, else the first target of `proposals` that holds asi-node's
        CampaignController code; None if there is none."""
        if self._controller is not None:
            return self._controller
        seen: set[str] = set()
        for target in (t for info in proposals for t in info.targets):
            if target.lower() in seen:
                continue
            seen.add(target.lower())
            try:
                return Controller(self.chain, target).address
            except ContractMismatchError:
                continue
        return None

    def votes(self, account: str) -> int:
        """`account`'s voting power now (its delegated votes on the token)."""
        call = self._token().functions.getVotes(checksum_address(account)).call
        return int(self.chain.call("reading voting power from the token", call))

    def balance_of(self, account: str) -> int:
        call = self._token().functions.balanceOf(checksum_address(account)).call
        return int(self.chain.call("reading a token balance", call))

    def delegate(self, to: str | None = None) -> str:
        """Delegate the sender's votes to `to` (default: itself); the 0x transaction hash."""
        delegatee = checksum_address(to) if to else self.sender
        return self._send("delegate", None, self._token().functions.delegate(delegatee))

    def cast_vote(self, proposal_id: int, support: int) -> str:
        """The sender's own vote (`castVote`), counted with its power at the snapshot."""
        call = self.contract.functions.castVote(proposal_id, support)
        return self._send("castVote", proposal_id, call)

    def cast_vote_by_sig(self, ballot: Ballot) -> str:
        """A ballot someone signed (a browser wallet), sent with the sender paying gas."""
        call = self.contract.functions.castVoteBySig(
            ballot.proposal_id, ballot.support, checksum_address(ballot.voter), ballot.signature
        )
        return self._send("castVoteBySig", ballot.proposal_id, call)

    def propose(self, prepared: Prepared) -> str:
        call = self.contract.functions.propose(
            list(prepared.targets),
            list(prepared.values),
            list(prepared.calldatas),
            prepared.description,
        )
        return self._send("propose", prepared.proposal_id, call)

    def queue(self, proposal_id: int) -> str:
        call = self.contract.get_function_by_signature("queue(uint256)")(proposal_id)
        return self._send("queue", proposal_id, call)

    def execute(self, proposal_id: int) -> str:
        call = self.contract.get_function_by_signature("execute(uint256)")(proposal_id)
        return self._send("execute", proposal_id, call)

    def _token(self) -> Any:
        return self.chain.contract("GovToken", self.token())

    def _key(self, what: str) -> bytes:
        if self.key is None:
            raise NoKeyError(f"a key is needed to {what}: give --key-file")
        return self.key

    def _send(self, action: str, proposal_id: int | None, call: Any) -> str:
        key = self._key(f"send {action}")
        try:
            receipt = self.chain.send(key, call)
        except TransactionRevertedError as exc:
            if proposal_id is None or action == "propose":
                raise
            raise self._refusal(action, proposal_id, exc) from exc
        return "0x" + receipt.tx_hash.hex()
