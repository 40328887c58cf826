"""Governance HTTP routes: campaigns and directives, proposals, ballots checked and relayed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from governor_fake import ControllerFake as FakeGovernor
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
    gov.campaigns[camp.id] = "active"
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
    gov.campaigns[camp.id] = "active"
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


def test_proposals_list_decoded_calls_proposer_quorum_eta_and_has_voted(
    client: TestClient, gov: FakeGovernor
) -> None:
    from governance.proposals import ControllerCall

    fork = ControllerCall(
        "forkCampaign",
        ("c-1", "c-1-wide", b"\x03" * 32, 42, b"\x04" * 32, b"\x05" * 32, "ipfs://x", True),
    )
    stray = bytes.fromhex("deadbeef")
    gov.infos[7] = replace(
        gov.infos[7],
        proposer="0x" + "ab" * 20,
        eta=1_700_000_000,
        quorum=40_000,
        targets=(gov.controller_address, gov.controller_address, "0x" + "99" * 20),
        values=(0, 0, 0),
        calldatas=(fork.calldata(), ControllerCall("pauseAll").calldata(), stray),
    )
    voter = "0x" + "cd" * 20
    gov.voted.add((7, voter))
    listed = client.get("/gov/proposals", params={"voter": voter}).json()
    shown = {p["proposal_id"]: p for p in listed}["7"]
    assert shown["proposer"] == "0x" + "ab" * 20 and shown["eta"] == 1_700_000_000
    assert shown["quorum"] == "40000" and shown["has_voted"] is True
    assert shown["votes"] == {"for": "0", "against": "0", "abstain": "0"}
    assert shown["deadline"] == 100 and shown["state"] == "active"
    first, second, third = shown["calls"]
    assert first["function"] == "forkCampaign" and first["kind"] == "fork"
    assert first["args"] == {
        "parent": "c-1",
        "child": "c-1-wide",
        "logId": "0x" + "03" * 32,
        "fromTreeSize": 42,
        "checkpointRoot": "0x" + "04" * 32,
        "configHash": "0x" + "05" * 32,
        "configURI": "ipfs://x",
        "pauseParent": True,
    }
    assert second["function"] == "pauseAll" and second["args"] == {}
    assert third["function"] is None and "not the controller" in third["error"]
    assert third["calldata"] == "0xdeadbeef"
    one = client.get("/gov/proposals/8", params={"voter": voter}).json()
    assert one["has_voted"] is False and one["calls"] == [] and one["eta"] is None
    assert client.get("/gov/proposals/8").json()["has_voted"] is None
    assert client.get("/gov/proposals", params={"voter": "nobody"}).status_code == 422


def test_a_signature_with_v_0_or_1_is_relayed_as_27_or_28(
    client: TestClient, gov: FakeGovernor
) -> None:
    b = voter(gov)
    raw = b.signature[:64] + bytes([b.signature[64] - 27])
    r = client.post("/gov/ballots", json=ballot_json(replace(b, signature=raw), gov.domain()))
    assert r.status_code == 202, r.text
    (relayed,) = gov.relayed
    assert relayed.signature == b.signature  # type: ignore[attr-defined]
    bad_v = b.signature[:64] + bytes([29])
    r = client.post("/gov/ballots", json=ballot_json(replace(b, signature=bad_v), gov.domain()))
    assert r.status_code == 401 and "27 or 28 (or 0 or 1)" in r.json()["detail"]["detail"]


def test_a_smart_contract_wallet_votes_with_an_erc1271_signature(
    client: TestClient, gov: FakeGovernor
) -> None:
    from governance.ballots import ballot_digest, voter_address

    wallet = "0x" + "5a" * 20
    owner = voter_address(VOTER_KEY)
    gov.wallets[wallet] = owner
    gov.power[wallet] = 50
    domain = gov.domain()
    b = sign_ballot(VOTER_KEY, domain, 7, 1, 0, voter=wallet)
    assert b.voter.lower() == wallet
    # The owner's own EOA signature does not recover to the wallet; ERC-1271 decides.
    r = client.post("/gov/ballots", json=ballot_json(b, domain))
    assert r.status_code == 202, r.text
    assert gov.relayed[0].voter.lower() == wallet  # type: ignore[attr-defined]
    other = sign_ballot(bytes(31) + b"\x07", domain, 7, 1, 1, voter=wallet)
    gov.nonces[wallet] = 1
    r = client.post("/gov/ballots", json=ballot_json(other, domain))
    assert r.status_code == 401
    detail = r.json()["detail"]["detail"]
    assert "ERC-1271" in detail and ballot_digest(other, domain).hex() in detail
    # A wallet's signature need not be 65 bytes (a Safe's holds several owners').
    long = replace(other, signature=other.signature * 2)
    r = client.post("/gov/ballots", json=ballot_json(long, domain))
    assert r.status_code == 401 and "ERC-1271" in r.json()["detail"]["detail"]
    # An account (no code) must sign with 65 bytes.
    eoa = voter(gov)
    r = client.post(
        "/gov/ballots", json=ballot_json(replace(eoa, signature=long.signature), domain)
    )
    assert r.status_code == 401 and "65 bytes" in r.json()["detail"]["detail"]
    assert len(gov.relayed) == 1


def limited_client(store: Store, gov: FakeGovernor, limits: Any, clock: Any) -> TestClient:
    from fastapi import FastAPI

    from governance.api import governance_router
    from node.governed.records import StoreGovernanceView

    app = FastAPI()
    router = governance_router(
        StoreGovernanceView(store), gov, SecretStr(TOKEN), limits=limits, clock=clock
    )
    app.include_router(router)
    return TestClient(app)


def test_ballots_past_a_clients_rate_get_429_with_retry_after(
    store: Store, gov: FakeGovernor
) -> None:
    from gov_fakes import FakeClock

    from governance.ballots import Rate, RelayLimits

    clock = FakeClock()
    limits = RelayLimits(per_voter=Rate(0), per_client=Rate(per_minute=6, burst=2))
    client = limited_client(store, gov, limits, clock)
    b = voter(gov)
    bad = ballot_json(b, gov.domain(), support=0)  # refused ballots count for the client
    assert [client.post("/gov/ballots", json=bad).status_code for _ in range(2)] == [401, 401]
    r = client.post("/gov/ballots", json=ballot_json(b, gov.domain()))
    assert r.status_code == 429 and r.headers["Retry-After"] == "10"
    assert r.json()["detail"]["error"] == "RateLimitedError" and gov.relayed == []
    clock.advance(10)  # one token back (6 a minute)
    assert client.post("/gov/ballots", json=ballot_json(b, gov.domain())).status_code == 202


def test_a_voters_rate_counts_only_ballots_that_passed_the_checks(
    store: Store, gov: FakeGovernor
) -> None:
    from gov_fakes import FakeClock

    from governance.ballots import Rate, RelayLimits

    clock = FakeClock()
    limits = RelayLimits(per_voter=Rate(per_minute=1, burst=1), per_client=Rate(0))
    client = limited_client(store, gov, limits, clock)
    domain = gov.domain()
    b = voter(gov)
    # Anyone can claim to be the voter: forged ballots must not use up the voter's rate.
    for _ in range(5):
        forged = ballot_json(b, domain, signature="0x" + "11" * 64 + "1b")
        assert client.post("/gov/ballots", json=forged).status_code == 401
    assert client.post("/gov/ballots", json=ballot_json(b, domain)).status_code == 202
    gov.infos[9] = replace(gov.infos[7], proposal_id=9)
    second = sign_ballot(VOTER_KEY, domain, 9, 1, 1)
    r = client.post("/gov/ballots", json=ballot_json(second, domain))
    assert r.status_code == 429 and r.headers["Retry-After"] == "60"
    clock.advance(60)
    assert client.post("/gov/ballots", json=ballot_json(second, domain)).status_code == 202


def test_keeper_calls_are_rate_limited_per_client(store: Store, gov: FakeGovernor) -> None:
    from gov_fakes import FakeClock

    from governance.ballots import Rate, RelayLimits

    limits = RelayLimits(keeper_per_client=Rate(per_minute=2, burst=1))
    client = limited_client(store, gov, limits, FakeClock())
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/gov/proposals/7/queue", headers=ok).status_code == 200
    r = client.post("/gov/proposals/7/execute", headers=ok)
    assert r.status_code == 429 and r.headers["Retry-After"] == "30"
    assert gov.kept == [("queue", 7)]


def test_a_slow_block_holds_up_only_its_own_ballot(gov: FakeGovernor) -> None:
    """The relay's lock covers its bookkeeping, not the wait for a block: another voter's
    ballot goes through while the first is still being mined; the first voter's next
    ballot with the same nonce is refused meanwhile."""
    import threading

    from governance.ballots import BallotRelay
    from governance.errors import ReplayError

    mined = threading.Event()
    in_block = threading.Event()
    fast = gov.cast_vote_by_sig

    def slow_for_the_first(ballot: Ballot) -> str:
        if ballot.voter == first.voter:
            in_block.set()
            assert mined.wait(10)
        return fast(ballot)

    gov.cast_vote_by_sig = slow_for_the_first  # type: ignore[method-assign]
    relay = BallotRelay(gov)
    domain = gov.domain()
    first = voter(gov)
    second_key = bytes(31) + b"\x09"
    second = sign_ballot(second_key, domain, 7, 0, 0)
    gov.power[second.voter.lower()] = 1
    results: list[str] = []
    worker = threading.Thread(
        target=lambda: results.append(
            relay.relay(first, domain.chain_id, domain.verifying_contract)
        )
    )
    worker.start()
    assert in_block.wait(10)
    assert relay.relay(second, domain.chain_id, domain.verifying_contract).startswith("0x")
    again = sign_ballot(VOTER_KEY, domain, 7, 0, 0)  # same voter and nonce, other choice
    with pytest.raises(ReplayError, match="being relayed"):
        relay.relay(again, domain.chain_id, domain.verifying_contract)
    mined.set()
    worker.join(10)
    assert len(results) == 1 and [b.voter for b in gov.relayed] == [second.voter, first.voter]  # type: ignore[attr-defined]
