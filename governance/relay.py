"""The node's own transactions to the governance contracts, and the Governor's reads.

`GovernorReader` reads the Governor (proposals with their calls, proposer, quorum and
timelock ETA, voters' nonces and power), simulates calls as the timelock would make
them and checks smart-contract voters' ERC-1271 signatures; it needs no key, so a voter
without a node uses it too (`governance.voter`). `ChainGovernor`, the Governor behind
the `/gov` routes, adds ballots, queue and execute relayed with a relayer key that pays
gas and holds no votes. `ChainAcker` sends the node's acknowledgements of the
directives it applied. All go through `governance.chain` (the only web3 module) and turn
the contracts' reverts into the errors a caller can act on.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from eth_abi.abi import encode as abi_encode

from governance.ballots import ERC1271_MAGIC, Ballot, GovernorDomain, ProposalInfo, ProposalState
from governance.chain import Address, Chain, Controller, Deployment, address_of, checksum_address
from governance.directives import campaign_of_key
from governance.errors import (
    BadSignatureError,
    ChainError,
    GovernanceError,
    NodeNotApprovedError,
    NonceError,
    ProposalStateError,
    ReplayError,
    TransactionRevertedError,
    UnknownProposalError,
)

log = logging.getLogger(__name__)

REORG_RESCAN_BLOCKS = 12  # recent blocks read again when scanning events incrementally


class GovernorReader:
    """The DaoGovernor at one address, read over a `Chain`: its EIP-712 domain, timelock
    and voting token, proposals with their calls, proposer, quorum and timelock ETA,
    voters' nonces, votes and power, ERC-1271 checks, and calls run as the timelock.

    Reads are contract calls (descriptions come from `ProposalCreated` events, scanned
    once and cached). With `check_code` the address must hold asi-node's DaoGovernor
    (ContractMismatchError otherwise). `_refusal` turns a revert of a Governor
    transaction into the error a caller can act on, for the senders: `ChainGovernor`
    (the node's relay) and `governance.voter.VoterGovernor` (a token holder's own key).
    """

    def __init__(
        self, chain: Chain, governor: str, *, start_block: int = 0, check_code: bool = True
    ) -> None:
        self.chain = chain
        self.contract = chain.contract("DaoGovernor", governor, check_code=check_code)
        self.address = Address(self.contract.address)
        self._domain: GovernorDomain | None = None
        self._descriptions: dict[int, str] = {}
        self._start_block = start_block
        self._scanned = start_block
        self._scan_lock = threading.Lock()
        self._timelock: Address | None = None

    def _read(self, function: str, *args: Any) -> Any:
        call = getattr(self.contract.functions, function)(*args).call
        return self.chain.call(f"reading {function} from the Governor", call)

    def domain(self) -> GovernorDomain:
        if self._domain is None:  # name and version are fixed at construction
            name, version = str(self._read("name")), str(self._read("version"))
            self._domain = GovernorDomain(name, self.chain.chain_id, self.address, version)
        return self._domain

    def timelock(self) -> Address:
        """The timelock that executes proposals (and holds the controller's roles)."""
        if self._timelock is None:
            self._timelock = checksum_address(str(self._read("timelock")))
        return self._timelock

    def proposals(self) -> list[ProposalInfo]:
        descriptions = self._scan_descriptions()
        found = []
        for i in range(int(self._read("proposalCount"))):
            pid, targets, values, calldatas, _ = self._read("proposalDetailsAt", i)
            state = self._state(int(pid))
            if state is not None:
                found.append(
                    self._info(int(pid), state, descriptions, (targets, values, calldatas))
                )
        return found

    def proposal(self, proposal_id: int) -> ProposalInfo | None:
        state = self._state(proposal_id)
        if state is None:
            return None
        targets, values, calldatas, _ = self._read("proposalDetails", proposal_id)
        return self._info(
            proposal_id, state, self._scan_descriptions(), (targets, values, calldatas)
        )

    def nonce(self, voter: str) -> int:
        return int(self._read("nonces", checksum_address(voter)))

    def has_voted(self, proposal_id: int, voter: str) -> bool:
        return bool(self._read("hasVoted", proposal_id, checksum_address(voter)))

    def votes_at(self, voter: str, timepoint: int) -> int:
        return int(self._read("getVotes", checksum_address(voter), timepoint))

    def is_contract(self, address: str) -> bool:
        return len(self.chain.code(checksum_address(address))) > 0

    def erc1271_valid(self, account: str, digest: bytes, signature: bytes) -> bool:
        """`isValidSignature(digest, signature)` on `account` returned the ERC-1271 magic
        value. A revert, or any other answer, is False (fails closed); an endpoint that
        cannot be reached raises ChainError."""
        data = ERC1271_MAGIC + abi_encode(["bytes32", "bytes"], [digest, signature])
        try:
            answer = self.chain.call_as(None, account, data)
        except TransactionRevertedError:
            return False
        # As the Governor's SignatureChecker reads it: the first word is the magic value.
        return answer[:32] == ERC1271_MAGIC.ljust(32, b"\x00")

    def simulate(self, target: str, data: bytes) -> None:
        """The call as the timelock makes it when the proposal executes, run now as an
        eth_call from the timelock: TransactionRevertedError names the revert."""
        self.chain.call_as(self.timelock(), target, data)

    def token(self) -> Address:
        """The voting token (ERC20Votes) whose delegated power the Governor counts."""
        return checksum_address(str(self._read("token")))

    def _state(self, proposal_id: int) -> ProposalState | None:
        try:
            return ProposalState(int(self._read("state", proposal_id)))
        except TransactionRevertedError as exc:
            if _error_name(exc.reason) == "GovernorNonexistentProposal":
                return None
            raise

    def _info(
        self,
        proposal_id: int,
        state: ProposalState,
        descriptions: Mapping[int, str],
        calls: tuple[Any, Any, Any],
    ) -> ProposalInfo:
        against, votes_for, abstain = self._read("proposalVotes", proposal_id)
        snapshot = int(self._read("proposalSnapshot", proposal_id))
        eta = int(self._read("proposalEta", proposal_id))
        try:
            quorum: int | None = int(self._read("quorum", snapshot))
        except TransactionRevertedError:  # the snapshot is not past yet (ERC5805FutureLookup)
            quorum = None
        targets, values, calldatas = calls
        return ProposalInfo(
            proposal_id=proposal_id,
            state=state,
            snapshot=snapshot,
            deadline=int(self._read("proposalDeadline", proposal_id)),
            votes_for=int(votes_for),
            votes_against=int(against),
            votes_abstain=int(abstain),
            description=descriptions.get(proposal_id, ""),
            proposer=str(self._read("proposalProposer", proposal_id)),
            eta=eta or None,
            quorum=quorum,
            targets=tuple(str(t) for t in targets),
            values=tuple(int(v) for v in values),
            calldatas=tuple(bytes(c) for c in calldatas),
        )

    def _scan_descriptions(self) -> dict[int, str]:
        """Proposal id -> description, from the `ProposalCreated` events not read yet (the
        last few blocks again, so an event a reorg moved is still found)."""
        with self._scan_lock:
            head = self.chain.head()
            start = max(self._start_block, self._scanned - REORG_RESCAN_BLOCKS)
            if head >= start:
                logs = self.chain.events(
                    self.contract.events.ProposalCreated(),
                    "reading ProposalCreated events",
                    from_block=start,
                    to_block=head,
                )
                for e in logs:
                    self._descriptions[int(e["args"]["proposalId"])] = str(e["args"]["description"])
                self._scanned = head + 1
            return dict(self._descriptions)

    def _refusal(self, action: str, pid: int, exc: TransactionRevertedError) -> GovernanceError:
        """The Governor's refusal of `action` as the error a caller can act on."""
        name = _error_name(exc.reason)
        if name == "GovernorNonexistentProposal":
            return UnknownProposalError(f"no proposal {pid} on the Governor {self.address}")
        if name == "GovernorInvalidSignature":
            return BadSignatureError(
                f"the Governor refused the ballot's signature ({exc.reason}): it does not "
                "match the voter's current nonce (a replay) or what was signed; sign a new one"
            )
        if name == "GovernorAlreadyCastVote":
            return ReplayError(f"the Governor says the voter has voted on {pid} already")
        if name in ("GovernorUnexpectedProposalState", "TimelockUnexpectedOperationState"):
            return ProposalStateError(self._state_problem(action, pid, exc.reason))
        return exc

    def _state_problem(self, action: str, pid: int, reason: str) -> str:
        try:
            state = self._state(pid)
            if state is None:
                return f"no proposal {pid} on the Governor {self.address}"
            if action in ("castVote", "castVoteBySig"):
                return (
                    f"proposal {pid} is {state.name.lower()}, not active: only an active "
                    "one takes votes"
                )
            if action == "queue":
                return (
                    f"proposal {pid} is {state.name.lower()}: only a succeeded proposal can "
                    "be queued"
                )
            if state is ProposalState.SUCCEEDED:
                return f"proposal {pid} has succeeded but is not queued yet: queue it first"
            if state is ProposalState.QUEUED:
                eta, now = int(self._read("proposalEta", pid)), self.chain.timestamp()
                return (
                    f"proposal {pid} is queued in the timelock until {eta} (chain time now "
                    f"{now}, {max(0, eta - now)} s to go): execute it after that"
                )
            return (
                f"proposal {pid} is {state.name.lower()}: only a queued proposal whose "
                "timelock delay has passed can be executed"
            )
        except ChainError:
            return f"the Governor refused {action} of proposal {pid}: {reason}"


class ChainGovernor(GovernorReader):
    """`governance.ballots.GovernorClient` over the DaoGovernor of a deployment: the
    reads of `GovernorReader`, and `castVoteBySig`, `queue` and `execute` as
    transactions signed with the relayer's key: the relayer pays gas and needs no votes
    (a relayed ballot counts the voter's own power). Each is estimated before it is
    signed, so a call the Governor would refuse raises before anything is sent, as the
    error the API maps to a status: UnknownProposalError, ProposalStateError (not
    active, not succeeded, not queued, the timelock delay not over), BadSignatureError
    or ReplayError; other reverts stay a TransactionRevertedError naming the contract's
    error. The transaction methods return the 0x hash once the transaction is mined.
    Safe to call from several threads: a transaction is signed and broadcast under a
    lock, with the relayer's next nonce counted here (so transactions sent back to back
    never share one, whatever the endpoint's pending count says), and its receipt is
    awaited outside the lock, so a slow block holds up only the caller whose transaction
    is in it. When a receipt does not come in time, the next transaction asks the
    endpoint for the nonce again.
    """

    def __init__(
        self,
        chain: Chain,
        governor: str,
        controller: str,
        relayer_key: bytes,
        *,
        start_block: int = 0,
        check_code: bool = True,
    ) -> None:
        super().__init__(chain, governor, start_block=start_block, check_code=check_code)
        self._controller = Controller(chain, controller, check_code=check_code).address
        self.relayer_key = relayer_key
        self.relayer = address_of(relayer_key)
        self._send_lock = threading.Lock()
        self._next_nonce: int | None = None  # the relayer's, past what it broadcast

    @classmethod
    def from_deployment(
        cls, chain: Chain, deployment: Deployment, relayer_key: bytes
    ) -> ChainGovernor:
        return cls(
            chain,
            deployment.addresses["DaoGovernor"],
            deployment.addresses["CampaignController"],
            relayer_key,
            start_block=deployment.block_number,
        )

    def controller(self) -> str:
        return self._controller

    def relayer_votes(self) -> int:
        """The relayer's own voting power now (it should have none: it only pays gas)."""
        token = self.chain.contract("GovToken", self.token())
        call = token.functions.getVotes(self.relayer).call
        return int(self.chain.call("reading the relayer's votes", call))

    def cast_vote_by_sig(self, ballot: Ballot) -> str:
        call = self.contract.functions.castVoteBySig(
            ballot.proposal_id, ballot.support, checksum_address(ballot.voter), ballot.signature
        )
        return self._send("castVoteBySig", ballot.proposal_id, call)

    def queue(self, proposal_id: int) -> str:
        call = self.contract.get_function_by_signature("queue(uint256)")(proposal_id)
        return self._send("queue", proposal_id, call)

    def execute(self, proposal_id: int) -> str:
        call = self.contract.get_function_by_signature("execute(uint256)")(proposal_id)
        return self._send("execute", proposal_id, call)

    def _send(self, action: str, proposal_id: int, call: Any) -> str:
        try:
            with self._send_lock:  # sign and broadcast only: never wait for a block here
                pending = self.chain.nonce(self.relayer, pending=True)
                nonce = max(pending, self._next_nonce or 0)
                try:
                    signed = self.chain.sign(self.relayer_key, call, nonce=nonce)
                    self.chain.broadcast(signed.raw)
                except NonceError:
                    self._next_nonce = None  # another sender used it: ask the endpoint
                    raise
                self._next_nonce = nonce + 1
            try:
                self.chain.wait(signed.tx_hash)
            except TransactionRevertedError:
                raise
            except ChainError:
                with self._send_lock:  # perhaps dropped: count from the endpoint again
                    self._next_nonce = None
                raise
        except TransactionRevertedError as exc:
            raise self._refusal(action, proposal_id, exc) from exc
        log.info("relayed", extra={"action": action, "tx": "0x" + signed.tx_hash.hex()})
        return "0x" + signed.tx_hash.hex()


class ChainAcker:
    """`node.governed.records.DirectiveAcker` on the controller: sends
    `acknowledge(campaignId, epoch, logEntryHash)` signed with the node's chain key and
    waits until it is mined; returns the 0x transaction hash.

    The node's address must be on the controller's allow-list: otherwise the call raises
    NodeNotApprovedError before anything is sent. An epoch this node acknowledged already
    (a restart after the transaction but before the store noted it) returns the earlier
    acknowledgement's hash instead of failing.
    """

    def __init__(self, controller: Controller, node_key: bytes) -> None:
        self.controller = controller
        self.key = node_key
        self.address = address_of(node_key)

    def check_approved(self) -> None:
        """Raise NodeNotApprovedError unless this node may acknowledge directives."""
        if not self.controller.node_approved(self.address):
            raise self._not_approved()

    def acknowledge(self, campaign_key: bytes, epoch: int, entry_hash: bytes) -> str:
        call = self.controller.acknowledge_call(campaign_key, epoch, entry_hash)
        try:
            receipt = self.controller.chain.send(self.key, call)
        except TransactionRevertedError as exc:
            name = _error_name(exc.reason)
            if name == "NodeNotApproved":
                raise self._not_approved() from exc
            if name == "EpochAlreadyAcknowledged":
                earlier = self.controller.acknowledgements(
                    campaign_key=campaign_key, node=self.address
                )
                for ack in earlier:
                    if ack.epoch == epoch:
                        return "0x" + ack.tx_hash.hex()
            if name == "UnknownCampaign":
                raise TransactionRevertedError(
                    f"campaign {_campaign_label(campaign_key)} is not registered on the "
                    f"CampaignController {self.controller.address}: its directive "
                    f"{epoch} cannot be acknowledged there",
                    exc.reason,
                ) from exc
            raise
        return "0x" + receipt.tx_hash.hex()

    def _not_approved(self) -> NodeNotApprovedError:
        return NodeNotApprovedError(
            f"node address {self.address} is not approved on the CampaignController "
            f"{self.controller.address} ({self.controller.chain.label}), so it cannot "
            "acknowledge directives (it still obeys them); ask governance to approve it "
            "(approveNode)"
        )


def _error_name(reason: str) -> str:
    """`Name` of a decoded custom error `Name(args)`; "" for anything else."""
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\(", reason)
    return match.group(1) if match else ""


def _campaign_label(key: bytes) -> str:
    try:
        return campaign_of_key(key)
    except ValueError:
        return "0x" + key.hex()
