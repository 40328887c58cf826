"""An SNS governance canister's proposals (sns_governance.did), read through IcpClient.

Candid is decoded without an expected type (ProposalData has dozens of fields and an
open-ended Action variant); fields are then read by their Candid label hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ic.candid import Types, encode
from ic.utils import labelHash

from governance.icp.candid import blob, field, nat, opt, untyped_value
from governance.icp.client import IcpClient
from governance.icp.errors import IcpRejectError, IcpReplyError


@dataclass(frozen=True)
class SnsProposal:
    """The parts of an SNS ProposalData the node acts on."""

    id: int
    title: str
    function_id: int | None  # set for ExecuteGenericNervousSystemFunction proposals
    payload: bytes | None
    decided_s: int
    executed_s: int
    failed_s: int
    certified: bool  # read through an update call whose reply the IC certified


def _proposal(data: Any, certified: bool) -> SnsProposal:
    what = "ProposalData"
    pid = opt(field(data, "id", what), "ProposalData.id")
    if pid is None:
        raise IcpReplyError("ProposalData has no id")
    proposal = opt(field(data, "proposal", what), "ProposalData.proposal")
    title, function_id, payload = "", None, None
    if proposal is not None:
        title = str(field(proposal, "title", "Proposal"))
        action = opt(field(proposal, "action", "Proposal"), "Proposal.action")
        generic = f"_{labelHash('ExecuteGenericNervousSystemFunction')}"
        if isinstance(action, dict) and generic in action:
            call = action[generic]
            function_id = nat(field(call, "function_id", "generic function"), "function_id")
            payload = blob(field(call, "payload", "generic function"), "payload")
    return SnsProposal(
        id=nat(field(pid, "id", "ProposalId"), "ProposalId.id"),
        title=title,
        function_id=function_id,
        payload=payload,
        decided_s=nat(field(data, "decided_timestamp_seconds", what), "decided"),
        executed_s=nat(field(data, "executed_timestamp_seconds", what), "executed"),
        failed_s=nat(field(data, "failed_timestamp_seconds", what), "failed"),
        certified=certified,
    )


_PROPOSAL_ID = Types.Record({"id": Types.Nat64})


class SnsGovernance:
    """Reads an SNS governance canister's proposals (sns_governance.did)."""

    def __init__(self, client: IcpClient, canister_id: bytes) -> None:
        self.client = client
        self.canister_id = canister_id

    def list_proposals(self, limit: int = 50, before: int | None = None) -> list[SnsProposal]:
        """Newest first, by query (fast, uncertified)."""
        # include_topics is an opt field and left out: Candid reads it as null.
        kind = Types.Record(
            {
                "include_reward_status": Types.Vec(Types.Int32),
                "before_proposal": Types.Opt(_PROPOSAL_ID),
                "limit": Types.Nat32,
                "exclude_type": Types.Vec(Types.Nat64),
                "include_status": Types.Vec(Types.Int32),
            }
        )
        value = {
            "include_reward_status": [],
            "before_proposal": [] if before is None else [{"id": before}],
            "limit": limit,
            "exclude_type": [],
            "include_status": [],
        }
        reply = self.client.query(
            self.canister_id, "list_proposals", encode([{"type": kind, "value": value}])
        )
        response = untyped_value(reply.arg, "list_proposals reply")
        proposals = field(response, "proposals", "ListProposalsResponse")
        if not isinstance(proposals, list):
            raise IcpReplyError("ListProposalsResponse.proposals is not a vector")
        return [_proposal(p, certified=False) for p in proposals]

    def get_proposal(self, proposal_id: int, *, certified: bool) -> SnsProposal:
        """One proposal; with `certified` through an update call, whose reply the IC
        certifies (the node requires that before acting on a resume or a fork)."""
        kind = Types.Record({"proposal_id": Types.Opt(_PROPOSAL_ID)})
        arg = encode([{"type": kind, "value": {"proposal_id": [{"id": proposal_id}]}}])
        if certified:
            reply = self.client.call(self.canister_id, "get_proposal", arg)
        else:
            reply = self.client.query(self.canister_id, "get_proposal", arg)
        response = untyped_value(reply.arg, "get_proposal reply")
        result = opt(field(response, "result", "GetProposalResponse"), "result")
        if not isinstance(result, dict) or len(result) != 1:
            raise IcpReplyError(f"get_proposal {proposal_id}: no result")
        error = result.get(f"_{labelHash('Error')}")
        if error is not None:
            message = field(error, "error_message", "GovernanceError")
            raise IcpRejectError(f"get_proposal {proposal_id}: {message}")
        data = result.get(f"_{labelHash('Proposal')}")
        if data is None:
            raise IcpReplyError(f"get_proposal {proposal_id}: unexpected result variant")
        return _proposal(data, certified=certified)


def decode_directive_payload(payload: bytes) -> tuple[str, str, bytes | None]:
    """(campaign id, directive name, fork config SHA-256) from a generic-function payload:
    Candid `record { campaign_id : text; directive : text; config_sha256 : opt blob }`."""
    value = untyped_value(payload, "directive payload")
    campaign = field(value, "campaign_id", "directive payload")
    directive = field(value, "directive", "directive payload")
    config = opt(field(value, "config_sha256", "directive payload"), "config_sha256")
    if not isinstance(campaign, str) or not isinstance(directive, str):
        raise IcpReplyError("directive payload: campaign_id and directive must be text")
    return campaign, directive, None if config is None else blob(config, "config_sha256")


def encode_directive_payload(
    campaign_id: str, directive: str, config_sha256: bytes | None
) -> bytes:
    """The payload a proposer puts in the SNS proposal (the inverse of the decoder)."""
    kind = Types.Record(
        {
            "campaign_id": Types.Text,
            "directive": Types.Text,
            "config_sha256": Types.Opt(Types.Vec(Types.Nat8)),
        }
    )
    value = {
        "campaign_id": campaign_id,
        "directive": directive,
        "config_sha256": [] if config_sha256 is None else [config_sha256],
    }
    return bytes(encode([{"type": kind, "value": value}]))
