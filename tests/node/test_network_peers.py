"""Following peers: a peer node's API served on loopback, its log audited incrementally,
its finished experiments of shared campaigns imported as `peer` candidates; a tampered
bundle, a rewritten history and code that differs from its digest import nothing."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes import FakeEngineer
from logfix import run_logged_campaign, small_config

from attestation.keys import NodeKey
from attestation.merkle import leaf_hash
from attestation.schema import CandidateOrigin, ExperimentRole, ExperimentStatus, NodeEventKind
from governance.anvil import free_port
from node.api.app import create_app
from node.campaign.scheduler import CampaignRunner, RunEnd
from node.cli.daemon import api_running
from node.cli.main import main
from node.network.follow import Follower
from node.network.peers import PeerBook, PeerState
from node.network.provenance import IMPORT_EVENT
from node.settings import NetworkSettings, init_home
from node.store import CampaignRow, Store
from node.tlog.log import LogView, NodeLog
from node.tlog.records import EVENT_KIND, event_statement


@contextmanager
def served(store: Store, port: int) -> Iterator[str]:
    """A peer node's API over `store` on a loopback port, as the daemon serves it."""
    with api_running(create_app(store), "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}"


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 12, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


def _follower(
    tmp_path: Path, store: Store, clock: Clock | None = None, **settings: int
) -> Follower:
    net = NetworkSettings(**settings)
    return Follower(store, PeerBook(tmp_path / "follower"), net, clock or Clock())


def _peer_candidates(store: Store, camp: CampaignRow) -> list[str]:
    return [c.digest for c in store.list_candidates(camp.id) if c.origin is CandidateOrigin.PEER]


def _grow(tlog: NodeLog, n: int) -> None:
    for _ in range(n):
        tlog.append(EVENT_KIND, event_statement(tlog.node_id, NodeEventKind.NODE_KEY_CREATED))
    tlog.checkpoint()


@pytest.fixture
def follower_store() -> Iterator[Store]:
    with Store.open("sqlite://") as store:
        yield store


def test_an_honest_peer_is_imported_incrementally_and_nothing_twice(
    tmp_path: Path, follower_store: Store
) -> None:
    mine3 = follower_store.create_campaign("mine", small_config(3).model_dump(mode="json"))
    mine4 = follower_store.create_campaign("mine4", small_config(4).model_dump(mode="json"))
    follower = _follower(tmp_path, follower_store, max_imports_per_sync=2)
    key = NodeKey.generate()
    with Store.open(f"sqlite:///{tmp_path}/peer.db") as peer, served(peer, free_port()) as url:
        tlog, _ = run_logged_campaign(peer, key, name="theirs", candidates=3)
        tlog.checkpoint()
        first = tlog.size
        one = follower.sync(url)
        assert one.state is PeerState.OK, one.line()
        assert (one.new_entries, one.imported, one.pending) == (first, 2, 1)
        assert f"verified {first} new entries" in one.line()
        # The peer goes on: the same campaign config again (the same code), and another.
        run_logged_campaign(peer, key, name="again", candidates=3)
        run_logged_campaign(peer, key, name="more", candidates=4)
        NodeLog(peer, key).checkpoint()
        size = LogView(peer).size
        two = follower.sync(url)
        assert two.state is PeerState.OK, two.line()
        assert two.new_entries == size - first  # only the entries after the kept checkpoint
        assert (two.imported, two.pending) == (2, 3)
        results = [follower.sync(url) for _ in range(3)]
        assert [(r.new_entries, r.imported, r.pending) for r in results] == [
            (0, 2, 1),
            (0, 1, 0),
            (0, 0, 0),
        ]
        view = LogView(peer)
        events = follower_store.list_events(mine3.id) + follower_store.list_events(mine4.id)
        imports = [e.payload for e in events if e.kind == IMPORT_EVENT]
        for p in imports:  # the provenance names the peer's entry, checked against its log
            [entry] = view.entries(p["leaf_index"], p["leaf_index"] + 1)
            assert p["leaf_hash"] == leaf_hash(entry.envelope).hex()
            assert p["peer"] == url and p["log_origin"] == tlog.origin
            assert p["key_fingerprint"] == key.public.fingerprint
        status = PeerBook(tmp_path / "follower").status(url)
    assert len(imports) == 7 and status.imported == 7 and status.size == size
    three, four = _peer_candidates(follower_store, mine3), _peer_candidates(follower_store, mine4)
    assert len(three) == len(set(three)) == 3 and len(four) == len(set(four)) == 4
    for camp in (mine3, mine4):  # each imported candidate's first run is queued here
        queued = follower_store.list_experiments(camp.id, status=ExperimentStatus.QUEUED)
        assert len(queued) == len(_peer_candidates(follower_store, camp))
    # They run here as any proposal does; the budget counts only what this node proposes.
    runner = CampaignRunner(
        follower_store,
        mine3,
        FakeEngineer(best=0.5),  # type: ignore[arg-type]
        workers=1,
        threads_per_worker=1,
        node_secret=b"s" * 32,
    )
    assert runner.run().reason is RunEnd.BUDGET
    ran = {
        e.candidate_id: e.status
        for e in follower_store.list_experiments(mine3.id)
        if e.role == ExperimentRole.CANDIDATE
    }
    peers = [
        c for c in follower_store.list_candidates(mine3.id) if c.origin is CandidateOrigin.PEER
    ]
    assert len(peers) == 3 and all(ran[c.id] is ExperimentStatus.DONE for c in peers)
    assert len(ran) == 3 + 3  # the peers' three and a budget of three proposed here


def _tamper_entry(db: Path, index: int) -> None:
    """Edit an entry's statement in the peer's database, keeping its signature."""
    with sqlite3.connect(db) as conn:
        [(raw,)] = conn.execute("SELECT envelope FROM log_entry WHERE idx = ?", (index,))
        envelope = json.loads(raw)
        stmt = json.loads(base64.b64decode(envelope["payload"]))
        stmt["predicate"]["metrics"]["mean_acc"] = 0.99
        envelope["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
        conn.execute(
            "UPDATE log_entry SET envelope = ? WHERE idx = ?",
            (json.dumps(envelope).encode(), index),
        )


def test_every_sync_the_first_too_reads_at_most_max_entries_to_a_checkpoint(
    tmp_path: Path, follower_store: Store
) -> None:
    follower = _follower(tmp_path, follower_store, max_entries_per_sync=5)
    with Store.open(f"sqlite:///{tmp_path}/peer.db") as peer, served(peer, free_port()) as url:
        tlog = NodeLog(peer, NodeKey.generate())
        for _ in range(3):
            _grow(tlog, 4)  # checkpoints at 4, 8 and 12
        sizes = [(r.new_entries, r.size) for r in (follower.sync(url) for _ in range(4))]
        assert sizes == [(4, 4), (4, 8), (4, 12), (0, 12)]
        _grow(tlog, 7)  # none within 5 entries: the first checkpoint beyond
        assert follower.sync(url).size == 19


def test_a_peer_serving_a_tampered_bundle_is_quarantined_and_nothing_imported(
    tmp_path: Path, follower_store: Store
) -> None:
    mine = follower_store.create_campaign("mine", small_config(3).model_dump(mode="json"))
    follower = _follower(tmp_path, follower_store)
    db = tmp_path / "peer.db"
    with Store.open(f"sqlite:///{db}") as peer, served(peer, free_port()) as url:
        run_logged_campaign(peer, NodeKey.generate(), candidates=3)
        _tamper_entry(db, 3)
        result = follower.sync(url)
    assert result.state is PeerState.QUARANTINED
    assert "step 5 (envelope signatures) failed: entry 3" in result.reason
    assert _peer_candidates(follower_store, mine) == []
    assert not list((tmp_path / "follower").rglob("state/*.json"))  # no state kept
    assert PeerBook(tmp_path / "follower").status(url).state is PeerState.QUARANTINED


def test_a_peer_that_rewrites_its_history_is_flagged_until_forgotten(
    tmp_path: Path, follower_store: Store
) -> None:
    mine = follower_store.create_campaign("mine", small_config(3).model_dump(mode="json"))
    follower = _follower(tmp_path, follower_store)
    key, port = NodeKey.generate(), free_port()
    with Store.open(f"sqlite:///{tmp_path}/a.db") as peer, served(peer, port) as url:
        tlog, _ = run_logged_campaign(peer, key, candidates=3)
        assert follower.sync(url).imported == 3
        kept = tlog.size
    [state_file] = (tmp_path / "follower").rglob("state/*.json")
    before = state_file.read_bytes()
    # The same key's node, on the same address, now serves another, longer history.
    with Store.open(f"sqlite:///{tmp_path}/b.db") as forged, served(forged, port) as url:
        run_logged_campaign(forged, key, name="other", candidates=3)
        _grow(NodeLog(forged, key), kept)
        result = follower.sync(url)
        assert result.state is PeerState.FLAGGED, result.line()
        assert "step 6 (checkpoint roots) failed" in result.reason
        assert "forked or rewritten" in result.reason
        assert "asi-node network forget" in result.line()
        assert state_file.read_bytes() == before
        again = follower.sync(url, force=True)  # refused without asking the peer
        assert again.state is PeerState.FLAGGED and again.reason == result.reason
        assert len(_peer_candidates(follower_store, mine)) == 3  # the honest imports only
        assert PeerBook(tmp_path / "follower").forget(url)
        fresh = follower.sync(url)  # an operator's choice: the new log from scratch
        assert fresh.state is PeerState.OK and fresh.imported == 0  # the same code: kept


def test_a_peer_serving_code_that_differs_from_its_digest_is_quarantined(
    tmp_path: Path, follower_store: Store
) -> None:
    mine = follower_store.create_campaign("mine", small_config(3).model_dump(mode="json"))
    follower = _follower(tmp_path, follower_store)
    db = tmp_path / "peer.db"
    with Store.open(f"sqlite:///{db}") as peer, served(peer, free_port()) as url:
        _, cid = run_logged_campaign(peer, NodeKey.generate(), candidates=3)
        [cand] = [c for c in peer.list_candidates(cid) if c.origin is CandidateOrigin.OFFLINE][:1]
        other = peer.put_code(peer.get_code(cand.digest) + "\n# another mixer\n")
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE candidate SET digest = ? WHERE id = ?", (other, cand.id))
        result = follower.sync(url)
    assert result.state is PeerState.QUARANTINED
    assert f"the code served hashes to {other}, its record says {cand.digest}" in result.reason
    assert _peer_candidates(follower_store, mine) == []
    assert not list((tmp_path / "follower").rglob("state/*.json"))


def test_an_unreachable_peer_is_retried_with_a_doubling_wait(
    tmp_path: Path, follower_store: Store
) -> None:
    clock = Clock()
    follower = _follower(tmp_path, follower_store, clock)
    url = f"http://127.0.0.1:{free_port()}"
    first = follower.sync(url)
    assert first.state is PeerState.UNREACHABLE and first.retry_in_s == 60
    clock.at += timedelta(seconds=10)
    waiting = follower.sync(url)  # before its time: not tried
    assert waiting.retry_in_s == 50 and "retry in 50 s" in waiting.line()
    clock.at += timedelta(seconds=50)
    assert follower.sync(url).retry_in_s == 120
    assert follower.sync(url, force=True).retry_in_s == 240
    status = PeerBook(tmp_path / "follower").status(url)
    assert status.failures == 3 and status.retry_at == clock.at + timedelta(seconds=240)


def test_the_network_commands_sync_list_and_forget_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    init_home(home, env={})
    url = f"http://127.0.0.1:{free_port()}"
    config = home / "config.toml"
    config.write_text(config.read_text().replace("peers = []", f'peers = ["{url}/"]'))
    assert main(["--home", str(home), "network", "sync"]) == 1
    out = capsys.readouterr().out
    assert f"{url}: unreachable (" in out and "retry in 60 s" in out
    assert main(["--home", str(home), "network", "peers"]) == 0
    out = capsys.readouterr().out
    assert url in out and "unreachable" in out
    assert main(["--home", str(home), "network", "forget", url]) == 0
    assert "forgot" in capsys.readouterr().out
    assert main(["--home", str(home), "network", "peers"]) == 0
    assert "new" in capsys.readouterr().out
