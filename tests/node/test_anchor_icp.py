"""The ICP anchoring target: outbox rows stepped into the anchor canister over real HTTP.

The canister is the loopback replica (tests/governance/icp_replica.py): signed CBOR
requests, certificates signed with its own BLS root key, read_state polling. Network
failures and rejects must leave every root in the outbox, then a later step succeeds.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "governance"))
sys.path.insert(0, str(Path(__file__).parents[1] / "attestation" / "icp"))

from icp_replica import ROOT_KEY_DER, Replica, Server
from icp_vectors import MAINNET_KEY

from attestation.icp.principal import from_text
from governance.icp import (
    AnchorCanister,
    HttpTransport,
    IcpAnchorTarget,
    IcpClient,
    NodeIdentity,
    log_label,
)
from node.anchoring.evm import Backoff
from node.anchoring.followers import AnchorFollowers
from node.anchoring.icp import IcpPublisher
from node.store import Outbox, Store

CANISTER = from_text("uxrrr-q7777-77774-qaaaq-cai")
NOW_NS = 1_764_000_000 * 10**9
LOG = bytes(range(32))
LABEL = log_label(LOG)


def _root(n: int) -> bytes:
    return n.to_bytes(32, "big")


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2025, 11, 24, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def _dead_url() -> str:
    with Server(Replica(canister_id=CANISTER, time_ns=NOW_NS)) as server:
        return server.url  # closed on exit: nothing listens there any more


def _publisher(
    url: str, store: Store, clock: Clock, key: bytes = ROOT_KEY_DER
) -> tuple[IcpPublisher, IcpClient]:
    client = IcpClient(
        HttpTransport(url, timeout_s=5),
        NodeIdentity.generate(),
        root_key_der=key,
        clock_ns=lambda: NOW_NS,
        sleep=lambda _: None,
        poll_timeout_s=5,
    )
    target = IcpAnchorTarget(AnchorCanister(client, CANISTER))
    outbox = Outbox(store, "icp")
    return IcpPublisher(outbox, target, backoff=Backoff(1.0, 60.0), now=clock), client


@pytest.fixture
def replica() -> Replica:
    return Replica(canister_id=CANISTER, time_ns=NOW_NS, polls_before_final=1)


@pytest.fixture
def server(replica: Replica) -> Iterator[Server]:
    with Server(replica) as server:
        yield server


def _rows(publisher: IcpPublisher) -> list[tuple[int, str, int]]:
    return [(r.tree_size, r.status, r.attempts) for r in publisher.outbox.rows()]


@pytest.mark.parametrize("down", ["unreachable", "http 503"])
def test_network_down_keeps_roots_queued_then_a_later_step_anchors_them(
    replica: Replica, server: Server, down: str
) -> None:
    clock = Clock()
    publisher, client = _publisher(server.url, Store.open("sqlite://", now=clock), clock)
    replica.model.writers.add(client.identity.principal)
    if down == "unreachable":
        client.transport = HttpTransport(_dead_url(), timeout_s=5)
    else:
        replica.http_errors = [503]
    assert publisher.feed([(LOG, 4, _root(4)), (LOG, 8, _root(8))]) == 2

    report = publisher.step()
    assert not report.reachable and report.retried == 1 and report.confirmed == 0
    assert _rows(publisher) == [(4, "pending", 1), (8, "pending", 0)]  # 8 waits behind 4
    first = publisher.outbox.get(LOG, 4)
    assert ("ConnectError" if down == "unreachable" else "HTTP 503") in (first.last_error or "")
    assert first.next_attempt_at == clock.t + timedelta(seconds=1)
    assert LABEL not in replica.model.logs

    client.transport = HttpTransport(server.url, timeout_s=5)  # the network is back
    seen = len(replica.seen_paths)
    assert publisher.step().retried == 0  # backing off: nothing is sent yet
    assert len(replica.seen_paths) == seen

    clock.advance(1)
    report = publisher.step()
    assert report.reachable and report.confirmed == 2
    assert replica.model.logs[LABEL] == [(4, _root(4)), (8, _root(8))]
    receipts = [(r.status, r.anchor_count, r.certified_at_ns) for r in publisher.outbox.rows()]
    assert receipts == [("confirmed", 1, NOW_NS), ("confirmed", 2, NOW_NS)]
    assert publisher.outbox.get(LOG, 4).last_error is None
    # call + read_state polls: real update calls, polled until the certified reply
    assert [p.rsplit("/", 1)[1] for p in replica.seen_paths[seen:]] == [
        "call",
        "read_state",
        "read_state",
        "call",
        "read_state",
        "read_state",
    ]


def test_a_reject_keeps_the_root_alerts_and_survives_a_restart_until_authorised(
    replica: Replica, server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    clock = Clock()
    with Store.open(url, now=clock) as store:
        publisher, client = _publisher(server.url, store, clock)
        publisher.submit(LOG, 4, _root(4))
        with caplog.at_level(logging.ERROR, logger="node.anchoring.icp"):
            report = publisher.step()
        assert report.reachable and report.retried == 1 and report.confirmed == 0
        (alert,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "root stays queued" in alert.getMessage()
        assert "not_authorised" in alert.error  # type: ignore[attr-defined]
        row = publisher.outbox.get(LOG, 4)
        assert row.status == "pending" and "not_authorised" in (row.last_error or "")
        assert client.identity.principal_text in (row.last_error or "")
        identity = client.identity
    assert LABEL not in replica.model.logs

    replica.model.writers.add(identity.principal)  # the SNS authorises the node
    with Store.open(url, now=clock) as store:
        publisher, client = _publisher(server.url, store, clock)
        client.identity = identity  # the node's key persists in its home
        assert _rows(publisher) == [(4, "pending", 1)]
        clock.advance(1)
        assert publisher.step().confirmed == 1
        assert _rows(publisher) == [(4, "confirmed", 2)]
    assert replica.model.logs[LABEL] == [(4, _root(4))]


def test_an_answer_that_fails_verification_is_no_receipt(
    replica: Replica, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = Store.open("sqlite://", now=clock)
    publisher, client = _publisher(server.url, store, clock, key=MAINNET_KEY)
    replica.model.writers.add(client.identity.principal)
    publisher.submit(LOG, 4, _root(4))
    with caplog.at_level(logging.ERROR, logger="node.anchoring.icp"):
        publisher.step()
    row = publisher.outbox.get(LOG, 4)
    assert row.status == "pending"
    assert "VerificationError" in (row.last_error or "") and "signature" in (row.last_error or "")
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_a_lost_answer_counts_as_done_and_a_different_root_fails(
    replica: Replica, server: Server
) -> None:
    other = bytes(31) + b"\x01"
    replica.model.logs[LABEL] = [(4, _root(4))]  # our earlier call landed; its answer was lost
    replica.model.logs[log_label(other)] = [(4, _root(99))]  # another history at that size
    clock = Clock()
    publisher, client = _publisher(server.url, Store.open("sqlite://", now=clock), clock)
    replica.model.writers.add(client.identity.principal)
    publisher.feed([(LOG, 4, _root(4)), (other, 4, _root(4))])
    report = publisher.step()
    assert (report.confirmed, report.failed) == (1, 1)
    done = publisher.outbox.get(LOG, 4)
    assert (done.status, done.anchor_count, done.certified_at_ns) == ("confirmed", None, NOW_NS)
    failed = publisher.outbox.get(other, 4)
    assert failed.status == "failed" and "different root" in (failed.last_error or "")
    assert replica.model.logs[LABEL] == [(4, _root(4))]


def test_both_targets_keep_their_own_rows_for_the_same_checkpoint() -> None:
    store = Store.open("sqlite://")
    evm, icp = Outbox(store), Outbox(store, "icp")
    evm.enqueue(LOG, 4, _root(4))
    icp.enqueue(LOG, 4, _root(4))
    icp.failed(icp.get(LOG, 4), "refused")
    assert [(r.target, r.status) for r in evm.rows()] == [("evm", "pending")]
    assert [(r.target, r.status) for r in icp.rows()] == [("icp", "failed")]
    with pytest.raises(ValueError, match="unknown anchoring target 'sol'"):
        Outbox(store, "sol")


def test_the_followers_drain_a_target_that_comes_back(replica: Replica, server: Server) -> None:
    clock = Clock()
    publisher, client = _publisher(server.url, Store.open("sqlite://", now=clock), clock)
    replica.model.writers.add(client.identity.principal)
    client.transport = HttpTransport(_dead_url(), timeout_s=5)
    checkpoints = [(LOG, 4, _root(4))]
    followers = AnchorFollowers([publisher], lambda: checkpoints, poll_s=0.05)
    followers.start()
    [summary] = followers.drain(timeout_s=0.3)
    assert (summary.confirmed, summary.pending, summary.drained) == (0, 1, False)
    assert summary.chain == "icp canister uxrrr-q7777-77774-qaaaq-cai"

    client.transport = HttpTransport(server.url, timeout_s=5)
    clock.advance(600)  # past any backoff
    checkpoints.append((LOG, 9, _root(9)))  # the next run's log grew
    followers = AnchorFollowers([publisher], lambda: checkpoints, poll_s=0.05)
    followers.start()
    [summary] = followers.drain(timeout_s=10)
    assert (summary.confirmed, summary.pending, summary.drained) == (2, 0, True)
    assert replica.model.logs[LABEL] == [(4, _root(4)), (9, _root(9))]
