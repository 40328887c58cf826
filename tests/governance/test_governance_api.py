"""Governance HTTP routes: campaigns and directives, proposals, ballots checked and relayed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gov_fakes import FakeGovernor
from pydantic import SecretStr

from governance.ballots import Ballot, GovernorDomain, recover_voter, sign_ballot
from governance.directives import DirectiveKind
from governance.proposals import DirectiveCall, decode_calls, prepare, selector
from node.api.app import create_app
from node.store import DirectiveLedger, Store

VOTER_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
TOKEN = "op-secret"


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


@pytest.fixture
def gov() -> FakeGovernor:
    return FakeGovernor()


@pytest.fixture
def client(store: Store, gov: FakeGovernor) -> TestClient:
    app = create_app(store, governor=gov, operator_token=SecretStr(TOKEN))
    return TestClient(app)


def ballot_json(b: Ballot, domain: GovernorDomain, **over: Any) -> dict[str, Any]:
    body = {
        "proposal_id": b.proposal_id,
        "support": b.support,
        "voter": b.voter,
        "nonce": b.nonce,
        "signature": "0x" + b.signature.hex(),
        "chain_id": domain.chain_id,
        "verifying_contract": domain.verifying_contract,
    }
    return body | over


def voter(gov: FakeGovernor, power: int = 10) -> Ballot:
    b = sign_ballot(VOTER_KEY, gov.domain(), 7, 1, 0)
    gov.power[b.voter.lower()] = power
    return b


def test_a_good_ballot_is_relayed_once_and_its_replay_refused(
    client: TestClient, gov: FakeGovernor
) -> None:
    b = voter(gov)
    assert recover_voter(b, gov.domain()) == b.voter
    r = client.post("/gov/ballots", json=ballot_json(b, gov.domain()))
    assert r.status_code == 202, r.text
    assert r.json()["tx"] == "0x" + "ee" * 32 and gov.relayed == [b]
    again = client.post("/gov/ballots", json=ballot_json(b, gov.domain()))
    assert again.status_code == 409 and again.json()["detail"]["error"] == "ReplayError"
    assert len(gov.relayed) == 1


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"chain_id": 1}, 422, "WrongDomainError"),
        ({"verifying_contract": "0x" + "01" * 20}, 422, "WrongDomainError"),
        ({"support": 0}, 401, "BadSignatureError"),  # signed "for", claimed "against"
        ({"signature": "0x" + "00" * 65}, 401, "BadSignatureError"),
        ({"nonce": 1}, 401, "BadSignatureError"),  # the signature covers the nonce
        ({"proposal_id": 8}, 401, "BadSignatureError"),
        ({"signature": "0x12"}, 422, None),  # malformed: rejected by the schema
    ],
)
def test_bad_ballots_get_a_clear_4xx_and_nothing_is_relayed(
    client: TestClient, gov: FakeGovernor, change: dict[str, Any], status: int, error: str | None
) -> None:
    b = voter(gov)
    r = client.post("/gov/ballots", json=ballot_json(b, gov.domain(), **change))
    assert r.status_code == status, r.text
    if error:
        assert r.json()["detail"]["error"] == error
    assert gov.relayed == []


def test_a_vote_on_a_closed_proposal_an_old_nonce_or_without_power_is_refused(
    client: TestClient, gov: FakeGovernor
) -> None:
    domain = gov.domain()
    closed = sign_ballot(VOTER_KEY, domain, 8, 1, 0)
    gov.power[closed.voter.lower()] = 5
    r = client.post("/gov/ballots", json=ballot_json(closed, domain))
    assert r.status_code == 409 and r.json()["detail"]["error"] == "ProposalStateError"
    unknown = sign_ballot(VOTER_KEY, domain, 99, 1, 0)
    assert client.post("/gov/ballots", json=ballot_json(unknown, domain)).status_code == 404
    gov.nonces[closed.voter.lower()] = 3
    stale = sign_ballot(VOTER_KEY, domain, 7, 1, 2)
    r = client.post("/gov/ballots", json=ballot_json(stale, domain))
    assert r.status_code == 409 and "already used" in r.json()["detail"]["detail"]
    gov.power[closed.voter.lower()] = 0
    fresh = sign_ballot(VOTER_KEY, domain, 7, 1, 3)
    r = client.post("/gov/ballots", json=ballot_json(fresh, domain))
    assert r.status_code == 403 and "voting power" in r.json()["detail"]["detail"]
    assert gov.relayed == []


def test_a_ballot_signed_by_someone_else_for_the_voter_is_refused(gov: FakeGovernor) -> None:
    b = voter(gov)
    forged = replace(b, voter="0x" + "12" * 20)
    from governance.ballots import BallotRelay
    from governance.errors import BadSignatureError

    with pytest.raises(BadSignatureError, match="recovers to"):
        BallotRelay(gov).relay(forged, 31337, gov.domain().verifying_contract)


def test_campaigns_show_status_epochs_lineage_and_directives(
    client: TestClient, store: Store
) -> None:
    camp = store.create_campaign("x", {"preset": "quick"})
    DirectiveLedger(store).record(source="evm", campaign_id=camp.id, epoch=3, kind="pause")
    r = client.get(f"/gov/campaigns/{camp.id}")
    assert r.status_code == 200
    body = r.json()
    assert body["epochs"] == {"evm": 3} and body["directives"][0]["kind"] == "pause"
    assert client.get("/gov/campaigns").json()[0]["id"] == camp.id
    r = client.get("/gov/campaigns/nope")
    assert r.status_code == 404 and r.json()["detail"]["error"] == "UnknownCampaignError"


def test_operator_routes_need_the_operator_token(client: TestClient, gov: FakeGovernor) -> None:
    assert client.post("/gov/proposals/7/queue").status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert client.post("/gov/proposals/7/execute", headers=bad).status_code == 401
    assert client.get("/gov/acknowledgements/pending").status_code == 401
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/gov/proposals/7/queue", headers=ok).json()["queued"] is True
    assert client.get("/gov/acknowledgements/pending", headers=ok).json() == []
    assert gov.kept == [("queue", 7)]


def test_operator_routes_are_off_without_a_token(store: Store, gov: FakeGovernor) -> None:
    client = TestClient(create_app(store, governor=gov))
    r = client.post("/gov/proposals/7/queue", headers={"Authorization": "Bearer x"})
    assert r.status_code == 403 and gov.kept == []


def test_prepare_builds_the_controller_call_and_the_governor_proposal_id(
    client: TestClient, store: Store, gov: FakeGovernor
) -> None:
    camp = store.create_campaign("x", {"preset": "quick"})
    r = client.post(
        "/gov/proposals/prepare",
        json={"action": "pause", "campaign": "x", "description": "pause x: it overfits"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [t.lower() for t in body["targets"]] == [gov.controller_address]
    data = bytes.fromhex(body["calldatas"][0][2:])
    assert data[:4] == selector(DirectiveKind.PAUSE)
    (call,) = decode_calls(gov.controller_address, body["targets"], [0], [data])
    assert call.campaign == camp.id
    again = prepare(gov.controller_address, [call], "pause x: it overfits")
    assert body["proposal_id"] == str(again.proposal_id)
    r = client.post(
        "/gov/proposals/prepare", json={"action": "pause", "campaign": "nope", "description": "d"}
    )
    assert r.status_code == 404


def test_malformed_calldata_and_foreign_targets_are_refused(
    client: TestClient, store: Store, gov: FakeGovernor
) -> None:
    camp = store.create_campaign("x", {"preset": "quick"})
    good = DirectiveCall(DirectiveKind.PAUSE, camp.id).calldata()
    base = {"targets": [gov.controller_address], "values": [0], "description": "d"}
    ok = client.post("/gov/proposals/check", json=base | {"calldatas": ["0x" + good.hex()]})
    assert ok.status_code == 200, ok.text
    for bad in (good[:10], b"\xde\xad\xbe\xef" + good[4:], good + b"\x00" * 32):
        r = client.post("/gov/proposals/check", json=base | {"calldatas": ["0x" + bad.hex()]})
        assert r.status_code == 422, (bad.hex(), r.text)
        assert r.json()["detail"]["error"] == "MalformedCallError"
    foreign = base | {"targets": ["0x" + "99" * 20], "calldatas": ["0x" + good.hex()]}
    assert client.post("/gov/proposals/check", json=foreign).status_code == 422
    other = DirectiveCall(DirectiveKind.STOP, "c-00000000").calldata()
    r = client.post("/gov/proposals/check", json=base | {"calldatas": ["0x" + other.hex()]})
    assert r.status_code == 404


def test_proposal_routes_answer_503_without_a_governor(store: Store) -> None:
    client = TestClient(create_app(store))
    assert client.get("/gov/proposals").status_code == 503
    assert client.get("/gov/campaigns").status_code == 200


def test_a_malleable_high_s_signature_is_refused(client: TestClient, gov: FakeGovernor) -> None:
    from governance.ballots import SECP256K1_N

    b = voter(gov)
    s = int.from_bytes(b.signature[32:64], "big")
    twin = b.signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - b.signature[64]])
    r = client.post("/gov/ballots", json=ballot_json(replace(b, signature=twin), gov.domain()))
    assert r.status_code == 401 and "lower half" in r.json()["detail"]["detail"]
    assert gov.relayed == []
