"""Node obedience: pause stops training and requeues it, resume restarts, stop is final, fork."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime

import pytest
from gov_fakes import FakeClock, FakeSource, GatedEngineer

from attestation.canonical import HashRule, json_sha256
from attestation.keys import NodeKey
from attestation.merkle import leaf_hash
from attestation.schema import ExperimentRole, ExperimentStatus
from governance.directives import DirectiveKind
from governance.watcher import Watcher
from node.campaign.config import Budget, CampaignConfig
from node.campaign.scheduler import CampaignRunner, RunEnd, RunSummary
from node.governed.obey import GovernedNode, config_sha256
from node.store import DirectiveLedger, Store
from node.tlog.log import NodeLog
from node.tlog.records import DIRECTIVE_KIND, EXPERIMENT_KIND, Recorder, predicate_of

P, R, S, F = DirectiveKind.PAUSE, DirectiveKind.RESUME, DirectiveKind.STOP, DirectiveKind.FORK


def config(candidates: int = 2, seed: int = 0) -> CampaignConfig:
    return CampaignConfig(
        preset="quick",
        baselines=("deltanet", "linear"),
        budget=Budget(max_candidates=candidates),
        researcher_seed=seed,
    )


NODES: list[GovernedNode] = []


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s
        for node in NODES:  # no campaign thread outlives its test
            node.shutdown(timeout_s=10)
        NODES.clear()


def governed(
    store: Store,
    engineer: GatedEngineer,
    src: FakeSource,
    *names: str,
    recorder: Recorder | None = None,
    **kw: object,
) -> GovernedNode:
    """A governed node; with `recorder`, runs and directives are logged as the node does."""

    def run(cid: str, stop: threading.Event) -> RunSummary:
        camp = store.get_campaign(cid)
        if recorder is not None:
            recorder.campaign_start(camp)
        runner = CampaignRunner(
            store,
            camp,
            engineer,
            workers=1,
            threads_per_worker=1,  # type: ignore[arg-type]
            node_secret=b"s" * 32,
            stop=stop,
            recorder=recorder,
        )
        summary = runner.run()
        if recorder is not None:
            recorder.campaign_stop(camp, summary.reason)
        return summary

    watcher = Watcher([src], confirmations=2, resolve=lambda n: _resolve(store, n))
    node = GovernedNode(
        store,
        watcher,
        run,
        names,
        stop_deadline_s=5.0,
        recorder=recorder,
        **kw,  # type: ignore[arg-type]
    )
    NODES.append(node)
    return node


def _resolve(store: Store, name: str) -> str:
    try:
        return store.get_campaign(name).id
    except Exception:
        return name


def test_pause_stops_training_within_deadline_and_requeues_it_then_resume_restarts(
    store: Store,
) -> None:
    camp = store.create_campaign("x", config().model_dump(mode="json"))
    other = store.create_campaign("y", config(seed=1).model_dump(mode="json"))
    eng, src = GatedEngineer(), FakeSource(head=100)
    node = governed(store, eng, src, "x")
    assert node.step().started == [camp.id]
    assert eng.started.acquire(timeout=10)  # training is in flight
    running = store.list_experiments(camp.id, status="running")
    assert len(running) == 1

    src.issue(P, "x", 1, height=100)
    report = node.step()
    assert [r.kind for r in report.applied] == ["pause"] and report.stopping == [camp.id]
    report = node.wait_stopped(camp.id, timeout_s=5)
    (stopped,) = report.stopped
    assert stopped.within_deadline and stopped.latency_s < 5
    exp = store.get_experiment(running[0].id)
    assert exp.status == "queued" and exp.attempts == 0  # requeued, not lost, not an attempt
    assert eng.interrupted == [running[0].id]
    assert store.get_campaign(camp.id).status == "paused"
    (row,) = DirectiveLedger(store).list_applied(camp.id)
    assert row.kind == "pause" and row.epoch == 1 and row.source == "evm"
    assert row.detail["stop_latency_s"] == pytest.approx(stopped.latency_s, abs=1e-5)
    assert DirectiveLedger(store).unacknowledged() == [row]

    jobs = len(eng.jobs)
    for _ in range(3):  # nothing of x starts while it is paused
        assert node.step().started == []
    assert len(eng.jobs) == jobs and not store.list_experiments(camp.id, status="running")
    assert store.get_campaign(other.id).status == "created"  # y is not driven by this node

    src.issue(R, "x", 2, height=101)
    assert node.step().started == []  # one confirmation of two
    src.head = 102
    report = node.step()
    assert [r.kind for r in report.applied] == ["resume"] and report.started == [camp.id]
    eng.release.set()
    node.runs[camp.id].thread.join(30)
    node.step()
    assert store.get_campaign(camp.id).status == "done"
    assert all(e.status == "done" for e in store.list_experiments(camp.id))
    assert running[0].id in eng.jobs[jobs:]  # the interrupted experiment ran again


def test_a_stop_is_final_and_a_later_resume_does_not_restart(store: Store) -> None:
    camp = store.create_campaign("x", config().model_dump(mode="json"))
    eng, src = GatedEngineer(), FakeSource(head=None)
    node = governed(store, eng, src, "x")
    node.step()
    assert eng.started.acquire(timeout=10)
    src.issue(S, camp.id, 1)
    node.step()
    node.wait_stopped(camp.id, 5)
    assert store.get_campaign(camp.id).status == "stopped"
    src.issue(R, camp.id, 2)
    assert node.step().started == []
    assert store.get_campaign(camp.id).status == "stopped"


def test_a_node_without_fresh_governance_state_pauses_itself(store: Store) -> None:
    camp = store.create_campaign("x", config().model_dump(mode="json"))
    eng, src, clock = GatedEngineer(), FakeSource(head=None), FakeClock()
    node = governed(store, eng, src, "x")
    node.watcher = Watcher([src], stale_after_s=10, clock=clock)
    assert node.status() == {}  # no step yet
    node.step()
    assert eng.started.acquire(timeout=10)
    status = node.status()
    assert status["campaigns"] == {camp.id: {"state": "running", "running": True}}
    assert status["sources"] == {src.name: {"age_s": 0.0}} and not status["stale"]
    src.down = True
    clock.advance(11)
    assert node.step().stopping == [camp.id]
    status = node.status()
    assert status["stale"] and status["sources"] == {src.name: {"age_s": 11.0}}
    assert status["campaigns"][camp.id]["state"] == "paused"
    node.wait_stopped(camp.id, 5)
    assert store.get_campaign(camp.id).status == "paused"
    src.down = False
    assert node.step().started == [camp.id]
    assert not node.status()["stale"]
    node.shutdown()


def test_a_fork_starts_a_child_from_the_parents_state_at_a_log_size_with_the_named_config(
    store: Store,
) -> None:
    parent = store.create_campaign("x", config().model_dump(mode="json"))
    eng, src = GatedEngineer(), FakeSource(head=None)
    eng.release.set()
    tlog = NodeLog(store, NodeKey.generate())
    node = governed(store, eng, src, "x", recorder=Recorder(tlog, store))
    node.step()
    node.runs[parent.id].thread.join(30)
    node.step()
    done = store.list_experiments(parent.id)
    assert store.get_campaign(parent.id).status == "done" and len(done) >= 4
    records = [e for e in tlog.entries(0, tlog.size) if e.kind == EXPERIMENT_KIND]
    size = records[2].index + 1  # the log just after the parent's third record
    before = {e.subject for e in records[:3]}
    # A fork may name its config by a hash written before RFC 8785 was the one canonical
    # JSON (sorted-keys json.dumps): it still verifies; the child is known by today's hash.
    child_cfg = config(candidates=4).model_dump(mode="json") | {"promote_margin": 1e-05}
    good = json_sha256(child_cfg, HashRule.SORTED_JSON)
    assert good != config_sha256(child_cfg)
    node.configs = lambda h, uri: child_cfg
    root = tlog.root(size)
    fork = {"parent_id": "x", "from_position": size, "checkpoint_root": root}
    src.issue(F, "x-wider", 1, config_hash=b"\x00" * 32, **fork)
    report = node.step()
    assert report.forked == [] and "hashes to" in report.applied[0].detail["refused"]
    src.issue(F, "x-wide", 1, config_hash=good, **fork)
    report = node.step()
    (child_id,) = report.forked
    child = store.get_campaign(child_id)
    assert child.parent_campaign_id == parent.id and child.fork_tree_size == size
    assert child.config_hash == "sha256:" + config_sha256(child_cfg).hex()
    inherited = [e for e in done if e.id in before]
    copied = store.list_experiments(child.id)
    assert [e.seq for e in copied[:3]] == [e.seq for e in inherited]
    assert [e.metrics for e in copied[:3]] == [e.metrics for e in inherited]
    names = {
        c.name
        for c in store.list_candidates(parent.id)
        if c.id in {e.candidate_id for e in inherited}
    }
    assert {c.name for c in store.list_candidates(child.id)} >= names
    assert [c.id for c in DirectiveLedger(store).children(parent.id)] == [child.id]
    (row,) = DirectiveLedger(store).list_applied(child.id)
    assert row.detail["position"] == size and row.detail["experiments"] == 3
    assert predicate_of(
        tlog.entries(row.detail["log_index"], row.detail["log_index"] + 1)[0].envelope
    )["fork"] == {
        "parent": parent.id,
        "child": child.id,
        "position": size,
        "checkpoint_root": "0x" + root.hex(),
        "experiments": 3,
        "pause_parent": False,
        "child_paused": True,
    }
    kinds = [e.kind for e in store.list_events(parent.id)]
    assert "forked_to" in kinds
    # The child starts paused (as the controller starts it); a resume runs it.
    assert child.id not in node.runs
    node.step()
    assert child.id not in node.runs and not node.watcher.allows(child.id)
    src.issue(DirectiveKind.RESUME, "x-wide", 2)
    node.step()
    node.runs[child.id].thread.join(30)  # the child runs with its own budget, from there
    node.step()
    assert len([c for c in store.list_candidates(child.id) if c.origin != "baseline"]) == 4


def test_a_fork_inherits_by_log_index_not_by_sequence_number(store: Store) -> None:
    """Records are appended when experiments finish: #3 may be logged before #2."""
    from loop.proposal import Proposal

    parent = store.create_campaign("x", config().model_dump(mode="json"))
    store.set_campaign_status(parent.id, "done")  # nothing of x runs in this test
    tlog = NodeLog(store, NodeKey.generate())
    recorder = Recorder(tlog, store)
    recorder.campaign_start(parent)
    exps = []
    for i in range(3):
        code = f"x = {i}\n"
        cand = store.add_candidate(
            parent.id, Proposal(name=f"m{i}", motivation="m", code=code, origin="offline")
        )
        exps.append(store.enqueue_experiment(parent.id, cand.id, "candidate", i))
    for exp in exps:
        store.start_experiment(exp.id)
    for exp in (exps[2], exps[0], exps[1]):  # finished, and logged, out of seq order
        store.finish_experiment(exp.id, "done", metrics={"mean_acc": 0.5})
        recorder.experiment_final(exp.id)
    size = tlog.size - 1  # below the last record: #3 and #1, not #2
    ran: list[str] = []

    def run(cid: str, stop: threading.Event) -> RunSummary:
        ran.append(cid)
        return RunSummary(RunEnd.COMPLETE, 0, 0.0)

    src = FakeSource(head=None)
    watcher = Watcher([src], resolve=lambda n: _resolve(store, n))
    node = GovernedNode(store, watcher, run, ["x"], recorder=recorder)
    NODES.append(node)
    child_cfg = config(seed=5).model_dump(mode="json")
    node.configs = lambda h, uri: child_cfg
    src.issue(
        F,
        "x2",
        1,
        parent_id="x",
        from_position=size,
        checkpoint_root=tlog.root(size),
        config_hash=config_sha256(child_cfg),
    )
    (child_id,) = node.step().forked
    assert [e.seq for e in store.list_experiments(child_id)] == [exps[0].seq, exps[2].seq]
    cand = store.list_candidates(child_id)[0]
    later = store.enqueue_experiment(child_id, cand.id, "candidate", 9)
    assert later.seq == exps[2].seq + 1  # the child's own experiments go on from there
    assert ran == []  # paused until governance resumes it, by the name the fork gave it
    src.issue(R, "x2", 2)
    node.step()
    assert ran == [child_id]


def test_a_fork_with_another_root_or_beyond_the_log_is_refused_and_the_refusal_logged(
    store: Store,
) -> None:
    parent = store.create_campaign("x", config().model_dump(mode="json"))
    store.set_campaign_status(parent.id, "done")
    tlog = NodeLog(store, NodeKey.generate())
    recorder = Recorder(tlog, store)
    recorder.campaign_start(parent)
    src = FakeSource(head=None)
    node = GovernedNode(
        store,
        Watcher([src]),
        lambda c, s: RunSummary(RunEnd.COMPLETE, 0, 0.0),
        ["x"],
        recorder=recorder,
    )
    NODES.append(node)
    child_cfg = config(seed=5).model_dump(mode="json")
    node.configs = lambda h, uri: child_cfg
    good = config_sha256(child_cfg)
    for epoch, case in enumerate(("another root", "beyond", "no root"), start=1):
        size = tlog.size  # each refusal is logged too: the log grows
        position, root, reason = {
            "another root": (size, b"\xab" * 32, f"is not this node's log root at size {size}"),
            "beyond": (size + 5, tlog.root(size), f"beyond this node's log (size {size})"),
            "no root": (size, None, "no checkpoint root"),
        }[case]
        src.issue(
            F,
            f"x-{epoch}",
            epoch,
            parent_id="x",
            from_position=position,
            checkpoint_root=root,
            config_hash=good,
        )
        report = node.step()
        (row,) = report.applied
        assert report.forked == [] and reason in row.detail["refused"]
        entry = tlog.entries(row.detail["log_index"], row.detail["log_index"] + 1)[0]
        logged = predicate_of(entry.envelope)
        assert entry.kind == DIRECTIVE_KIND and logged["fork"]["refused"] == row.detail["refused"]
    assert [c.name for c in store.list_campaigns()] == ["x"]  # nothing created

    # A node without a log cannot check a position: refused; "latest" (an SNS fork) works.
    bare = GovernedNode(
        store, Watcher([src]), lambda c, s: RunSummary(RunEnd.COMPLETE, 0, 0.0), ["x"]
    )
    NODES.append(bare)
    bare.configs = node.configs
    src.issue(F, "x-bare", 9, parent_id="x", from_position=0, config_hash=good)
    assert "keeps no transparency log" in bare.step().applied[0].detail["refused"]
    src.issue(F, "x-latest", 10, parent_id="x", config_hash=good)
    (child_id,) = bare.step().forked
    assert store.get_campaign(child_id).fork_tree_size is None


def test_the_audit_finds_no_start_while_paused_and_catches_one(store: Store) -> None:
    from node.governed.records import paused_starts

    camp = store.create_campaign("x", config().model_dump(mode="json"))
    eng, src = GatedEngineer(), FakeSource(head=None)
    node = governed(store, eng, src, "x")
    node.step()
    assert eng.started.acquire(timeout=10)
    src.issue(P, "x", 1)
    node.step()
    node.wait_stopped(camp.id, 5)
    src.issue(R, "x", 2)
    eng.release.set()
    node.step()
    node.runs[camp.id].thread.join(30)
    node.step()
    assert paused_starts(store, camp.id) == []

    # An experiment that runs while a pause is in force is caught.
    ledger = DirectiveLedger(store)
    ledger.record(source="guardian", campaign_id=camp.id, epoch=1, kind="pause")
    cand = store.list_candidates(camp.id)[0]
    exp = store.enqueue_experiment(camp.id, cand.id, "baseline", 99)
    store.start_experiment(exp.id)
    store.finish_experiment(exp.id, "done", metrics={"mean_acc": 0.5})
    (violation,) = paused_starts(store, camp.id)
    assert violation.experiment_id == exp.id and "guardian epoch 1 pause" in violation.directive


def test_applied_directives_are_acknowledged_in_order_and_a_failure_is_retried(
    store: Store,
) -> None:
    from governance.directives import campaign_key
    from governance.errors import SourceError
    from node.governed.records import acknowledge_pending, directive_json_hash

    camp = store.create_campaign("x", config().model_dump(mode="json"))
    ledger = DirectiveLedger(store)
    first = ledger.record(source="evm", campaign_id=camp.id, epoch=1, kind="pause")
    ledger.record(source="evm", campaign_id="*", epoch=1, kind="pause")
    ledger.record(source="evm", campaign_id=camp.id, epoch=2, kind="resume")
    ledger.record(source="sns", campaign_id=camp.id, epoch=40, kind="pause")

    class Acker:
        def __init__(self) -> None:
            self.sent: list[tuple[bytes, int, bytes]] = []
            self.fail_at: int | None = 2

        def acknowledge(self, key: bytes, epoch: int, entry: bytes) -> str:
            if epoch == self.fail_at:
                raise SourceError("rpc down")
            self.sent.append((key, epoch, entry))
            return f"0xtx{epoch}"

    acker = Acker()
    done = acknowledge_pending(store, acker, "evm")
    assert [d.epoch for d in done] == [1]
    assert acker.sent == [(campaign_key(camp.id), 1, directive_json_hash(first))]
    acker.fail_at = None
    assert [d.ack_ref for d in acknowledge_pending(store, acker, "evm")] == ["0xtx2"]
    left = [(d.source, d.campaign_id) for d in ledger.unacknowledged()]
    assert left == [("evm", "*"), ("sns", camp.id)]


def test_a_run_that_pauses_itself_is_not_restarted_every_poll(store: Store) -> None:
    store.create_campaign("x", config().model_dump(mode="json"))
    calls: list[str] = []

    def run(cid: str, stop: threading.Event) -> RunSummary:
        calls.append(cid)
        return RunSummary(RunEnd.PAUSED, 0, 0.0, "LLM calls 200 of 200")

    src = FakeSource(head=None)
    node = GovernedNode(store, Watcher([src]), run, ["x"])
    NODES.append(node)
    node.step()
    node.wait_stopped(store.get_campaign("x").id, 5)
    for _ in range(3):
        assert node.step().started == []
    assert len(calls) == 1
    src.issue(R, "x", 1)
    assert node.step().started == [store.get_campaign("x").id]  # a resume tries again


def test_a_done_campaign_runs_again_once_a_peers_import_queues_work(store: Store) -> None:
    """A peer sync imports into a campaign that already completed: the governed node
    runs it again for those experiments, and leaves it be once they are done."""
    from loop.proposal import Proposal

    camp = store.create_campaign("x", config(candidates=1).model_dump(mode="json"))
    eng, src = GatedEngineer(), FakeSource(head=None)
    eng.release.set()
    node = governed(store, eng, src, "x")
    assert node.step().started == [camp.id]
    node.wait_stopped(camp.id, 30)
    assert store.get_campaign(camp.id).status == "done"
    assert node.step().started == []
    ran = len(eng.jobs)
    peer = Proposal(name="imported", motivation="a peer's", code="# peer\n", origin="peer")
    cand = store.add_candidate(camp.id, peer)
    exp = store.enqueue_experiment(camp.id, cand.id, ExperimentRole.CANDIDATE, 0, once=True)
    assert node.step().started == [camp.id]
    node.wait_stopped(camp.id, 30)
    assert store.get_experiment(exp.id).status is not ExperimentStatus.QUEUED
    assert eng.jobs[ran:] == [exp.id] and store.get_campaign(camp.id).status == "done"
    assert node.step().started == []


def test_a_failing_store_does_not_delay_a_pause_and_the_record_follows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.errors import StoreError

    camp = store.create_campaign("x", config().model_dump(mode="json"))
    eng, src = GatedEngineer(), FakeSource(head=None)
    node = governed(store, eng, src, "x")
    node.step()
    assert eng.started.acquire(timeout=10)
    real = node.ledger.record
    failures = iter([StoreError("database is locked")])

    def flaky(**kw: object) -> object:
        for exc in failures:
            raise exc
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(node.ledger, "record", flaky)
    src.issue(P, "x", 1)
    report = node.step()
    assert report.stopping == [camp.id] and report.applied == []  # obeyed, not yet recorded
    node.wait_stopped(camp.id, 5)
    report = node.step()
    assert [r.kind for r in report.applied] == ["pause"]
    (row,) = DirectiveLedger(store).list_applied(camp.id)
    assert row.detail["within_deadline"] is True


def test_each_applied_directive_is_one_signed_log_entry_even_across_a_failed_record_and_a_restart(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.errors import StoreError

    camp = store.create_campaign("x", config().model_dump(mode="json"))
    store.set_campaign_status(camp.id, "done")  # no runs: only the directives matter here
    tlog = NodeLog(store, NodeKey.generate())
    recorder = Recorder(tlog, store)

    def idle(cid: str, stop: threading.Event) -> RunSummary:
        return RunSummary(RunEnd.COMPLETE, 0, 0.0)

    src = FakeSource(head=None)
    node = GovernedNode(store, Watcher([src]), idle, ["x"], recorder=recorder)
    NODES.append(node)
    real = node.ledger.record
    failures = iter([StoreError("database is locked")])

    def flaky(**kw: object) -> object:
        for exc in failures:
            raise exc  # after the log append: the retry must not append again
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(node.ledger, "record", flaky)
    src.issue(P, "x", 1, ref="0xp")
    assert node.step().applied == []
    (row,) = node.step().applied
    entries = [e for e in tlog.entries(0, tlog.size) if e.kind == DIRECTIVE_KIND]
    assert [e.index for e in entries] == [row.detail["log_index"]]
    logged = predicate_of(entries[0].envelope)
    assert logged["node_id"] == tlog.node_id
    assert (logged["source"], logged["campaign_id"], logged["epoch"]) == ("evm", camp.id, 1)
    assert (logged["kind"], logged["ref"]) == ("pause", "0xp")
    assert datetime.fromisoformat(logged["applied_at"]) == row.applied_at

    # A crash after the append and before the store's row: the restarted node applies the
    # directive again and finds its entry (same index, same applied_at).
    with store._session(write=True) as s:  # the row never got written
        from node.store.governance import GovernanceDirective

        s.delete(s.get(GovernanceDirective, row.id))
    src2 = FakeSource(head=None)
    again = GovernedNode(store, Watcher([src2]), idle, ["x"], recorder=recorder)
    NODES.append(again)
    src2.issue(P, "x", 1, ref="0xp")
    (redone,) = again.step().applied
    assert redone.detail["log_index"] == row.detail["log_index"]
    assert redone.applied_at == row.applied_at
    assert sum(e.kind == DIRECTIVE_KIND for e in tlog.entries(0, tlog.size)) == 1


def test_an_acknowledgement_commits_to_the_directives_log_leaf_or_says_it_could_not(
    store: Store,
) -> None:
    from attestation.merkle import verify_inclusion
    from node.governed.records import acknowledge_pending

    camp = store.create_campaign("x", config().model_dump(mode="json"))
    store.set_campaign_status(camp.id, "done")
    tlog = NodeLog(store, NodeKey.generate())
    src = FakeSource(head=None)
    node = GovernedNode(
        store,
        Watcher([src]),
        lambda c, s: RunSummary(RunEnd.COMPLETE, 0, 0.0),
        ["x"],
        recorder=Recorder(tlog, store),
    )
    NODES.append(node)
    src.issue(P, "x", 1)
    src.issue(R, "x", 2)
    node.step()
    first, second = DirectiveLedger(store).list_applied(camp.id)
    # The second's entry goes missing from the log's point of view (a wrong index).
    DirectiveLedger(store).update_detail(second.id, {"log_index": first.detail["log_index"]})

    class Acker:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def acknowledge(self, key: bytes, epoch: int, entry: bytes) -> str:
            self.sent.append(entry)
            return f"0xtx{epoch}"

    acker = Acker()
    done = acknowledge_pending(store, acker, "evm")
    index = first.detail["log_index"]
    entry = tlog.entries(index, index + 1)[0]
    assert acker.sent[0] == leaf_hash(entry.envelope)
    proof = tlog.inclusion_proof(index, tlog.size)
    verify_inclusion(index, tlog.size, acker.sent[0], proof, tlog.root(tlog.size))
    assert done[0].detail["ack_commits_to"] == f"log entry {index} (Merkle leaf hash)"
    assert done[0].detail["ack_entry_hash"] == "0x" + acker.sent[0].hex()
    assert acker.sent[1] != acker.sent[0]
    assert "missing" in done[1].detail["ack_commits_to"]


def test_a_superseded_directive_is_recorded_and_acknowledged_in_epoch_order(
    store: Store,
) -> None:
    from node.governed.records import acknowledge_pending

    camp = store.create_campaign("x", config().model_dump(mode="json"))
    tlog = NodeLog(store, NodeKey.generate())
    src = FakeSource(head=100)
    node = governed(store, GatedEngineer(), src, "x", recorder=Recorder(tlog, store))
    src.issue(P, camp.id, 1, height=90)
    node.step()
    src.issue(R, camp.id, 2, height=100)  # not confirmed yet ...
    src.issue(P, camp.id, 3, height=100)  # ... and overtaken by a pause
    report = node.step()
    rows = DirectiveLedger(store).list_applied(camp.id)
    assert [(r.epoch, r.kind, r.detail.get("superseded_by")) for r in rows] == [
        (1, "pause", None),
        (2, "resume", 3),
        (3, "pause", None),
    ]
    assert [r.epoch for r in report.applied] == [2, 3]
    logged = predicate_of(
        tlog.entries(rows[1].detail["log_index"], rows[1].detail["log_index"] + 1)[0].envelope
    )
    assert logged["superseded_by"] == 3 and logged["kind"] == "resume"
    assert not node.watcher.allows(camp.id)  # the resume never took effect

    class Acker:
        def __init__(self) -> None:
            self.epochs: list[int] = []

        def acknowledge(self, key: bytes, epoch: int, entry: bytes) -> str:
            self.epochs.append(epoch)
            return f"0xtx{epoch}"

    acker = Acker()
    acknowledge_pending(store, acker, "evm")
    assert acker.epochs == [1, 2, 3]  # the controller takes epochs one after another


def test_a_revoked_node_pauses_its_campaigns_and_resumes_them_once_approved_again(
    store: Store,
) -> None:
    camp = store.create_campaign("x", config().model_dump(mode="json"))
    eng, src = GatedEngineer(), FakeSource(head=None)
    node = governed(store, eng, src, "x")
    node.step()
    assert eng.started.acquire(timeout=10)
    src.revoked = True  # revoked, or its TEE measurement removed
    node.step()
    node.wait_stopped(camp.id, 5)
    assert store.get_campaign(camp.id).status == "paused"  # not stopped: it may come back
    assert node.status()["revoked"] is True
    src.revoked = False  # governance approves it again
    assert node.step().started == [camp.id]


def test_a_stop_not_yet_final_pauses_and_one_that_leaves_the_chain_is_undone(
    store: Store,
) -> None:
    from attestation.audit import verify_bundle
    from node.governed.records import paused_starts

    camp = store.create_campaign("x", config().model_dump(mode="json"))
    tlog = NodeLog(store, NodeKey.generate())
    eng, src = GatedEngineer(), FakeSource(head=100)
    node = governed(store, eng, src, "x", recorder=Recorder(tlog, store))
    node.step()
    assert eng.started.acquire(timeout=10)
    src.issue(S, camp.id, 1, height=100)
    node.step()
    node.wait_stopped(camp.id, 5)
    assert store.get_campaign(camp.id).status == "paused"  # held, not over
    src.reorged.add((camp.id, 1))  # the stop's block left the chain
    src.head = 110
    assert node.step().started == [camp.id]
    assert eng.started.acquire(timeout=10)  # training again
    eng.release.set()
    node.runs[camp.id].thread.join(30)
    node.step()
    assert store.get_campaign(camp.id).status != "stopped"
    # Both replays, the store's and the log's, lift the stop's hold from its undoing on.
    assert paused_starts(store, camp.id) == []
    tlog.checkpoint()
    verified = verify_bundle(tlog.export().to_bytes(), tlog.key.public.fingerprint)
    assert verified.records.starts_checked >= 2
