"""The ICP client's HTTP flows against a loopback replica and recorded mainnet answers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "attestation" / "icp"))

from icp_replica import ROOT_KEY_DER, Replica, Server
from icp_vectors import IVG37, MAINNET_KEY, V1_TIME, V4_TIME, VECTORS, v4_certificate

from attestation.errors import VerificationError
from attestation.icp import Step, verify_certificate
from attestation.icp.principal import from_text
from governance.icp import (
    AnchorCanister,
    HttpTransport,
    IcpAnchorTarget,
    IcpClient,
    IcpNetworkError,
    IcpRejectError,
    IcpReplyError,
    IcpTimeoutError,
    NodeIdentity,
    audit_latest,
)

CANISTER = from_text("uxrrr-q7777-77774-qaaaq-cai")
NOW = 1_764_000_000 * 10**9
ROOT = bytes(range(32))


def _client(url: str, key: bytes = ROOT_KEY_DER, now: int = NOW, **kw: object) -> IcpClient:
    return IcpClient(
        HttpTransport(url, timeout_s=5),
        NodeIdentity.generate(),
        root_key_der=key,
        clock_ns=lambda: now,
        sleep=lambda _: None,
        poll_interval_s=1,
        poll_timeout_s=5,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def replica() -> Replica:
    return Replica(canister_id=CANISTER, time_ns=NOW)


def _authorised(client: IcpClient, replica: Replica) -> AnchorCanister:
    replica.model.writers.add(client.identity.principal)
    return AnchorCanister(client, CANISTER)


def test_anchor_call_polls_read_state_until_replied(replica: Replica) -> None:
    replica.polls_before_final = 2
    with Server(replica) as server:
        client = _client(server.url)
        assert _authorised(client, replica).anchor("log-a", 5, ROOT) == 1
    assert replica.model.logs["log-a"] == [(5, ROOT)]
    kinds = [p.rsplit("/", 1)[1] for p in replica.seen_paths]
    assert kinds == ["call", "read_state", "read_state", "read_state"]


def test_synchronous_v3_call_needs_no_polling(replica: Replica) -> None:
    replica.sync_calls = True
    with Server(replica) as server:
        client = _client(server.url)
        assert _authorised(client, replica).anchor("log-a", 5, ROOT) == 1
    assert [p.rsplit("/", 1)[1] for p in replica.seen_paths] == ["call"]


def test_canister_refusal_is_a_reject_naming_the_cause(replica: Replica) -> None:
    replica.polls_before_final = 0
    with Server(replica) as server:
        anchors = AnchorCanister(_client(server.url), CANISTER)
        with pytest.raises(IcpRejectError, match="not_authorised"):
            anchors.anchor("log-a", 5, ROOT)
        replica.model.writers.add(anchors.client.identity.principal)
        anchors.anchor("log-a", 5, ROOT)
        with pytest.raises(IcpRejectError, match="size_not_growing"):
            anchors.anchor("log-a", 5, ROOT)


def test_certified_query_returns_the_anchored_root(replica: Replica) -> None:
    replica.polls_before_final = 0
    with Server(replica) as server:
        client = _client(server.url)
        anchors = _authorised(client, replica)
        assert anchors.latest("log-a") is None
        anchors.anchor("log-a", 5, ROOT)
        anchors.anchor("log-b", 2, bytes(32))
        latest = anchors.latest("log-a")
    assert latest is not None
    assert (latest.tree_size, latest.root, latest.certified_at_ns) == (5, ROOT, NOW)


def test_query_under_another_root_key_fails_verification(replica: Replica) -> None:
    with Server(replica) as server:
        anchors = AnchorCanister(_client(server.url, key=MAINNET_KEY), CANISTER)
        with pytest.raises(VerificationError) as info:
            anchors.latest("log-a")
    assert info.value.step == Step.SIGNATURE.text


def test_stale_replica_answer_is_rejected_as_too_old(replica: Replica) -> None:
    with Server(replica) as server:
        anchors = AnchorCanister(_client(server.url, now=NOW + 3600 * 10**9), CANISTER)
        with pytest.raises(VerificationError, match="3600 s old"):
            anchors.latest("log-a")


def test_http_errors_are_retryable_network_errors(replica: Replica) -> None:
    replica.http_errors = [503]
    with Server(replica) as server:
        anchors = _authorised(_client(server.url), replica)
        with pytest.raises(IcpNetworkError, match="HTTP 503") as info:
            anchors.anchor("log-a", 5, ROOT)
    assert info.value.retryable
    assert "log-a" not in replica.model.logs


def test_unreachable_replica_is_a_network_error() -> None:
    with Server(Replica(canister_id=CANISTER, time_ns=NOW)) as server:
        url = server.url
    anchors = AnchorCanister(_client(url), CANISTER)
    with pytest.raises(IcpNetworkError, match="ConnectError"):
        anchors.anchor("log-a", 5, ROOT)


def test_call_that_never_finishes_times_out(replica: Replica) -> None:
    replica.polls_before_final = 100
    with Server(replica) as server:
        anchors = _authorised(_client(server.url), replica)
        with pytest.raises(IcpTimeoutError, match="5 polls"):
            anchors.anchor("log-a", 5, ROOT)


@pytest.mark.parametrize(
    "body", [b"\xff\x00", b"\xa1fstatusgreplied", b"\xa2fstatusgrepliedereply\xa1carg@"]
)
def test_malformed_or_unknown_candid_query_replies_are_reply_errors(
    replica: Replica, body: bytes
) -> None:
    replica.query_override = lambda _: body
    with Server(replica) as server:
        anchors = AnchorCanister(_client(server.url), CANISTER)
        with pytest.raises(IcpReplyError):
            anchors.latest("log-a")


def test_recorded_mainnet_read_state_answer_verifies() -> None:
    body = (VECTORS / "v1_mainnet_read_state_time_ivg37_delegated_2025.cbor").read_bytes()

    class Recorded:
        def post(self, path: str, request: bytes) -> tuple[int, bytes]:
            assert path == "/api/v3/canister/ivg37-qiaaa-aaaab-aaaga-cai/read_state"
            return 200, body

    client = IcpClient(
        Recorded(), NodeIdentity.generate(), root_key_der=MAINNET_KEY, clock_ns=lambda: V1_TIME
    )
    cert = client.read_state(IVG37, [[b"time"]])
    assert cert.time_ns == V1_TIME


def test_recorded_mainnet_reject_is_reported_with_code_and_message() -> None:
    cert = verify_certificate(
        v4_certificate(), root_key_der=MAINNET_KEY, canister_id=IVG37, now_ns=V4_TIME
    )
    request = bytes.fromhex("edad510eaaa08ed2acd4781324e6446269da6753ec17760f206bbe81c465ff52")
    with pytest.raises(IcpRejectError, match="has no update method 'register'") as info:
        IcpClient._final_status(cert, request, "register")
    assert info.value.code == 3


def test_node_identity_persists_and_keeps_its_principal(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "icp.pem"
    first = NodeIdentity.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert NodeIdentity.load_or_create(path).principal_text == first.principal_text
    assert from_text(first.principal_text) == first.principal


def test_anchor_target_retry_after_a_lost_answer_counts_as_done(replica: Replica) -> None:
    replica.polls_before_final = 0
    with Server(replica) as server:
        client = _client(server.url)
        target = IcpAnchorTarget(_authorised(client, replica))
        first = target.publish("log-a", 5, ROOT)
        assert first.anchor_count == 1
        again = target.publish("log-a", 5, ROOT)  # as if the first answer had been lost
        assert (again.anchor_count, again.certified_at_ns) == (None, NOW)
        with pytest.raises(IcpRejectError, match="different root"):
            target.publish("log-a", 5, bytes(32))
        assert target.publish("log-a", 6, ROOT).anchor_count == 2
        superseded = target.publish("log-a", 4, ROOT)  # a later size already covers it
        assert superseded.anchor_count is None
        replica.model.writers.clear()
        with pytest.raises(IcpRejectError, match="not_authorised"):
            target.publish("log-a", 7, ROOT)
    assert replica.model.logs["log-a"] == [(5, ROOT), (6, ROOT)]


def test_audit_reports_an_anchor_that_differs_from_the_log(replica: Replica) -> None:
    replica.model.logs["log-a"] = [(5, ROOT)]
    with Server(replica) as server:
        anchors = AnchorCanister(_client(server.url), CANISTER)
        assert audit_latest(anchors, "log-a", lambda size: ROOT).problem is None
        forked = audit_latest(anchors, "log-a", lambda size: bytes(32))
        assert forked.problem is not None and "differs" in forked.problem
        short = audit_latest(anchors, "log-a", lambda size: None)
        assert short.problem is not None and "beyond the log" in short.problem
        assert audit_latest(anchors, "log-z", lambda size: ROOT).anchor is None


def test_delegated_subnet_answers_verify_for_canisters_in_its_ranges(replica: Replica) -> None:
    replica.polls_before_final = 0
    replica.delegated_ranges = [(CANISTER, CANISTER)]
    with Server(replica) as server:
        client = _client(server.url)
        anchors = _authorised(client, replica)
        assert anchors.anchor("log-a", 5, ROOT) == 1
        latest = anchors.latest("log-a")
        assert latest is not None and latest.tree_size == 5
        replica.delegated_ranges = [(from_text("ryjl3-tyaaa-aaaaa-aaaba-cai"),) * 2]
        with pytest.raises(VerificationError, match="outside the canister ranges") as info:
            anchors.latest("log-a")
    assert info.value.step == Step.CANISTER_RANGE.text
