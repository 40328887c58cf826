"""Governance HTTP routes (`/gov`): campaigns and their directives, proposals, ballots.

The routes relay and report; they never hold voting power and are never the source of
truth (the chain is). Reads of the node's own records go through `GovernanceView`, which
the node implements over its store; the Governor through `GovernorClient`
(`governance.relay.ChainGovernor`). Without a Governor the proposal routes answer 503.
Operator-only routes (queue, execute, pending acknowledgements) need `Authorization:
Bearer <operator token>`.

Proposals are listed with their calls decoded (the controller function and readable
arguments), proposer, state, quorum at the snapshot, votes, deadline, the timelock's
ETA once queued, and whether a given voter voted. `prepare` builds a proposal for any
controller governance function and runs each call as the timelock would (an eth_call
from its address) before anyone signs: a call the controller would revert is refused
(409, naming the revert). Ballots and keeper calls are rate-limited per voter and per
client address (429 with Retry-After; `RelayLimits`).
Governance errors become 4xx with `{"error", "detail"}`; nothing is relayed on an error.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime,
# and their dependency aliases are local to `governance_router`.
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, NoReturn, Protocol

from eth_utils.address import to_checksum_address
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from governance.ballots import (
    Ballot,
    BallotRelay,
    GovernorClient,
    ProposalInfo,
    RateLimitedError,
    RelayLimits,
    TokenBuckets,
)
from governance.errors import (
    GovernanceError,
    MalformedCallError,
    TransactionRevertedError,
    UnknownCampaignError,
)
from governance.proposals import (
    ArgKind,
    ControllerCall,
    Prepared,
    decode_controller_calls,
    describe_calls,
    prepare,
)

UINT256 = 2**256 - 1
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
_Address = Annotated[str, Field(pattern=ADDRESS_PATTERN, examples=["0x" + "ab" * 20])]
_Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]
_Uint = Annotated[int, Field(ge=0, le=UINT256)]
_CampaignRef = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[\x21-\x7e]+$")]
_Description = Annotated[str, Field(min_length=1, max_length=10_000)]


class GovernanceView(Protocol):
    """The node's records the routes show; `campaign` returns None for an unknown id."""

    def campaigns(self) -> list[dict[str, Any]]: ...

    def campaign(self, campaign_ref: str) -> dict[str, Any] | None: ...

    def unacknowledged(self) -> list[dict[str, Any]]: ...


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BallotIn(_Body):
    """An EIP-712 `Ballot` signed by the voter, with the domain it was signed under."""

    proposal_id: _Uint
    support: int = Field(ge=0, le=2, description="0 against, 1 for, 2 abstain")
    voter: _Address
    nonce: _Uint
    signature: str = Field(
        pattern=r"^0x([0-9a-fA-F]{2}){65,2048}$",
        description="an account's 65 bytes r s v (v 27/28 or 0/1), or what a smart-contract "
        "wallet's ERC-1271 isValidSignature takes (a Safe: its owners' signatures)",
    )
    chain_id: int = Field(ge=1, le=2**64)
    verifying_contract: _Address


class _PrepareBase(_Body):
    description: _Description
    proposer: _Address | None = Field(
        default=None,
        description="the address that will submit the proposal: the description gets "
        "OpenZeppelin's #proposer= suffix, and the Governor refuses it from anyone else",
    )


class DirectivePrepareIn(_PrepareBase):
    """Pause, resume or stop one of this node's campaigns."""

    action: Literal["pause", "resume", "stop"]
    campaign: _CampaignRef


class RegisterPrepareIn(_PrepareBase):
    """Register a campaign: one of this node's (its config hash is the node's unless
    given), or another's by its id with `config_hash`."""

    action: Literal["register"]
    campaign: _CampaignRef
    config_hash: _Hex32 | None = None
    config_uri: str = Field(default="", max_length=2_000)


class ForkPrepareIn(_PrepareBase):
    """Fork one of this node's campaigns into a new child from an anchored checkpoint of
    log `log_id` (the controller's `logIdOf(node, logName)`); the child starts paused,
    and `resume_child` resumes it in the same proposal."""

    action: Literal["fork"]
    campaign: _CampaignRef = Field(description="the parent")
    child: _CampaignRef
    log_id: _Hex32
    from_tree_size: int = Field(ge=1, le=2**64 - 1)
    checkpoint_root: _Hex32
    config_hash: _Hex32
    config_uri: str = Field(default="", max_length=2_000)
    pause_parent: bool = False
    resume_child: bool = False


class GlobalPrepareIn(_PrepareBase):
    """Pause every campaign, or lift that global pause."""

    action: Literal["pause_all", "unpause_all"]


class MeasurementPrepareIn(_PrepareBase):
    """Approve a TEE measurement, or remove it (its nodes are suspended)."""

    action: Literal["set_measurement"]
    measurement: _Hex32
    approved: bool = True


class ApproveNodePrepareIn(_PrepareBase):
    """Approve a node's chain address, under a TEE measurement (zero: none)."""

    action: Literal["approve_node"]
    node: _Address
    measurement: _Hex32 = "0x" + "00" * 32


class RevokeNodePrepareIn(_PrepareBase):
    action: Literal["revoke_node"]
    node: _Address


PrepareIn = Annotated[
    DirectivePrepareIn
    | RegisterPrepareIn
    | ForkPrepareIn
    | GlobalPrepareIn
    | MeasurementPrepareIn
    | ApproveNodePrepareIn
    | RevokeNodePrepareIn,
    Field(discriminator="action"),
]
FUNCTION_OF = {
    "pause": "pauseCampaign",
    "resume": "resumeCampaign",
    "stop": "stopCampaign",
    "pause_all": "pauseAll",
    "unpause_all": "unpauseAll",
}


class CheckIn(_Body):
    """A proposal someone built: checked against the controller's governance functions."""

    targets: list[_Address] = Field(min_length=1, max_length=16)
    values: list[_Uint] = Field(min_length=1, max_length=16)
    calldatas: list[Annotated[str, Field(pattern=r"^0x([0-9a-fA-F]{2})*$", max_length=20_000)]] = (
        Field(min_length=1, max_length=16)
    )
    description: _Description


class CallOut(BaseModel):
    """One call of a proposal. A controller governance call has its `function` and
    readable `args` (campaign ids decoded from their bytes32 keys, hashes as 0x hex,
    addresses checksummed); a directive also its `kind` and `campaign` (a fork's child).
    Another call keeps `function` null and says why in `error`. `simulated`: whether it
    was run as the timelock before preparing (a call on what an earlier call of the same
    proposal creates or changes is not: it runs on that call's result)."""

    target: str
    value: str
    calldata: str
    function: str | None = None
    signature: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    kind: str | None = None
    campaign: str | None = None
    error: str | None = None
    simulated: bool | None = None


class VotesOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    for_: str = Field(alias="for")
    against: str
    abstain: str


class ProposalOut(BaseModel):
    """A proposal as the Governor reports it. `snapshot` and `deadline` are in the
    Governor's clock units (block numbers or timestamps); `eta` is when the timelock lets
    it execute (seconds), once queued; `quorum` the votes (for and abstain) it needs, at
    its snapshot (null until the snapshot is past); `has_voted` answers for the `voter`
    query parameter (null without one)."""

    proposal_id: str
    state: str
    proposer: str | None
    snapshot: int
    deadline: int
    eta: int | None
    quorum: str | None
    votes: VotesOut
    description: str
    calls: list[CallOut]
    has_voted: bool | None = None


class PreparedOut(BaseModel):
    """What the voter's wallet sends: `propose(targets, values, calldatas, description)`
    to the Governor at `governor` (`propose_calldata` is that call's data, for a wallet
    that takes raw data); `proposal_id` is the id it will have."""

    targets: list[str]
    values: list[str]
    calldatas: list[str]
    description: str
    description_hash: str
    proposal_id: str
    proposer: str | None
    governor: str
    propose_calldata: str
    calls: list[CallOut]


class RelayedOut(BaseModel):
    relayed: bool
    tx: str
    proposal_id: str


class KeeperOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # `queued` or `executed`

    proposal_id: str
    tx: str


def _fail(exc: GovernanceError) -> NoReturn:
    status = getattr(exc, "status", 400)
    headers = None
    if isinstance(exc, RateLimitedError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    detail = {"error": type(exc).__name__, "detail": str(exc)}
    raise HTTPException(status, detail, headers=headers) from exc


def _client(request: Request) -> str:
    # The peer's address: behind a reverse proxy every client shares the proxy's bucket.
    return request.client.host if request.client is not None else "unknown"


def _hash_bytes(text: str, what: str) -> bytes:
    """A 32-byte hash given as 0x hex or as the store's "sha256:<hex>"."""
    raw = text.removeprefix("0x").removeprefix("sha256:")
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        raise MalformedCallError(f"the {what} {text!r} is not 32 bytes of hex") from None
    if len(value) != 32:
        raise MalformedCallError(f"the {what} {text!r} is not 32 bytes of hex")
    return value


def _scope(call: ControllerCall) -> set[str]:
    """What state of the controller a call reads and changes (to tell which calls of a
    proposal depend on earlier ones)."""
    names = {f"campaign:{c}" for c in call.campaigns()}
    if call.function in ("pauseAll", "unpauseAll"):
        names.add("global")
    for param, value in zip(call.params, call.args, strict=True):
        if param.kind is ArgKind.ADDRESS:
            names.add(f"node:{str(value).lower()}")
        elif param.name == "measurement" and value != bytes(32):  # zero: no TEE, no state
            names.add(f"measurement:{bytes(value).hex()}")
    return names


def simulate_calls(
    gov: GovernorClient, prepared: Prepared, calls: Sequence[ControllerCall]
) -> list[bool]:
    """Run each call of the proposal as the timelock would; TransactionRevertedError
    (409) names the first that the controller would revert. A call on state an earlier
    call of the proposal touches (a fork's child resumed after the fork) runs on that
    call's result, which an eth_call on today's state cannot show: it is not run, and
    the answer says so (False)."""
    touched: set[str] = set()
    ran = []
    for i, (call, data) in enumerate(zip(calls, prepared.calldatas, strict=True)):
        scope = _scope(call)
        if scope & touched:
            ran.append(False)
        else:
            try:
                gov.simulate(prepared.targets[i], data)
            except TransactionRevertedError as exc:
                raise TransactionRevertedError(
                    f"call {i}, {call.function}({_args_text(call)}), would revert when the "
                    f"timelock executes it: the controller answers {exc.reason} (as of the "
                    "latest block); nothing was prepared",
                    exc.reason,
                ) from exc
            ran.append(True)
        touched |= scope
    return ran


def _args_text(call: ControllerCall) -> str:
    return ", ".join(f"{k}={v}" for k, v in call.readable().items())


def _calls_out(
    controller: str,
    targets: Sequence[str],
    values: Sequence[int],
    calldatas: Sequence[bytes],
    simulated: Sequence[bool] | None = None,
) -> list[CallOut]:
    described = describe_calls(controller, targets, values, calldatas)
    if simulated is not None:
        described = [d | {"simulated": s} for d, s in zip(described, simulated, strict=True)]
    return [CallOut.model_validate(d) for d in described]


def _proposal_out(gov: GovernorClient, info: ProposalInfo, voter: str | None) -> ProposalOut:
    body = info.as_json()
    body["calls"] = _calls_out(gov.controller(), info.targets, info.values, info.calldatas)
    if voter is not None:
        body["has_voted"] = gov.has_voted(info.proposal_id, voter)
    return ProposalOut.model_validate(body)


def governance_router(
    view: GovernanceView,
    governor: GovernorClient | None = None,
    operator_token: SecretStr | None = None,
    *,
    limits: RelayLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> APIRouter:
    """The `/gov` routes over the node's `view` and, when given, the Governor.

    `limits` caps how often the relay spends gas per voter and per client address
    (default `RelayLimits()`; a rate of 0 per minute turns that limit off)."""
    router = APIRouter(prefix="/gov", tags=["governance"])
    limits = limits if limits is not None else RelayLimits()
    relay = (
        BallotRelay(governor, per_voter=limits.per_voter, clock=clock)
        if governor is not None
        else None
    )
    ballot_clients = TokenBuckets(limits.per_client, "ballots", clock)
    keeper_clients = TokenBuckets(limits.keeper_per_client, "keeper calls", clock)

    def operator(authorization: Annotated[str | None, Header()] = None) -> None:
        if operator_token is None:
            raise HTTPException(403, "operator routes are off: set api.operator_token")
        given = (authorization or "").removeprefix("Bearer ").strip()
        expected = operator_token.get_secret_value()
        if not given or not secrets.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "a valid operator bearer token is required")

    def chain() -> GovernorClient:
        if governor is None:
            raise HTTPException(503, "this node has no Governor configured (no chain client)")
        return governor

    def known(ref: str) -> dict[str, Any]:
        found = view.campaign(ref)
        if found is None:
            _fail(UnknownCampaignError(f"no campaign {ref!r} on this node"))
        return found

    def calls_of(body: PrepareIn) -> list[ControllerCall]:
        if isinstance(body, DirectivePrepareIn):
            return [ControllerCall(FUNCTION_OF[body.action], (str(known(body.campaign)["id"]),))]
        if isinstance(body, GlobalPrepareIn):
            return [ControllerCall(FUNCTION_OF[body.action])]
        if isinstance(body, RegisterPrepareIn):
            return [register_call(body)]
        if isinstance(body, ForkPrepareIn):
            parent = str(known(body.campaign)["id"])
            if view.campaign(body.child) is not None:
                raise MalformedCallError(f"campaign {body.child!r} exists: name a new child")
            fork = ControllerCall(
                "forkCampaign",
                (
                    parent,
                    body.child,
                    _hash_bytes(body.log_id, "log id"),
                    body.from_tree_size,
                    _hash_bytes(body.checkpoint_root, "checkpoint root"),
                    _hash_bytes(body.config_hash, "config hash"),
                    body.config_uri,
                    body.pause_parent,
                ),
            )
            if body.resume_child:
                return [fork, ControllerCall("resumeCampaign", (body.child,))]
            return [fork]
        if isinstance(body, MeasurementPrepareIn):
            measurement = _hash_bytes(body.measurement, "measurement")
            return [ControllerCall("setMeasurement", (measurement, body.approved))]
        if isinstance(body, ApproveNodePrepareIn):
            measurement = _hash_bytes(body.measurement, "measurement")
            return [ControllerCall("approveNode", (body.node, measurement))]
        return [ControllerCall("revokeNode", (body.node,))]

    def register_call(body: RegisterPrepareIn) -> ControllerCall:
        local = view.campaign(body.campaign)
        given = _hash_bytes(body.config_hash, "config hash") if body.config_hash else None
        if local is None:
            if given is None:
                raise UnknownCampaignError(
                    f"no campaign {body.campaign!r} on this node: to register another "
                    "node's campaign, give its id and config_hash"
                )
            return ControllerCall("registerCampaign", (body.campaign, given, body.config_uri))
        mine = _hash_bytes(str(local["config_hash"]), "config hash")
        if given is not None and given != mine:
            raise MalformedCallError(
                f"campaign {local['id']} has config hash 0x{mine.hex()} on this node, not "
                f"0x{given.hex()}: nodes run it only under the hash registered"
            )
        return ControllerCall("registerCampaign", (str(local["id"]), mine, body.config_uri))

    def prepared_out(
        gov: GovernorClient, prepared: Prepared, simulated: Sequence[bool]
    ) -> PreparedOut:
        return PreparedOut.model_validate(
            prepared.as_json()
            | {
                "proposer": prepared.proposer,
                "governor": gov.domain().verifying_contract,
                "propose_calldata": "0x" + prepared.propose_calldata().hex(),
                "calls": _calls_out(
                    gov.controller(),
                    prepared.targets,
                    prepared.values,
                    prepared.calldatas,
                    simulated,
                ),
            }
        )

    Operator = Annotated[None, Depends(operator)]
    Chain = Annotated[GovernorClient, Depends(chain)]
    Proposal = Annotated[int, Path(ge=0, le=UINT256)]
    Voter = Annotated[
        str | None, Query(pattern=ADDRESS_PATTERN, description="answer has_voted for it")
    ]

    @router.get("/campaigns")
    def campaigns() -> list[dict[str, Any]]:
        """Every campaign with its status, epochs per source, lineage and directives."""
        return view.campaigns()

    @router.get("/campaigns/{campaign_ref}")
    def campaign(campaign_ref: str) -> dict[str, Any]:
        return known(campaign_ref)

    @router.get("/acknowledgements/pending", dependencies=[Depends(operator)])
    def pending() -> list[dict[str, Any]]:
        """Applied directives not yet acknowledged on-chain (operator only)."""
        return view.unacknowledged()

    @router.get("/domain")
    def domain(gov: Chain) -> dict[str, Any]:
        """The EIP-712 domain ballots must be signed under."""
        return gov.domain().as_json()

    @router.get("/voters/{voter}/nonce")
    def nonce(voter: Annotated[str, Path(pattern=ADDRESS_PATTERN)], gov: Chain) -> dict[str, Any]:
        """The voter's current ballot nonce (what the next signed ballot must use)."""
        return {"voter": voter, "nonce": str(gov.nonce(voter))}

    @router.get("/proposals")
    def proposals(gov: Chain, voter: Voter = None) -> list[ProposalOut]:
        """Proposals with their decoded calls, proposer, state, votes, quorum, deadline
        and ETA, as the Governor reports them."""
        return [_proposal_out(gov, p, voter) for p in gov.proposals()]

    @router.get("/proposals/{proposal_id}")
    def proposal(proposal_id: Proposal, gov: Chain, voter: Voter = None) -> ProposalOut:
        info = gov.proposal(proposal_id)
        if info is None:
            raise HTTPException(404, f"no proposal {proposal_id} on this Governor")
        return _proposal_out(gov, info, voter)

    @router.get("/proposals/{proposal_id}/ballot")
    def ballot_to_sign(
        proposal_id: Proposal,
        voter: Annotated[str, Query(pattern=ADDRESS_PATTERN, description="who signs")],
        gov: Chain,
        support: Annotated[int, Query(ge=0, le=2, description="0 against, 1 for, 2 abstain")] = 1,
        nonce: Annotated[int | None, Query(ge=0, le=UINT256)] = None,
    ) -> dict[str, Any]:
        """The voter's unsigned ballot as EIP-712 typed data for a wallet's
        `eth_signTypedData_v4` (uint256 values as decimal strings): the message the relay
        checks a signature of at POST /gov/ballots. `nonce` defaults to the voter's
        current one."""
        if gov.proposal(proposal_id) is None:
            raise HTTPException(404, f"no proposal {proposal_id} on this Governor")
        nonce = gov.nonce(voter) if nonce is None else nonce
        unsigned = Ballot(proposal_id, support, to_checksum_address(voter), nonce, b"")
        return unsigned.wallet_typed_data(gov.domain())

    @router.post("/proposals/prepare")
    def prepare_proposal(body: PrepareIn, gov: Chain) -> PreparedOut:
        """Targets, calldata, description hash and id for the voter's wallet to propose,
        after each call ran as the timelock would run it (409 if it would revert)."""
        try:
            calls = calls_of(body)
            prepared = prepare(gov.controller(), calls, body.description, proposer=body.proposer)
            simulated = simulate_calls(gov, prepared, calls)
        except GovernanceError as exc:
            _fail(exc)
        return prepared_out(gov, prepared, simulated)

    @router.post("/proposals/check")
    def check_proposal(body: CheckIn, gov: Chain) -> PreparedOut:
        """Decode a proposal's calls and run them as the timelock: 422 for malformed
        calldata, 404 for a directive on a campaign this node does not know, 409 for a
        call the controller would revert."""
        try:
            calls = decode_controller_calls(
                gov.controller(),
                body.targets,
                body.values,
                [bytes.fromhex(c[2:]) for c in body.calldatas],
            )
            for call in calls:
                directive = call.directive()
                if directive is not None:
                    known(directive.parent or directive.campaign)
            prepared = prepare(gov.controller(), calls, body.description)
            simulated = simulate_calls(gov, prepared, calls)
        except GovernanceError as exc:
            _fail(exc)
        return prepared_out(gov, prepared, simulated)

    @router.post("/ballots", status_code=202)
    def ballot(body: BallotIn, request: Request, gov: Chain) -> RelayedOut:
        """Relay a signed ballot through `castVoteBySig` after checking it."""
        assert relay is not None
        signed = Ballot(
            body.proposal_id,
            body.support,
            body.voter,
            body.nonce,
            bytes.fromhex(body.signature[2:]),
        )
        try:
            ballot_clients.take(_client(request))
            tx = relay.relay(signed, body.chain_id, body.verifying_contract)
        except GovernanceError as exc:
            _fail(exc)
        return RelayedOut(relayed=True, tx=tx, proposal_id=str(body.proposal_id))

    def keeper(
        action: Callable[[int], str], proposal_id: int, want: str, request: Request
    ) -> KeeperOut:
        try:
            keeper_clients.take(_client(request))
            tx = action(proposal_id)
        except GovernanceError as exc:
            _fail(exc)
        return KeeperOut.model_validate({"proposal_id": str(proposal_id), want: True, "tx": tx})

    @router.post("/proposals/{proposal_id}/queue")
    def queue(proposal_id: Proposal, request: Request, gov: Chain, _: Operator) -> KeeperOut:
        """Queue a succeeded proposal in the timelock (operator, as a keeper)."""
        return keeper(gov.queue, proposal_id, "queued", request)

    @router.post("/proposals/{proposal_id}/execute")
    def execute(proposal_id: Proposal, request: Request, gov: Chain, _: Operator) -> KeeperOut:
        """Execute a queued proposal whose delay has passed (operator, as a keeper)."""
        return keeper(gov.execute, proposal_id, "executed", request)

    return router
