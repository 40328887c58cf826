"""Signed ballots for `castVoteBySig`: checked here, relayed through a `GovernorClient`.

OpenZeppelin 5's Governor takes a vote signed as EIP-712 typed data,
`Ballot(uint256 proposalId,uint8 support,address voter,uint256 nonce)`, under the domain
(name, version "1", chainId, the Governor's address), and consumes the voter's nonce.
Before anything is relayed, `check_ballot` runs these steps, each raising a `BallotError`
that names what failed:

1. the ballot was signed for this chain id and this Governor (WrongDomainError);
2. the signature is well formed and recovers to the stated voter (BadSignatureError);
3. the nonce is the voter's current one, and this ballot was not relayed already
   (ReplayError);
4. the proposal exists and is Active, and the voter has not voted (Unknown/State/Replay);
5. the voter had voting power at the proposal's snapshot (BallotError, 403).

The relay never holds voting power: it only pays gas for the voter's own signature.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys.exceptions import BadSignature as EthKeysBadSignature

from governance.errors import (
    BadSignatureError,
    MalformedCallError,
    NoVotingPowerError,
    ProposalStateError,
    ReplayError,
    UnknownProposalError,
    WrongDomainError,
)

UINT256_MAX = 2**256 - 1
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
BALLOT_FIELDS = [
    {"name": "proposalId", "type": "uint256"},
    {"name": "support", "type": "uint8"},
    {"name": "voter", "type": "address"},
    {"name": "nonce", "type": "uint256"},
]
DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


class ProposalState(IntEnum):
    """OpenZeppelin 5 `IGovernor.ProposalState`, in its order."""

    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    QUEUED = 5
    EXPIRED = 6
    EXECUTED = 7


class Support(IntEnum):
    AGAINST = 0
    FOR = 1
    ABSTAIN = 2


@dataclass(frozen=True)
class GovernorDomain:
    """The EIP-712 domain a Governor signs ballots under."""

    name: str
    chain_id: int
    verifying_contract: str
    version: str = "1"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


@dataclass(frozen=True)
class Ballot:
    proposal_id: int
    support: int
    voter: str
    nonce: int
    signature: bytes

    def typed_data(self, domain: GovernorDomain) -> dict[str, Any]:
        return {
            "types": {"EIP712Domain": DOMAIN_FIELDS, "Ballot": BALLOT_FIELDS},
            "primaryType": "Ballot",
            "domain": domain.as_json(),
            "message": {
                "proposalId": self.proposal_id,
                "support": self.support,
                "voter": self.voter,
                "nonce": self.nonce,
            },
        }


@dataclass(frozen=True)
class ProposalInfo:
    """A proposal as the Governor reports it (block numbers or timestamps per its clock)."""

    proposal_id: int
    state: ProposalState
    snapshot: int
    deadline: int
    votes_for: int
    votes_against: int
    votes_abstain: int
    description: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "proposal_id": str(self.proposal_id),
            "state": self.state.name.lower(),
            "snapshot": self.snapshot,
            "deadline": self.deadline,
            "votes": {
                "for": str(self.votes_for),
                "against": str(self.votes_against),
                "abstain": str(self.votes_abstain),
            },
            "description": self.description,
        }


class GovernorClient(Protocol):
    """The Governor as the API needs it; `governance.relay.ChainGovernor` implements it
    with web3.

    `proposal` returns None for an unknown id; transaction methods return the hash.
    """

    def domain(self) -> GovernorDomain: ...

    def controller(self) -> str:
        """The CampaignController's address (the target of directive proposals)."""
        ...

    def proposals(self) -> list[ProposalInfo]: ...

    def proposal(self, proposal_id: int) -> ProposalInfo | None: ...

    def nonce(self, voter: str) -> int: ...

    def has_voted(self, proposal_id: int, voter: str) -> bool: ...

    def votes_at(self, voter: str, timepoint: int) -> int: ...

    def cast_vote_by_sig(self, ballot: Ballot) -> str: ...

    def queue(self, proposal_id: int) -> str: ...

    def execute(self, proposal_id: int) -> str: ...


def voter_address(key: bytes) -> str:
    """The checksummed address of a voter's private key."""
    return str(Account.from_key(key).address)


def sign_ballot(
    key: bytes, domain: GovernorDomain, proposal_id: int, support: int, nonce: int
) -> Ballot:
    """A voter's ballot signed with `key` (for wallets in tests and the CLI)."""
    voter = Account.from_key(key).address
    unsigned = Ballot(proposal_id, support, voter, nonce, b"")
    signed = Account.sign_message(encode_typed_data(full_message=unsigned.typed_data(domain)), key)
    return Ballot(proposal_id, support, voter, nonce, bytes(signed.signature))


def recover_voter(ballot: Ballot, domain: GovernorDomain) -> str:
    """The address that signed the ballot (BadSignatureError if none can be recovered)."""
    if len(ballot.signature) != 65:
        raise BadSignatureError(
            f"a ballot signature is 65 bytes (r, s, v), got {len(ballot.signature)}"
        )
    # The Governor's ECDSA.recover accepts only v in {27, 28} and s in the lower half of
    # the curve order (no malleable twins); refuse here what the chain would revert.
    v = ballot.signature[64]
    s = int.from_bytes(ballot.signature[32:64], "big")
    if v not in (27, 28):
        raise BadSignatureError(f"the signature's v is {v}; the Governor accepts 27 or 28")
    if not 0 < s <= SECP256K1_N // 2:
        raise BadSignatureError("the signature's s is not in the lower half of the curve order")
    try:
        message = encode_typed_data(full_message=ballot.typed_data(domain))
        return str(Account.recover_message(message, signature=ballot.signature))
    except (ValueError, TypeError, OverflowError, EthKeysBadSignature) as exc:
        raise BadSignatureError(f"the ballot signature cannot be recovered: {exc}") from exc


class BallotRelay:
    """Checks ballots (module docstring) and relays the good ones, each exactly once."""

    def __init__(self, governor: GovernorClient) -> None:
        self.governor = governor
        self._lock = threading.Lock()
        self._relayed: dict[bytes, str] = {}  # ballot digest -> transaction hash

    def check(self, ballot: Ballot, chain_id: int, verifying_contract: str) -> ProposalInfo:
        domain = self.governor.domain()
        # 1. the domain
        if chain_id != domain.chain_id:
            raise WrongDomainError(
                f"the ballot was signed for chain id {chain_id}; this Governor is on "
                f"chain {domain.chain_id}"
            )
        if verifying_contract.lower() != domain.verifying_contract.lower():
            raise WrongDomainError(
                f"the ballot was signed for contract {verifying_contract}; this Governor "
                f"is {domain.verifying_contract}"
            )
        if not 0 <= ballot.proposal_id <= UINT256_MAX or not 0 <= ballot.nonce <= UINT256_MAX:
            raise MalformedCallError("proposal id and nonce are uint256 values")
        if ballot.support not in tuple(Support):
            raise MalformedCallError(
                f"support is 0 (against), 1 (for) or 2 (abstain), got {ballot.support}"
            )
        # 2. the signature
        signer = recover_voter(ballot, domain)
        if signer.lower() != ballot.voter.lower():
            raise BadSignatureError(
                f"the signature recovers to {signer}, not to the stated voter {ballot.voter}"
            )
        # 3. the nonce and replays
        if _digest(ballot) in self._relayed:
            raise ReplayError("this ballot was relayed already")
        current = self.governor.nonce(ballot.voter)
        if ballot.nonce != current:
            raise ReplayError(
                f"the ballot uses nonce {ballot.nonce}; the voter's current nonce is "
                f"{current} ({'already used' if ballot.nonce < current else 'not yet valid'})"
            )
        # 4. the proposal
        info = self.governor.proposal(ballot.proposal_id)
        if info is None:
            raise UnknownProposalError(f"no proposal {ballot.proposal_id} on this Governor")
        if info.state is not ProposalState.ACTIVE:
            raise ProposalStateError(
                f"proposal {ballot.proposal_id} is {info.state.name.lower()}, not active"
            )
        if self.governor.has_voted(ballot.proposal_id, ballot.voter):
            raise ReplayError(f"{ballot.voter} has already voted on {ballot.proposal_id}")
        # 5. voting power
        if self.governor.votes_at(ballot.voter, info.snapshot) <= 0:
            raise NoVotingPowerError(
                f"{ballot.voter} had no voting power at the proposal's snapshot "
                f"{info.snapshot}: delegate before a proposal is made"
            )
        return info

    def relay(self, ballot: Ballot, chain_id: int, verifying_contract: str) -> str:
        """Check the ballot and send it; the transaction hash. Nothing is sent on error."""
        with self._lock:
            self.check(ballot, chain_id, verifying_contract)
            tx = self.governor.cast_vote_by_sig(ballot)
            self._relayed[_digest(ballot)] = tx
            return tx


def _digest(ballot: Ballot) -> bytes:
    # A replay is the same vote again, whatever the signature's encoding (s or v forms).
    text = f"{ballot.proposal_id}:{ballot.voter.lower()}:{ballot.nonce}"
    return hashlib.sha256(text.encode()).digest()
