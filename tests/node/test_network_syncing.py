"""The daemon's peer syncs: a thread syncs every peer each round, shows what it imported
and what failed, and goes on past a peer that cannot be read; the daemon starts it only
when there are peers to follow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from logfix import run_logged_campaign, small_config
from test_network_peers import _follower, served

from attestation.keys import NodeKey
from governance.anvil import free_port
from node.cli.daemon import following_peers
from node.errors import StoreError
from node.network.follow import Follower, LogPin
from node.network.peers import PeerBook, PeerState
from node.network.syncing import PeerSyncs, peer_syncs
from node.runtime import open_node
from node.settings import init_home
from node.store import Store


def _until(done: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_peers_are_synced_each_round_and_a_failing_peer_does_not_stop_the_rest(
    tmp_path: Path,
) -> None:
    shown: list[str] = []
    down = f"http://127.0.0.1:{free_port()}"
    with (
        Store.open(f"sqlite:///{tmp_path}/peer.db") as peer,
        Store.open(f"sqlite:///{tmp_path}/mine.db") as mine,  # the thread reads it too
        served(peer, free_port()) as url,
    ):
        run_logged_campaign(peer, NodeKey.generate(), candidates=2)[0].checkpoint()
        camp = mine.create_campaign("mine", small_config(2).model_dump(mode="json"))
        follower = _follower(tmp_path, mine)
        with peer_syncs(follower, lambda: dict.fromkeys([down, url]), 0.1, shown.append) as syncs:
            _until(lambda: syncs.rounds >= 3)
        assert syncs.rounds >= 3
    assert f"network: {down}: unreachable" in shown[0]
    # Shown once: the later rounds of that peer imported nothing and were OK.
    [imported] = [line for line in shown if line.startswith(f"network: {url}: ")]
    assert imported.startswith(f"network: {url}: verified ") and imported.endswith("imported 2")
    assert len([c for c in mine.list_candidates(camp.id) if c.origin == "peer"]) == 2


def test_a_sync_that_raises_is_shown_and_the_round_goes_on(tmp_path: Path) -> None:
    class Broken(Follower):
        def sync(self, url: str, force: bool = False, pin: LogPin | None = None):  # type: ignore[no-untyped-def]
            if url.endswith("bad"):
                raise StoreError("database is locked")
            return super().sync(url, force, pin)

    shown: list[str] = []
    with Store.open("sqlite://") as mine:
        base = _follower(tmp_path, mine)
        broken = Broken(mine, base.book, base.settings, base.now)
        syncs = PeerSyncs(
            broken,
            lambda: dict.fromkeys(["http://x.invalid/bad", "http://127.0.0.1:9"]),
            1,
            shown.append,
        )
        results = syncs.sync_round()
    assert shown[0] == "network: http://x.invalid/bad: sync failed: database is locked"
    assert [r.url for r in results] == ["http://127.0.0.1:9"] and syncs.rounds == 1


def test_the_daemon_follows_only_when_peers_are_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    init_home(home, env={})
    node = open_node(home)
    with following_peers(node):
        pass
    assert "following" not in capsys.readouterr().out
    url = f"http://127.0.0.1:{free_port()}"
    config = home / "config.toml"
    config.write_text(config.read_text().replace("peers = []", f'peers = ["{url}"]'))
    node = open_node(home)
    book = PeerBook(home)
    with following_peers(node):
        _until(lambda: book.status(url).state is PeerState.UNREACHABLE)
    node.store.close()
    out = capsys.readouterr().out
    assert "following 1 peer(s), synced every 300 s" in out
    assert f"network: {url}: unreachable (cannot fetch" in out
