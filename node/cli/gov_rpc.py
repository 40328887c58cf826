"""`asi-node gov --rpc URL --governor ADDR ...`: governance for a voter with no node.

Nothing here opens, creates or reads a node home: the Governor is read over the RPC
URL (`governance.voter.VoterGovernor`) and transactions are signed with the voter's key
file (a hex private key), which pays their gas. `proposals` and `show` list proposals
with state, votes, quorum and decoded calls; `delegate` delegates the key's votes on the
Governor's token; `vote` sends `castVote` from the key, or prints the EIP-712 ballot for
a browser wallet (`--typed-data`) and takes its signature back (`--signature` with
`--voter`), sent with `castVoteBySig` by a `--key-file` payer or relayed by a node
(`--url`), each ballot checked here first as the relay checks it; `propose` builds a
proposal, runs each call as the timelock would, and sends `propose` from the key (or
prints how to submit it without one); `queue` and `execute` are anyone's to send. The
`gov` commands without `--rpc` go to the node (`node.cli.gov`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli import gov
from node.cli.gov import SUPPORT, GovRequestError

if TYPE_CHECKING:
    from governance.ballots import Ballot, ProposalInfo
    from governance.proposals import ControllerCall
    from governance.voter import VoterGovernor

HOME_ONLY = ("directives", "run", "audit")
NO_CONTROLLER = "0x" + "00" * 20  # decodes no call: every call is listed as raw calldata


def cmd_gov(args: argparse.Namespace) -> int:
    """`gov`: the voter's commands with `--rpc`, the node's (`node.cli.gov`) without."""
    if args.rpc is None:
        if args.governor or args.controller:
            raise GovRequestError("--governor and --controller go with --rpc URL")
        if args.action in ("propose", "queue", "execute") and args.key_file:
            raise GovRequestError(f"gov {args.action} --key-file goes with --rpc URL")
        return gov.cmd_gov(args)
    if args.action in HOME_ONLY:
        raise GovRequestError(
            f"gov {args.action} reads a node's own records: run it without --rpc on the node"
        )
    if not args.governor:
        raise GovRequestError("gov --rpc needs --governor ADDR, the DAO's Governor contract")
    governor = _governor(args)
    if args.action == "proposals":
        return _proposals(governor, args.voter)
    if args.action == "show":
        return _show(governor, gov.proposal_id(args.proposal), args.voter)
    if args.action == "delegate":
        return _delegate(governor, args.to)
    if args.action == "vote":
        return _vote(governor, args)
    if args.action == "propose":
        return _propose(governor, args)
    pid = gov.proposal_id(args.proposal)
    send = governor.queue if args.action == "queue" else governor.execute
    print(f"{args.action} of proposal {pid} sent by {governor.sender}: {send(pid)}")
    return 0


def read_key(path: Path) -> bytes:
    """The private key in a key file (hex, 0x optional); GovRequestError otherwise."""
    from governance.chain import address_of

    try:
        key = bytes.fromhex(path.read_text().strip().removeprefix("0x"))
        if len(key) != 32:
            raise ValueError(f"{len(key)} bytes, not 32")
        address_of(key)  # a valid secp256k1 key: 0 < key < the curve order
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise GovRequestError(f"cannot read a hex private key from {path}: {exc}") from None
    return key


def _governor(args: argparse.Namespace) -> VoterGovernor:
    from governance.chain import Chain
    from governance.voter import VoterGovernor

    key = read_key(args.key_file) if getattr(args, "key_file", None) else None
    chain = Chain.connect(args.rpc)
    return VoterGovernor(chain, args.governor, key=key, controller=args.controller)


def _listing(governor: VoterGovernor, info: ProposalInfo, voter: str | None) -> dict[str, Any]:
    """A proposal as GET /gov/proposals answers it, for `gov.proposal_lines`."""
    from governance.proposals import describe_calls

    body = info.as_json()
    controller = governor.find_controller([info]) or NO_CONTROLLER
    body["calls"] = describe_calls(controller, info.targets, info.values, info.calldatas)
    if voter is not None:
        body["has_voted"] = governor.has_voted(info.proposal_id, voter)
    return body


def _proposals(governor: VoterGovernor, voter: str | None) -> int:
    found = governor.proposals()
    for info in found:
        for line in gov.proposal_lines(_listing(governor, info, voter)):
            print(line)
    print(f"{len(found)} proposal(s) on the Governor {governor.address}")
    return 0


def _known(governor: VoterGovernor, pid: int) -> ProposalInfo:
    from governance.errors import UnknownProposalError

    info = governor.proposal(pid)
    if info is None:
        raise UnknownProposalError(
            f"no proposal {pid} on the Governor {governor.address} (gov proposals lists them)"
        )
    return info


def _show(governor: VoterGovernor, pid: int, voter: str | None) -> int:
    info = _known(governor, pid)
    listed = _listing(governor, info, None)
    print(gov.proposal_lines(listed)[0])
    print(f"proposer {info.proposer}")
    print(
        f"snapshot {info.snapshot}, deadline {info.deadline} (in the Governor's clock, "
        f"blocks or seconds); head block {governor.chain.head()}"
    )
    for call in listed["calls"]:
        print(f"call {gov.call_text(call)} on {call['target']}")
    if voter is not None:
        print(f"{voter} {'voted' if governor.has_voted(pid, voter) else 'has not voted'}")
    print("description:")
    print(info.description)
    return 0


def _delegate(governor: VoterGovernor, to: str | None) -> int:
    sender = governor.sender
    tx = governor.delegate(to)
    delegatee = to or sender
    print(f"{sender} delegated its votes to {delegatee}: {tx}")
    print(
        f"balance {governor.balance_of(sender)}; voting power of {delegatee} now "
        f"{governor.votes(delegatee)} (counted in proposals made from the next block)"
    )
    return 0


def _vote(governor: VoterGovernor, args: argparse.Namespace) -> int:
    from governance.ballots import Ballot

    pid, support = gov.proposal_id(args.proposal), SUPPORT[args.support]
    if args.typed_data and args.signature:
        raise GovRequestError("--typed-data prints a ballot to sign; --signature sends one back")
    if args.typed_data:
        voter = args.voter or (governor.sender if governor.key else None)
        if voter is None:
            raise GovRequestError("--typed-data needs --voter ADDR, the wallet that signs")
        _known(governor, pid)
        nonce = governor.nonce(voter) if args.nonce is None else args.nonce
        unsigned = Ballot(pid, support, _address(voter), nonce, b"")
        print(json.dumps(unsigned.wallet_typed_data(governor.domain()), indent=2))
        return 0
    if args.signature:
        if not args.voter:
            raise GovRequestError("--signature needs --voter ADDR, the wallet that signed")
        nonce = governor.nonce(args.voter) if args.nonce is None else args.nonce
        ballot = Ballot(pid, support, _address(args.voter), nonce, _signature(args.signature))
        return _send_ballot(governor, ballot, args.url)
    if governor.key is None:
        raise GovRequestError(
            "gov --rpc vote needs --key-file (your key sends the vote), or --typed-data to "
            "sign in a wallet and --signature to send its signature back"
        )
    _check_can_vote(governor, pid, governor.sender)
    tx = governor.cast_vote(pid, support)
    return _counted(governor, pid, f"vote {args.support} on {pid} by {governor.sender}", tx)


def _check_can_vote(governor: VoterGovernor, pid: int, voter: str) -> None:
    """What the Governor would count nothing for, said before anything is sent."""
    from governance.ballots import ProposalState
    from governance.errors import NoVotingPowerError, ProposalStateError, ReplayError

    info = _known(governor, pid)
    if info.state is not ProposalState.ACTIVE:
        raise ProposalStateError(
            f"proposal {pid} is {info.state.name.lower()}, not active: only an active one "
            f"takes votes (voting runs from block {info.snapshot + 1} to {info.deadline})"
        )
    if governor.has_voted(pid, voter):
        raise ReplayError(f"{voter} has already voted on {pid}")
    if governor.votes_at(voter, info.snapshot) <= 0:
        raise NoVotingPowerError(
            f"{voter} had no voting power at the proposal's snapshot {info.snapshot}: "
            "delegate (gov delegate) before a proposal is made"
        )


def _send_ballot(governor: VoterGovernor, ballot: Ballot, url: str | None) -> int:
    """A wallet's signed ballot: checked as the relay checks it, then sent by the key
    file's account, or handed to a node's relay."""
    from governance.ballots import BallotRelay

    domain = governor.domain()
    what = f"ballot {ballot.support} on {ballot.proposal_id} by {ballot.voter}"
    if governor.key is not None:
        tx = BallotRelay(governor).relay(ballot, domain.chain_id, domain.verifying_contract)
        return _counted(governor, ballot.proposal_id, f"{what} sent by {governor.sender}", tx)
    if not url:
        raise GovRequestError(
            "--signature is sent with castVoteBySig by a --key-file account (it pays the gas) "
            "or relayed by a node: give --key-file or --url"
        )
    checked = BallotRelay(governor).check(ballot, domain.chain_id, domain.verifying_contract)
    reply = gov.relay_ballot(url, checked, domain)
    return _counted(governor, ballot.proposal_id, f"{what} relayed by {url}", str(reply["tx"]))


def _counted(governor: VoterGovernor, pid: int, what: str, tx: str) -> int:
    info = _known(governor, pid)
    print(f"{what}: {tx}")
    print(
        f"proposal {pid} now: for {info.votes_for} against {info.votes_against} abstain "
        f"{info.votes_abstain} (quorum {info.quorum if info.quorum is not None else '-'})"
    )
    return 0


def _address(text: str) -> str:
    from governance.chain import checksum_address

    return str(checksum_address(text))


def _signature(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        raise GovRequestError(f"--signature {text[:20]!r}... is not 0x hex") from None
    if not raw:
        raise GovRequestError("--signature is empty")
    return raw


def _propose(governor: VoterGovernor, args: argparse.Namespace) -> int:
    from governance.api import simulate_calls
    from governance.proposals import describe_calls, prepare

    calls = _calls(args)
    controller = governor.controller()
    proposer = args.proposer
    prepared = prepare(controller, calls, args.description, proposer=proposer)
    simulated = simulate_calls(governor, prepared, calls)
    described = describe_calls(controller, prepared.targets, prepared.values, prepared.calldatas)
    out = prepared.as_json() | {
        "proposer": prepared.proposer,
        "governor": governor.address,
        "propose_calldata": "0x" + prepared.propose_calldata().hex(),
        "calls": [d | {"simulated": s} for d, s in zip(described, simulated, strict=True)],
    }
    if args.json:
        print(json.dumps(out, indent=2))
    if governor.key is None:
        if not args.json:
            via = f" --rpc {args.rpc} --governor {governor.address}"
            for line in gov.prepared_lines(out, via=via):
                print(line)
        return 0
    tx = governor.propose(prepared)
    info = _known(governor, prepared.proposal_id)
    if not args.json:
        print(f"proposal {prepared.proposal_id} proposed by {governor.sender}: {tx}")
        print(
            f"voting runs from block {info.snapshot + 1} to {info.deadline}; then: asi-node "
            f"gov --rpc {args.rpc} --governor {governor.address} vote {prepared.proposal_id} "
            "for --key-file FILE"
        )
    return 0


def _calls(args: argparse.Namespace) -> list[ControllerCall]:
    """The controller calls of `gov propose KIND ...` from the arguments alone: with no
    node, a campaign is named by its id and hashes are given, not looked up."""
    from governance.proposals import ControllerCall

    kind, subject = args.kind, gov.check_subject(args.kind, args.subject)

    def b32(text: str | None, what: str) -> bytes:
        value = gov.hex32(text, what)
        if value is None:
            raise GovRequestError(f"gov --rpc propose {kind} needs {what}")
        return bytes.fromhex(value[2:])

    if kind in ("pause", "resume", "stop"):
        return [ControllerCall(f"{kind}Campaign", (subject,))]
    if kind in ("pause-all", "unpause-all"):
        return [ControllerCall("pauseAll" if kind == "pause-all" else "unpauseAll")]
    if kind == "register":
        config = b32(args.config_hash, "--config-hash")
        return [ControllerCall("registerCampaign", (subject, config, args.config_uri or ""))]
    if kind == "set-measurement":
        return [ControllerCall("setMeasurement", (b32(subject, "measurement"), not args.remove))]
    if kind == "approve-node":
        zero = "0x" + "00" * 32
        measurement = b32(args.measurement or zero, "--measurement")
        return [ControllerCall("approveNode", (subject, measurement))]
    if kind == "revoke-node":
        return [ControllerCall("revokeNode", (subject,))]
    if not args.child or args.from_tree_size is None:
        raise GovRequestError("gov propose fork needs --child, --from-tree-size and --config-hash")
    fork = ControllerCall(
        "forkCampaign",
        (
            subject,
            args.child,
            b32(args.log_id, "--log-id"),
            args.from_tree_size,
            b32(args.checkpoint_root, "--checkpoint-root"),
            b32(args.config_hash, "--config-hash"),
            args.config_uri or "",
            bool(args.pause_parent),
        ),
    )
    if args.resume_child:
        return [fork, ControllerCall("resumeCampaign", (args.child,))]
    return [fork]
