"""SNS proposals become directives: mapping, payload checks, certified resume, paging."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from ic.candid import Types, decode, encode

sys.path.insert(0, str(Path(__file__).parent))

from icp_replica import ROOT_KEY_DER, Replica, Server

from attestation.icp.principal import from_text
from governance.icp import (
    HttpTransport,
    IcpClient,
    NodeIdentity,
    SnsGovernance,
    SnsProposal,
    encode_directive_payload,
)
from governance.sns import DirectiveKind, SnsDirectiveSource, most_restrictive

FUNCTIONS = {
    1001: DirectiveKind.PAUSE,
    1002: DirectiveKind.RESUME,
    1003: DirectiveKind.STOP,
    1004: DirectiveKind.FORK,
}
KIND_FUNCTION = {kind: fid for fid, kind in FUNCTIONS.items()}
CONFIG = hashlib.sha256(b"child config").digest()


def proposal(
    pid: int, kind: DirectiveKind | None, *, executed: int = 100, **kw: Any
) -> SnsProposal:
    payload = None
    if kind is not None:
        config = CONFIG if kind is DirectiveKind.FORK else None
        payload = encode_directive_payload("camp-1", kind.value, config)
    base = SnsProposal(
        id=pid,
        title=f"p{pid}",
        function_id=None if kind is None else KIND_FUNCTION[kind],
        payload=payload,
        decided_s=90 if executed else 0,
        executed_s=executed,
        failed_s=0,
        certified=False,
    )
    return replace(base, **kw)


class FakeReader:
    def __init__(self, proposals: list[SnsProposal]) -> None:
        self.proposals = {p.id: p for p in proposals}
        self.certified_reads: list[int] = []
        self.tamper: bytes | None = None

    def list_proposals(self, limit: int = 50, before: int | None = None) -> list[SnsProposal]:
        ids = sorted((i for i in self.proposals if before is None or i < before), reverse=True)
        return [self.proposals[i] for i in ids[:limit]]

    def get_proposal(self, proposal_id: int, *, certified: bool) -> SnsProposal:
        self.certified_reads.append(proposal_id)
        found = replace(self.proposals[proposal_id], certified=certified)
        return replace(found, payload=self.tamper) if self.tamper else found


def test_executed_directive_proposals_become_directives_in_order() -> None:
    reader = FakeReader(
        [
            proposal(1, DirectiveKind.PAUSE),
            proposal(2, None, title="a motion"),
            proposal(3, DirectiveKind.RESUME),
            proposal(4, DirectiveKind.FORK),
        ]
    )
    source = SnsDirectiveSource(reader, FUNCTIONS, page=2)
    directives = source.poll()
    assert [(d.proposal_id, d.kind) for d in directives] == [
        (1, DirectiveKind.PAUSE),
        (3, DirectiveKind.RESUME),
        (4, DirectiveKind.FORK),
    ]
    assert directives[0].certified is False  # a pause applies from the query at once
    assert directives[1].certified and directives[2].certified
    assert reader.certified_reads == [3, 4]
    assert directives[2].config_sha256 == CONFIG
    assert (
        directives[0].payload_sha256 == hashlib.sha256(reader.proposals[1].payload or b"").digest()
    )
    assert source.poll() == []
    assert source.floor == 4


def test_open_proposal_is_picked_up_once_executed() -> None:
    reader = FakeReader([proposal(1, DirectiveKind.STOP, executed=0), proposal(2, None)])
    source = SnsDirectiveSource(reader, FUNCTIONS)
    assert source.poll() == []
    assert source.floor == 0
    reader.proposals[1] = proposal(1, DirectiveKind.STOP)
    assert [d.kind for d in source.poll()] == [DirectiveKind.STOP]
    assert source.floor == 2


def test_resume_whose_certified_payload_differs_is_refused() -> None:
    reader = FakeReader([proposal(1, DirectiveKind.RESUME)])
    reader.tamper = encode_directive_payload("camp-2", "resume", None)
    source = SnsDirectiveSource(reader, FUNCTIONS)
    assert source.poll() == []
    assert "certified payload differs" in source.rejected[0].reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"DIDL garbage", "payload"),
        (encode_directive_payload("camp-1", "stop", None), "payload says stop"),
        (encode_directive_payload("", "pause", None), "no campaign"),
    ],
)
def test_bad_payloads_are_refused_with_the_reason(payload: bytes, reason: str) -> None:
    reader = FakeReader([proposal(1, DirectiveKind.PAUSE, payload=payload)])
    source = SnsDirectiveSource(reader, FUNCTIONS)
    assert source.poll() == []
    assert reason in source.rejected[0].reason


def test_fork_without_config_hash_is_refused() -> None:
    payload = encode_directive_payload("camp-1", "fork", None)
    reader = FakeReader([proposal(1, DirectiveKind.FORK, payload=payload)])
    source = SnsDirectiveSource(reader, FUNCTIONS)
    assert source.poll() == []
    assert "32-byte SHA-256" in source.rejected[0].reason


def test_empty_function_map_is_an_error() -> None:
    with pytest.raises(ValueError, match="no SNS function ids"):
        SnsDirectiveSource(FakeReader([]), {})


def test_most_restrictive_signal_wins() -> None:
    kinds = [DirectiveKind.RESUME, DirectiveKind.PAUSE, DirectiveKind.FORK]
    assert most_restrictive(kinds) is DirectiveKind.PAUSE
    assert most_restrictive([*kinds, DirectiveKind.STOP]) is DirectiveKind.STOP
    assert most_restrictive([]) is None


# Types from sns_governance.did (a subset of ProposalData's fields plus a few the node
# ignores, so the untyped decoding has to skip them).
GENERIC = Types.Record({"function_id": Types.Nat64, "payload": Types.Vec(Types.Nat8)})
ACTION = Types.Variant(
    {
        "Motion": Types.Record({"motion_text": Types.Text}),
        "ExecuteGenericNervousSystemFunction": GENERIC,
        "RemoveGenericNervousSystemFunction": Types.Nat64,
    }
)
PROPOSAL = Types.Record(
    {"url": Types.Text, "title": Types.Text, "action": Types.Opt(ACTION), "summary": Types.Text}
)
BALLOT = Types.Record(
    {"vote": Types.Int32, "cast_timestamp_seconds": Types.Nat64, "voting_power": Types.Nat64}
)
TALLY = Types.Record(
    {"no": Types.Nat64, "yes": Types.Nat64, "total": Types.Nat64, "timestamp_seconds": Types.Nat64}
)
PROPOSAL_DATA = Types.Record(
    {
        "id": Types.Opt(Types.Record({"id": Types.Nat64})),
        "payload_text_rendering": Types.Opt(Types.Text),
        "action": Types.Nat64,
        "ballots": Types.Vec(Types.Tuple(Types.Text, BALLOT)),
        "latest_tally": Types.Opt(TALLY),
        "decided_timestamp_seconds": Types.Nat64,
        "executed_timestamp_seconds": Types.Nat64,
        "failed_timestamp_seconds": Types.Nat64,
        "proposal": Types.Opt(PROPOSAL),
        "is_eligible_for_rewards": Types.Bool,
    }
)
GOVERNANCE_ERROR = Types.Record({"error_message": Types.Text, "error_type": Types.Int32})


def _data(pid: int, action: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": [{"id": pid}],
        "payload_text_rendering": ["rendered"],
        "action": 7,
        "ballots": [("neuron", {"vote": 1, "cast_timestamp_seconds": 5, "voting_power": 9})],
        "latest_tally": [{"no": 0, "yes": 9, "total": 9, "timestamp_seconds": 5}],
        "decided_timestamp_seconds": 90,
        "executed_timestamp_seconds": 100,
        "failed_timestamp_seconds": 0,
        "proposal": [{"url": "", "title": f"p{pid}", "action": [action], "summary": ""}],
        "is_eligible_for_rewards": True,
    }


def test_sns_reader_over_the_loopback_replica_yields_a_certified_resume() -> None:
    sns = from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
    now = 1_764_000_000 * 10**9
    resume = encode_directive_payload("camp-1", "resume", None)
    listed = [
        _data(2, {"ExecuteGenericNervousSystemFunction": {"function_id": 1002, "payload": resume}}),
        _data(1, {"Motion": {"motion_text": "hello"}}),
    ]
    replica = Replica(canister_id=sns, time_ns=now, polls_before_final=0)

    def list_proposals(arg: bytes) -> bytes:
        request = decode(arg)[0]["value"]
        assert isinstance(request, dict)
        response = Types.Record({"proposals": Types.Vec(PROPOSAL_DATA)})
        return bytes(encode([{"type": response, "value": {"proposals": listed}}]))

    def get_proposal(arg: bytes) -> bytes:
        result = Types.Variant({"Error": GOVERNANCE_ERROR, "Proposal": PROPOSAL_DATA})
        response = Types.Record({"result": Types.Opt(result)})
        value = {"result": [{"Proposal": listed[0]}]}
        return bytes(encode([{"type": response, "value": value}]))

    replica.methods = {"list_proposals": list_proposals, "get_proposal": get_proposal}
    with Server(replica) as server:
        client = IcpClient(
            HttpTransport(server.url),
            NodeIdentity.generate(),
            root_key_der=ROOT_KEY_DER,
            clock_ns=lambda: now,
        )
        source = SnsDirectiveSource(SnsGovernance(client, sns), FUNCTIONS)
        directives = source.poll()
    assert [(d.proposal_id, d.kind, d.certified) for d in directives] == [
        (2, DirectiveKind.RESUME, True)
    ]
    assert [p.rsplit("/", 1)[1] for p in replica.seen_paths] == ["query", "call", "read_state"]
