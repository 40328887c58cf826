"""Replicating peers' discoveries: node A's campaign logged and served on loopback, node B
(another store, another key, the same campaign config) syncs A, re-runs the best of A's
records on the campaign's replication seeds, and judges it against the fitness A's record
states; A, syncing B, learns from B's signed records who replicated what."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeEngineer
from fastapi.testclient import TestClient
from logfix import small_config
from test_network_peers import Clock, served

from attestation.audit import audit
from attestation.keys import NodeKey
from attestation.merkle import leaf_hash
from attestation.schema import CandidateOrigin, ExperimentStatus
from governance.anvil import free_port
from loop.engineer import EvalResult, ExperimentJob
from node.api.app import create_app
from node.campaign.config import CampaignConfig, Replication
from node.campaign.scheduler import CampaignRunner
from node.cli.main import main
from node.cli.network import _board, _show
from node.network import leaderboard
from node.network.follow import Follower
from node.network.peers import PeerBook, PeerState
from node.network.provenance import CLAIM_EVENT, IMPORT_EVENT, REPLICATION_EVENT
from node.settings import NetworkSettings, init_home
from node.store import CampaignRow, Store
from node.tlog.log import LogView, NodeLog
from node.tlog.records import EXPERIMENT_KIND, Recorder, predicate_of

SEEDS = (101, 102)


def _config(attested: bool = False) -> CampaignConfig:
    rule = Replication(share=0.3, seeds=SEEDS, spread=0.02, attested=attested)
    return small_config(3).model_copy(update={"replication": rule})


class Shifted(FakeEngineer):
    """Scores generated candidates `shift` off what the FakeEngineer gives their code."""

    def __init__(self, shift: float) -> None:
        super().__init__(best=0.5)
        self.shift = shift

    def score(self, job: ExperimentJob) -> float:
        base = super().score(job)
        return base if "kernels.baselines" in job.code else base + self.shift

    def run(self, job: ExperimentJob, cancel: object = None) -> EvalResult:
        return super().run(job)


def _run(store: Store, key: NodeKey, camp: CampaignRow, engineer: FakeEngineer) -> NodeLog:
    """The campaign run as the node runs it, its records signed into its log."""
    tlog = NodeLog(store, key, checkpoint_every=4)
    recorder = Recorder(tlog, store)
    recorder.campaign_start(camp)
    runner = CampaignRunner(
        store,
        camp,
        engineer,
        workers=1,
        threads_per_worker=1,
        node_secret=b"s" * 32,
        recorder=recorder,
    )
    recorder.campaign_stop(camp, runner.run().reason)
    return tlog


def _follower(home: Path, store: Store) -> Follower:
    return Follower(store, PeerBook(home), NetworkSettings(), Clock())


@pytest.fixture
def node_a(tmp_path: Path) -> Iterator[tuple[Store, NodeKey, CampaignRow]]:
    with Store.open(f"sqlite:///{tmp_path}/a.db") as store:
        key = NodeKey.generate()
        camp = store.create_campaign("a", _config().model_dump(mode="json"))
        _run(store, key, camp, Shifted(0.0))
        yield store, key, store.get_campaign(camp.id)


def _replicate(
    tmp_path: Path, url: str, store: Store, key: NodeKey, shift: float
) -> tuple[CampaignRow, NodeLog]:
    """Node B: sync A, then run the campaign (A's imports among its candidates)."""
    camp = store.create_campaign("b", _config().model_dump(mode="json"))
    synced = _follower(tmp_path / "b-home", store).sync(url)
    assert synced.state is PeerState.OK, synced.line()
    assert synced.imported == 3
    tlog = _run(store, key, camp, Shifted(shift))
    return store.get_campaign(camp.id), tlog


def test_a_replication_within_the_spread_ranks_the_discovery_on_both_nodes(
    tmp_path: Path, node_a: tuple[Store, NodeKey, CampaignRow]
) -> None:
    a, key_a, camp_a = node_a
    key_b = NodeKey.generate()
    b_id = key_b.public.fingerprint
    with (
        served(a, free_port()) as url_a,
        Store.open(f"sqlite:///{tmp_path}/b.db") as b,
    ):
        camp_b, log_b = _replicate(tmp_path, url_a, b, key_b, 0.0)
        imports = [e.payload for e in b.list_events(camp_b.id, kind=IMPORT_EVENT)]
        # The best of the three by the fitness A's records state (share 0.3: one).
        [chosen] = [p for p in imports if p["replicate"]]
        assert chosen["peer_fitness"] == max(p["peer_fitness"] for p in imports)
        assert chosen["seeds"] == list(SEEDS)
        [judged] = [e.payload for e in b.list_events(camp_b.id, kind=REPLICATION_EVENT)]
        assert judged["outcome"] == "replicated" and judged["node_id"] == b_id
        assert judged["fitness"] == pytest.approx(chosen["peer_fitness"])
        # B's records of the re-runs name A's entry, which A's log holds.
        records = [
            predicate_of(e.envelope)
            for e in LogView(b).entries(0, log_b.size)
            if e.kind == EXPERIMENT_KIND
        ]
        links = [r["replicates"] for r in records if r["replicates"] is not None]
        assert {r["seeds"]["train"] for r in records if r["replicates"] is not None} >= {*SEEDS}
        link = next(x for x in links if x["experiment_id"] == chosen["peer_experiment_id"])
        [entry] = LogView(a).entries(link["leaf_index"], link["leaf_index"] + 1)
        assert link["leaf_hash"] == leaf_hash(entry.envelope).hex()
        assert link["log_origin"] == NodeLog(a, key_a).origin
        assert all(r["record_version"] == 6 for r in records)
        report = audit(log_b.export().to_bytes(), "b", trusted_fingerprint=b_id)
        assert report.ok, report.render()
        # B's network leaderboard: A's discovery, replicated by B; the others unranked.
        [row] = leaderboard.ranked(b, [camp_b])
        assert row.discovered_by == url_a and row.replicated_by == [b_id]
        assert row.experiment_id == chosen["peer_experiment_id"]
        assert b_id in _board([row]).splitlines()[1] and url_a in _board([row])
        assert f"replicated by {b_id}" in _show(row)
        # Where the campaign counts only attested replications, B's counts once B runs
        # under a TEE provider.
        strict = dataclasses.replace(camp_b, config=_config(attested=True).model_dump(mode="json"))
        assert leaderboard.ranked(b, [strict]) == []
        assert leaderboard.ranked(b, [strict], attested_here=True)[0].replicated_by == [b_id]
        body = TestClient(create_app(b)).get("/network/leaderboard", params={"campaign": "b"})
        assert body.status_code == 200 and body.json()[0]["replicated_by"] == [b_id]
        # A syncs B: B's signed records claim A's entry; A checks them and ranks its own.
        with served(b, free_port()) as url_b:
            synced = _follower(tmp_path / "a-home", a).sync(url_b)
        assert synced.state is PeerState.OK, synced.line()
        claims = [e.payload for e in a.list_events(camp_a.id, kind=CLAIM_EVENT)]
        assert {c["node_id"] for c in claims} == {b_id}  # B ran the others on seed 0 too
        named = [c for c in claims if c["experiment_id"] == chosen["peer_experiment_id"]]
        assert sorted(c["seed"] for c in named) == [*SEEDS]
        [mine] = leaderboard.ranked(a, [camp_a])
        assert mine.discovered_by == leaderboard.THIS_NODE
        assert mine.experiment_id == chosen["peer_experiment_id"]
        assert mine.replicated_by == [b_id]
        shown = TestClient(create_app(a)).get(f"/network/records/{link['leaf_hash']}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["replications"][0]["outcome"] == "replicated"
        assert shown.json()["replications"][0]["peer"] == url_b


def test_a_replication_outside_the_spread_fails_and_the_discovery_stays_unreplicated(
    tmp_path: Path, node_a: tuple[Store, NodeKey, CampaignRow]
) -> None:
    a, _, camp_a = node_a
    key_b = NodeKey.generate()
    with (
        served(a, free_port()) as url_a,
        Store.open(f"sqlite:///{tmp_path}/b.db") as b,
    ):
        camp_b, _ = _replicate(tmp_path, url_a, b, key_b, -0.2)
        [judged] = [e.payload for e in b.list_events(camp_b.id, kind=REPLICATION_EVENT)]
        assert judged["outcome"] == "failed replication"
        assert abs(judged["fitness"] - judged["peer_fitness"]) > judged["spread"]
        assert leaderboard.ranked(b, [camp_b]) == []
        row = leaderboard.find(b, judged["peer_experiment_id"])
        assert not row.replicated and row.replications[0].outcome == "failed replication"
        with served(b, free_port()) as url_b:
            assert _follower(tmp_path / "a-home", a).sync(url_b).state is PeerState.OK
        claims = [e.payload for e in a.list_events(camp_a.id, kind=CLAIM_EVENT)]
        named = [c for c in claims if c["experiment_id"] == judged["peer_experiment_id"]]
        assert sorted(c["seed"] for c in named) == [*SEEDS]
        assert leaderboard.ranked(a, [camp_a]) == []  # A judges B's records the same way
    peers = [c for c in b.list_candidates(camp_b.id) if c.origin is CandidateOrigin.PEER]
    assert len(peers) == 3
    assert not b.list_experiments(camp_b.id, status=ExperimentStatus.QUEUED)


def test_a_config_without_replication_hashes_as_before() -> None:
    plain = small_config(3)
    assert "replication" not in plain.model_dump(mode="json")
    assert plain.config_hash() != _config().config_hash()
    # A rule that does not ask for attested replications hashes as before `attested`.
    assert "attested" not in _config().model_dump(mode="json")["replication"]
    attested = _config(attested=True)
    assert attested.model_dump(mode="json")["replication"]["attested"] is True
    assert attested.config_hash() != _config().config_hash()


def test_the_network_leaderboard_and_show_commands_answer_on_an_empty_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    init_home(home, env={})
    assert main(["--home", str(home), "network", "leaderboard"]) == 0
    assert "no replicated discoveries yet" in capsys.readouterr().out
    assert main(["--home", str(home), "network", "show", "exp-nope"]) != 0
    assert "no discovery with record exp-nope" in capsys.readouterr().err
