"""The node's own transactions to the governance contracts.

`ChainGovernor` is the Governor behind the `/gov` routes: reads, and ballots, queue and
execute relayed with a relayer key that pays gas and holds no votes. `ChainAcker` sends
the node's acknowledgements of the directives it applied. Both go through
`governance.chain` (the only web3 module) and turn the contracts' reverts into the
errors a caller can act on.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from governance.ballots import Ballot, GovernorDomain, ProposalInfo, ProposalState
from governance.chain import Address, Chain, Controller, Deployment, address_of, checksum_address
from governance.directives import campaign_of_key
from governance.errors import (
    BadSignatureError,
    ChainError,
    GovernanceError,
    NodeNotApprovedError,
    ProposalStateError,
    ReplayError,
    TransactionRevertedError,
    UnknownProposalError,
)

log = logging.getLogger(__name__)

REORG_RESCAN_BLOCKS = 12  # recent blocks read again when scanning events incrementally


class ChainGovernor:
    """`governance.ballots.GovernorClient` over the DaoGovernor of a deployment.

    Reads are contract calls (descriptions come from `ProposalCreated` events, scanned
    once and cached). `castVoteBySig`, `queue` and `execute` are transactions signed with
    the relayer's key: the relayer pays gas and needs no votes (a relayed ballot counts
    the voter's own power). Each is estimated before it is signed, so a call the Governor
    would refuse raises before anything is sent, as the error the API maps to a status:
    UnknownProposalError, ProposalStateError (not active, not succeeded, not queued, the
    timelock delay not over), BadSignatureError or ReplayError; other reverts stay a
    TransactionRevertedError naming the contract's error. The transaction methods return
    the 0x hash once the transaction is mined. Safe to call from several threads.
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
        self.chain = chain
        self.contract = chain.contract("DaoGovernor", governor, check_code=check_code)
        self.address = Address(self.contract.address)
        self._controller = Controller(chain, controller, check_code=check_code).address
        self.relayer_key = relayer_key
        self.relayer = address_of(relayer_key)
        self._domain: GovernorDomain | None = None
        self._descriptions: dict[int, str] = {}
        self._start_block = start_block
        self._scanned = start_block
        self._scan_lock = threading.Lock()
        self._send_lock = threading.Lock()

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

    def _read(self, function: str, *args: Any) -> Any:
        call = getattr(self.contract.functions, function)(*args).call
        return self.chain.call(f"reading {function} from the Governor", call)

    def domain(self) -> GovernorDomain:
        if self._domain is None:  # name and version are fixed at construction
            name, version = str(self._read("name")), str(self._read("version"))
            self._domain = GovernorDomain(name, self.chain.chain_id, self.address, version)
        return self._domain

    def controller(self) -> str:
        return self._controller

    def proposals(self) -> list[ProposalInfo]:
        descriptions = self._scan_descriptions()
        found = []
        for i in range(int(self._read("proposalCount"))):
            pid = int(self._read("proposalDetailsAt", i)[0])
            state = self._state(pid)
            if state is not None:
                found.append(self._info(pid, state, descriptions))
        return found

    def proposal(self, proposal_id: int) -> ProposalInfo | None:
        state = self._state(proposal_id)
        if state is None:
            return None
        return self._info(proposal_id, state, self._scan_descriptions())

    def nonce(self, voter: str) -> int:
        return int(self._read("nonces", checksum_address(voter)))

    def has_voted(self, proposal_id: int, voter: str) -> bool:
        return bool(self._read("hasVoted", proposal_id, checksum_address(voter)))

    def votes_at(self, voter: str, timepoint: int) -> int:
        return int(self._read("getVotes", checksum_address(voter), timepoint))

    def relayer_votes(self) -> int:
        """The relayer's own voting power now (it should have none: it only pays gas)."""
        token = self.chain.contract("GovToken", str(self._read("token")))
        call = token.functions.getVotes(self.relayer).call
        return int(self.chain.call("reading the relayer's votes", call))

    def _state(self, proposal_id: int) -> ProposalState | None:
        try:
            return ProposalState(int(self._read("state", proposal_id)))
        except TransactionRevertedError as exc:
            if _error_name(exc.reason) == "GovernorNonexistentProposal":
                return None
            raise

    def _info(
        self, proposal_id: int, state: ProposalState, descriptions: Mapping[int, str]
    ) -> ProposalInfo:
        against, votes_for, abstain = self._read("proposalVotes", proposal_id)
        return ProposalInfo(
            proposal_id=proposal_id,
            state=state,
            snapshot=int(self._read("proposalSnapshot", proposal_id)),
            deadline=int(self._read("proposalDeadline", proposal_id)),
            votes_for=int(votes_for),
            votes_against=int(against),
            votes_abstain=int(abstain),
            description=descriptions.get(proposal_id, ""),
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
            with self._send_lock:  # one pending nonce at a time for the relayer
                signed = self.chain.sign(self.relayer_key, call)
                self.chain.broadcast(signed.raw)
            self.chain.wait(signed.tx_hash)
        except TransactionRevertedError as exc:
            raise self._refusal(action, proposal_id, exc) from exc
        log.info("relayed", extra={"action": action, "tx": "0x" + signed.tx_hash.hex()})
        return "0x" + signed.tx_hash.hex()

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
            if action == "castVoteBySig":
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
