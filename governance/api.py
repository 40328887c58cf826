"""Governance HTTP routes (`/gov`): campaigns and their directives, proposals, ballots.

The routes relay and report; they never hold voting power and are never the source of
truth (the chain is). Reads of the node's own records go through `GovernanceView`, which
the node implements over its store; the Governor through `GovernorClient`
(`governance.relay.ChainGovernor`). Without a Governor the proposal routes answer 503.
Operator-only routes (queue, execute, pending acknowledgements) need `Authorization:
Bearer <operator token>`.
Governance errors become 4xx with `{"error", "detail"}`; nothing is relayed on an error.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime,
# and their dependency aliases are local to `governance_router`.
import secrets
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, Protocol

from fastapi import APIRouter, Depends, Header, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from governance.ballots import Ballot, BallotRelay, GovernorClient
from governance.directives import DirectiveKind
from governance.errors import GovernanceError, MalformedCallError, UnknownCampaignError
from governance.proposals import DirectiveCall, decode_calls, prepare

UINT256 = 2**256 - 1
_Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$", examples=["0x" + "ab" * 20])]
_Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]
_Uint = Annotated[int, Field(ge=0, le=UINT256)]
_CampaignRef = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[\x21-\x7e]+$")]


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
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="65 bytes, r s v")
    chain_id: int = Field(ge=1, le=2**64)
    verifying_contract: _Address


class PrepareIn(_Body):
    """One controller directive to propose; a fork also names child, position and config."""

    action: DirectiveKind
    campaign: _CampaignRef
    description: str = Field(min_length=1, max_length=10_000)
    child: _CampaignRef | None = None
    from_tree_size: int | None = Field(default=None, ge=1, le=2**64 - 1)
    checkpoint_root: _Hex32 | None = None
    config_hash: _Hex32 | None = None
    config_uri: str = Field(default="", max_length=2_000)
    pause_parent: bool = False


class CheckIn(_Body):
    """A proposal someone built: checked against the controller's directive functions."""

    targets: list[_Address] = Field(min_length=1, max_length=16)
    values: list[_Uint] = Field(min_length=1, max_length=16)
    calldatas: list[Annotated[str, Field(pattern=r"^0x([0-9a-fA-F]{2})*$", max_length=20_000)]] = (
        Field(min_length=1, max_length=16)
    )
    description: str = Field(min_length=1, max_length=10_000)


def _fail(exc: GovernanceError) -> NoReturn:
    status = getattr(exc, "status", 400)
    raise HTTPException(status, {"error": type(exc).__name__, "detail": str(exc)}) from exc


def governance_router(
    view: GovernanceView,
    governor: GovernorClient | None = None,
    operator_token: SecretStr | None = None,
) -> APIRouter:
    """The `/gov` routes over the node's `view` and, when given, the Governor."""
    router = APIRouter(prefix="/gov", tags=["governance"])
    relay = BallotRelay(governor) if governor is not None else None

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

    Operator = Annotated[None, Depends(operator)]
    Chain = Annotated[GovernorClient, Depends(chain)]
    Proposal = Annotated[int, Path(ge=0, le=UINT256)]

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
    def nonce(
        voter: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$")], gov: Chain
    ) -> dict[str, Any]:
        """The voter's current ballot nonce (what the next signed ballot must use)."""
        return {"voter": voter, "nonce": str(gov.nonce(voter))}

    @router.get("/proposals")
    def proposals(gov: Chain) -> list[dict[str, Any]]:
        """Proposals with state, votes and deadlines, as the Governor reports them."""
        return [p.as_json() for p in gov.proposals()]

    @router.get("/proposals/{proposal_id}")
    def proposal(proposal_id: Proposal, gov: Chain) -> dict[str, Any]:
        info = gov.proposal(proposal_id)
        if info is None:
            raise HTTPException(404, f"no proposal {proposal_id} on this Governor")
        return info.as_json()

    @router.post("/proposals/prepare")
    def prepare_proposal(body: PrepareIn, gov: Chain) -> dict[str, Any]:
        """Targets, calldata, description hash and id for the voter's wallet to propose."""
        try:
            if body.action is DirectiveKind.FORK:
                known(body.campaign)
                if body.child is None or body.from_tree_size is None:
                    raise MalformedCallError("a fork names its child and from_tree_size")
                if body.checkpoint_root is None or body.config_hash is None:
                    raise MalformedCallError("a fork names checkpoint_root and config_hash")
                if view.campaign(body.child) is not None:
                    raise MalformedCallError(f"campaign {body.child!r} exists: name a new child")
                call = DirectiveCall(
                    body.action,
                    body.child,
                    body.campaign,
                    body.from_tree_size,
                    bytes.fromhex(body.checkpoint_root[2:]),
                    bytes.fromhex(body.config_hash[2:]),
                    body.config_uri,
                    body.pause_parent,
                )
            else:
                campaign_id = str(known(body.campaign)["id"])
                call = DirectiveCall(body.action, campaign_id)
            prepared = prepare(gov.controller(), [call], body.description)
        except GovernanceError as exc:
            _fail(exc)
        return prepared.as_json() | {"calls": [call.as_json()]}

    @router.post("/proposals/check")
    def check_proposal(body: CheckIn, gov: Chain) -> dict[str, Any]:
        """Decode a proposal's calls; 422 for malformed calldata, 404 for unknown campaigns."""
        try:
            calls = decode_calls(
                gov.controller(),
                body.targets,
                body.values,
                [bytes.fromhex(c[2:]) for c in body.calldatas],
            )
            for call in calls:
                known(
                    call.parent
                    if call.kind is DirectiveKind.FORK and call.parent
                    else call.campaign
                )
            prepared = prepare(gov.controller(), calls, body.description)
        except GovernanceError as exc:
            _fail(exc)
        return prepared.as_json() | {"calls": [c.as_json() for c in calls]}

    @router.post("/ballots", status_code=202)
    def ballot(body: BallotIn, gov: Chain) -> dict[str, Any]:
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
            tx = relay.relay(signed, body.chain_id, body.verifying_contract)
        except GovernanceError as exc:
            _fail(exc)
        return {"relayed": True, "tx": tx, "proposal_id": str(body.proposal_id)}

    def keeper(action: Callable[[int], str], proposal_id: int, want: str) -> dict[str, Any]:
        try:
            tx = action(proposal_id)
        except GovernanceError as exc:
            _fail(exc)
        return {"proposal_id": str(proposal_id), want: True, "tx": tx}

    @router.post("/proposals/{proposal_id}/queue")
    def queue(proposal_id: Proposal, gov: Chain, _: Operator) -> dict[str, Any]:
        """Queue a succeeded proposal in the timelock (operator, as a keeper)."""
        return keeper(gov.queue, proposal_id, "queued")

    @router.post("/proposals/{proposal_id}/execute")
    def execute(proposal_id: Proposal, gov: Chain, _: Operator) -> dict[str, Any]:
        """Execute a queued proposal whose delay has passed (operator, as a keeper)."""
        return keeper(gov.execute, proposal_id, "executed")

    return router
