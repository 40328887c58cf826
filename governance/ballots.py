"""Signed ballots for `castVoteBySig`: checked here, relayed through a `GovernorClient`.

OpenZeppelin 5's Governor takes a vote signed as EIP-712 typed data,
`Ballot(uint256 proposalId,uint8 support,address voter,uint256 nonce)`, under the domain
(name, version "1", chainId, the Governor's address), and consumes the voter's nonce.
Before anything is relayed, `BallotRelay.check` runs these steps, each raising a
`BallotError` that names what failed:

1. the ballot was signed for this chain id and this Governor (WrongDomainError);
2. the signature is the voter's (BadSignatureError), as the Governor's
   `SignatureChecker` decides it: for a voter with code (a smart-contract wallet such as
   a Safe) the voter's ERC-1271 `isValidSignature(digest, signature)` returns the magic
   value 0x1626ba7e; for an account without code the 65-byte signature recovers to the
   voter, its `s` in the lower half of the curve order (v may be 27/28 or 0/1: it is
   relayed as 27/28, the only form the Governor's ECDSA accepts);
3. the nonce is the voter's current one, and no ballot of the voter with that nonce was
   relayed or is being relayed (ReplayError);
4. the proposal exists and is Active, and the voter has not voted (Unknown/State/Replay);
5. the voter had voting power at the proposal's snapshot (BallotError, 403).

The relay never holds voting power: it only pays gas for the voter's own signature.
It holds its lock only over its own bookkeeping, never over a chain call: a slow block
delays the ballot in it, not the next voter's. `TokenBuckets` limit how often a voter
(and, in the API, a client) may have the relay spend gas: RateLimitedError, 429.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys.exceptions import BadSignature as EthKeysBadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from governance.errors import (
    BadSignatureError,
    BallotError,
    MalformedCallError,
    NoVotingPowerError,
    ProposalStateError,
    ReplayError,
    UnknownProposalError,
    WrongDomainError,
)

UINT256_MAX = 2**256 - 1
ERC1271_MAGIC = bytes.fromhex("1626ba7e")  # bytes4(keccak256("isValidSignature(bytes32,bytes)"))
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

    def wallet_typed_data(self, domain: GovernorDomain) -> dict[str, Any]:
        """`typed_data` for a browser wallet's `eth_signTypedData_v4`: the same EIP-712
        message, with the uint256 values (proposal id, nonce, chain id) as decimal
        strings, which JSON.parse keeps exact (a proposal id is far above 2**53)."""
        data = self.typed_data(domain)
        data["domain"] = data["domain"] | {"chainId": str(domain.chain_id)}
        message = data["message"]
        data["message"] = message | {
            "proposalId": str(message["proposalId"]),
            "nonce": str(message["nonce"]),
        }
        return data


@dataclass(frozen=True)
class ProposalInfo:
    """A proposal as the Governor reports it: snapshot and deadline in its clock's units
    (block numbers or timestamps); `eta` the timelock's ready time in seconds once queued
    (else None); `quorum` the votes needed, at the snapshot (None before the snapshot is
    past); the calls it makes (`targets`, `values`, `calldatas`) and who proposed it."""

    proposal_id: int
    state: ProposalState
    snapshot: int
    deadline: int
    votes_for: int
    votes_against: int
    votes_abstain: int
    description: str = ""
    proposer: str | None = None
    eta: int | None = None
    quorum: int | None = None
    targets: tuple[str, ...] = ()
    values: tuple[int, ...] = ()
    calldatas: tuple[bytes, ...] = field(default=(), repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "proposal_id": str(self.proposal_id),
            "state": self.state.name.lower(),
            "proposer": self.proposer,
            "snapshot": self.snapshot,
            "deadline": self.deadline,
            "eta": self.eta,
            "quorum": None if self.quorum is None else str(self.quorum),
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

    def is_contract(self, address: str) -> bool:
        """Whether `address` holds code (its signatures are checked by ERC-1271)."""
        ...

    def erc1271_valid(self, account: str, digest: bytes, signature: bytes) -> bool:
        """Whether the contract `account` accepts `signature` over `digest`: its
        `isValidSignature` returns the ERC-1271 magic value (a revert is False)."""
        ...

    def simulate(self, target: str, data: bytes) -> None:
        """Run the call as the timelock would (an eth_call from its address); raise
        TransactionRevertedError naming the revert if it would fail."""
        ...

    def cast_vote_by_sig(self, ballot: Ballot) -> str: ...

    def queue(self, proposal_id: int) -> str: ...

    def execute(self, proposal_id: int) -> str: ...


def voter_address(key: bytes) -> str:
    """The checksummed address of a voter's private key."""
    return str(Account.from_key(key).address)


def sign_ballot(
    key: bytes,
    domain: GovernorDomain,
    proposal_id: int,
    support: int,
    nonce: int,
    *,
    voter: str | None = None,
) -> Ballot:
    """A ballot signed with `key` (for wallets in tests and the CLI): the key's own vote,
    or, with `voter`, a smart-contract wallet's vote that `key` signs for it (a wallet
    whose ERC-1271 check accepts its owner's signature of the EIP-712 digest)."""
    voter = to_checksum_address(voter) if voter else Account.from_key(key).address
    unsigned = Ballot(proposal_id, support, voter, nonce, b"")
    signed = Account.sign_message(encode_typed_data(full_message=unsigned.typed_data(domain)), key)
    return Ballot(proposal_id, support, voter, nonce, bytes(signed.signature))


def ballot_digest(ballot: Ballot, domain: GovernorDomain) -> bytes:
    """The EIP-712 digest the voter signs (the hash an ERC-1271 wallet is asked about)."""
    try:
        message = encode_typed_data(full_message=ballot.typed_data(domain))
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadSignatureError(f"the ballot cannot be encoded as EIP-712 data: {exc}") from exc
    return bytes(keccak(b"\x19" + message.version + message.header + message.body))


def normalised_signature(signature: bytes) -> bytes:
    """An account's 65-byte (r, s, v) signature in the form the Governor's ECDSA takes:
    v as 27 or 28 (wallets and libraries that give the recovery id 0 or 1 are accepted),
    s in the lower half of the curve order (its malleable twin is refused)."""
    if len(signature) != 65:
        raise BadSignatureError(f"a ballot signature is 65 bytes (r, s, v), got {len(signature)}")
    v = signature[64]
    s = int.from_bytes(signature[32:64], "big")
    if v not in (0, 1, 27, 28):
        raise BadSignatureError(f"the signature's v is {v}; it must be 27 or 28 (or 0 or 1)")
    if not 0 < s <= SECP256K1_N // 2:
        raise BadSignatureError("the signature's s is not in the lower half of the curve order")
    return signature[:64] + bytes([v + 27 if v < 27 else v])


def recover_voter(ballot: Ballot, domain: GovernorDomain) -> str:
    """The account that signed the ballot (BadSignatureError if none can be recovered)."""
    signature = normalised_signature(ballot.signature)
    try:
        message = encode_typed_data(full_message=ballot.typed_data(domain))
        return str(Account.recover_message(message, signature=signature))
    except (ValueError, TypeError, OverflowError, EthKeysBadSignature) as exc:
        raise BadSignatureError(f"the ballot signature cannot be recovered: {exc}") from exc


class RateLimitedError(BallotError):
    """Too many requests for this voter or from this client in a short time; nothing was
    relayed. Wait `retry_after_s` seconds (the Retry-After header) and send it again."""

    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Rate:
    """A token bucket's shape: `burst` requests at once, refilled at `per_minute` (a rate
    of 0 is no limit)."""

    per_minute: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.per_minute < 0 or self.burst < 1:
            raise ValueError("a rate is >= 0 per minute with a burst of at least 1")


@dataclass(frozen=True)
class RelayLimits:
    """How often the relay spends gas for one voter (ballots, counted once the ballot
    passed its checks, so no one can use up another voter's allowance) and for one
    client address (every ballot or keeper request, checked before anything else)."""

    per_voter: Rate = Rate(per_minute=10, burst=5)
    per_client: Rate = Rate(per_minute=60, burst=20)
    keeper_per_client: Rate = Rate(per_minute=60, burst=20)


class TokenBuckets:
    """One token bucket per key (a voter address, a client IP), all of one `Rate`.
    `take` spends a token or raises RateLimitedError saying when one is back.
    Thread-safe; buckets that refilled are forgotten once there are many."""

    MAX_KEYS = 10_000

    def __init__(self, rate: Rate, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.what = what
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> None:
        if self.rate.per_minute == 0:
            return
        per_s = self.rate.per_minute / 60
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(key, (float(self.rate.burst), now))
            tokens = min(float(self.rate.burst), tokens + (now - at) * per_s)
            if tokens < 1:
                wait = (1 - tokens) / per_s
                raise RateLimitedError(
                    f"too many {self.what} for {key}: at most {self.rate.burst} at once and "
                    f"{self.rate.per_minute:g} a minute; retry in {math.ceil(wait)} s",
                    wait,
                )
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > self.MAX_KEYS:
                self._forget(now, per_s)

    def _forget(self, now: float, per_s: float) -> None:
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * per_s >= self.rate.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) > self.MAX_KEYS:  # many busy keys: keep the newest half
            newest = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[
                len(self._buckets) // 2 :
            ]
            self._buckets = dict(newest)


class BallotRelay:
    """Checks ballots (module docstring) and relays the good ones, each exactly once.

    With `per_voter`, each voter's ballots that pass the checks spend a token of the
    voter's bucket before they are sent (RateLimitedError otherwise)."""

    def __init__(
        self,
        governor: GovernorClient,
        *,
        per_voter: Rate | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.governor = governor
        self._lock = threading.Lock()  # guards the two maps below, never a chain call
        self._relayed: dict[bytes, str] = {}  # (voter, nonce) digest -> transaction hash
        self._in_flight: set[bytes] = set()
        self._voters = TokenBuckets(per_voter, "ballots", clock) if per_voter else None

    def check(self, ballot: Ballot, chain_id: int, verifying_contract: str) -> Ballot:
        """The ballot as it is to be relayed (the voter checksummed, an account's v as 27
        or 28), once every step passed; the step's BallotError otherwise."""
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
        try:
            ballot = Ballot(
                ballot.proposal_id,
                ballot.support,
                to_checksum_address(ballot.voter),
                ballot.nonce,
                ballot.signature,
            )
        except ValueError:
            raise MalformedCallError(f"the voter {ballot.voter!r} is no address") from None
        # 2. the signature, as the Governor's SignatureChecker checks it
        if self.governor.is_contract(ballot.voter):
            digest = ballot_digest(ballot, domain)
            if not self.governor.erc1271_valid(ballot.voter, digest, ballot.signature):
                raise BadSignatureError(
                    f"the voter {ballot.voter} is a contract (a smart-contract wallet) and "
                    f"its isValidSignature(0x{digest.hex()}, signature) did not return the "
                    "ERC-1271 magic value 0x1626ba7e: sign the ballot's EIP-712 digest as "
                    "the wallet requires (its owners' signatures)"
                )
        else:
            signer = recover_voter(ballot, domain)
            if signer.lower() != ballot.voter.lower():
                raise BadSignatureError(
                    f"the signature recovers to {signer}, not to the stated voter {ballot.voter}"
                )
            ballot = Ballot(
                ballot.proposal_id,
                ballot.support,
                ballot.voter,
                ballot.nonce,
                normalised_signature(ballot.signature),
            )
        # 3. the nonce and replays
        with self._lock:
            earlier = self._relayed.get(_digest(ballot))
        if earlier is not None:
            raise ReplayError(
                f"a ballot of {ballot.voter} with nonce {ballot.nonce} was relayed already "
                f"({earlier}): sign a new one with the voter's current nonce"
            )
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
        return ballot

    def relay(self, ballot: Ballot, chain_id: int, verifying_contract: str) -> str:
        """Check the ballot and send it; the transaction hash once mined. Nothing is sent
        on error. Ballots of other voters are checked and sent meanwhile: only the
        voter's nonce is reserved while this one is on its way."""
        ready = self.check(ballot, chain_id, verifying_contract)
        if self._voters is not None:
            self._voters.take(ready.voter.lower())
        key = _digest(ready)
        with self._lock:
            if key in self._relayed or key in self._in_flight:
                raise ReplayError(
                    f"a ballot of {ready.voter} with nonce {ready.nonce} is being relayed "
                    "already: wait for it, or sign a new one with the next nonce"
                )
            self._in_flight.add(key)
        try:
            tx = self.governor.cast_vote_by_sig(ready)
            with self._lock:
                self._relayed[key] = tx
            return tx
        finally:
            with self._lock:
                self._in_flight.discard(key)


def _digest(ballot: Ballot) -> bytes:
    # A voter's nonce is used once, on whichever proposal: a replay is any second ballot
    # of the voter with that nonce, whatever the signature's encoding (s or v forms).
    text = f"{ballot.voter.lower()}:{ballot.nonce}"
    return hashlib.sha256(text.encode()).digest()
