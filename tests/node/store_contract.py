"""What every Store backend must do: run by test_store.py (SQLite) and test_store_postgres.py.

A test class inherits `StoreContract` and provides two fixtures: `db`, a `Database`
naming a fresh, empty database, and `store`, that database opened with a `TickingClock`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from loop.proposal import Proposal, code_digest
from node.errors import ConflictError, CorruptStoreError, NotFoundError
from node.store import CampaignRow, Store
from node.store.migrations import MIGRATIONS, current_version, revisions, upgrade
from node.store.rows import LLMUsage

MIXER = "from kernels.baselines import DeltaNet as Mixer\n"


@dataclass(frozen=True)
class Database:
    """A database to open, as `Store.open` takes it."""

    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)

    def open(self, now: Any = None) -> Store:
        return Store.open(self.url, connect_args=self.connect_args, now=now)


class TickingClock:
    """A clock that moves one millisecond per reading, so every timestamp is distinct."""

    def __init__(self) -> None:
        self._t = datetime(2025, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self._t += timedelta(milliseconds=1)
            return self._t


def proposal(code: str = MIXER, name: str = "deltanet", **kw: Any) -> Proposal:
    return Proposal(name=name, motivation=f"why {name}", code=code, **kw)


def make_pre_alembic(engine: sa.Engine, step: int) -> None:
    """A database as asi-node left it before alembic: its first `step` revisions applied
    (their DDL is the old steps', frozen) and recorded in `schema_version`, which is
    created as that code created it."""
    upgrade(engine, MIGRATIONS[step - 1])
    legacy = sa.Table(
        "schema_version",
        sa.MetaData(),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )
    when = datetime(2025, 6, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
        legacy.create(conn)
        for number, rev in enumerate(revisions()[:step], start=1):
            conn.execute(
                legacy.insert().values(version=number, description=rev.description, applied_at=when)
            )


def raw_execute(store: Store, sql: str, **params: Any) -> list[Any]:
    """Reach past the Store's API, as an attacker or a broken tool would."""
    with store._engine.begin() as conn:  # the test plays the outside world
        result = conn.execute(sa.text(sql), params)
        return list(result) if result.returns_rows else []


class StoreContract:
    def test_campaign_round_trips_by_id_and_by_name(self, store: Store) -> None:
        config = {"task": "mqar", "budget": {"max_candidates": 3}, "seed": 0}
        row = store.create_campaign("alpha", config)
        assert row.id.startswith("c-") and len(row.id) == 10
        assert row.status == "created"
        assert row.config == config
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
        assert row.config_hash == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
        assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timedelta(0)
        assert store.get_campaign(row.id) == row
        assert store.get_campaign("alpha") == row
        assert store.list_campaigns() == [row]

    def test_duplicate_campaign_name_is_a_conflict(self, store: Store) -> None:
        store.create_campaign("alpha", {})
        with pytest.raises(ConflictError, match="already exists"):
            store.create_campaign("alpha", {"other": 1})

    def test_unknown_campaign_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError, match="nope"):
            store.get_campaign("nope")

    def test_campaign_name_that_looks_like_an_id_is_refused(self, store: Store) -> None:
        with pytest.raises(ValueError, match="looks like a campaign id"):
            store.create_campaign("c-0123abcd", {})

    def test_status_change_is_recorded_and_stop_is_final(self, store: Store) -> None:
        camp = store.create_campaign("alpha", {})
        running = store.set_campaign_status(camp.id, "running")
        assert running.status == "running" and running.updated_at > camp.updated_at
        store.set_campaign_status(camp.id, "stopped")
        with pytest.raises(ConflictError, match="stopped"):
            store.set_campaign_status(camp.id, "running")
        kinds = [(e.kind, e.payload) for e in store.list_events(camp.id)]
        assert kinds[1:] == [
            ("campaign_status", {"from": "created", "to": "running"}),
            ("campaign_status", {"from": "running", "to": "stopped"}),
        ]
        with pytest.raises(ValueError, match="unknown campaign status"):
            store.set_campaign_status(camp.id, "sleeping")

    def test_fork_records_its_parent(self, store: Store) -> None:
        parent = store.create_campaign("parent", {})
        child = store.create_campaign("child", {}, parent_campaign_id=parent.id, fork_tree_size=42)
        assert (child.parent_campaign_id, child.fork_tree_size) == (parent.id, 42)
        with pytest.raises(NotFoundError, match="parent campaign"):
            store.create_campaign("orphan", {}, parent_campaign_id="c-00000000")

    def test_same_code_has_one_address_and_one_blob(self, store: Store) -> None:
        first = store.put_code(MIXER)
        assert first == store.put_code(MIXER) == code_digest(MIXER)
        assert store.get_code(first) == MIXER
        assert raw_execute(store, "SELECT count(*) FROM code_blob")[0][0] == 1

    def test_tampered_code_blob_is_reported_as_corrupt(self, store: Store) -> None:
        digest = store.put_code(MIXER)
        raw_execute(store, "UPDATE code_blob SET code = :c", c=MIXER + "import os\n")
        with pytest.raises(CorruptStoreError, match="does not match"):
            store.get_code(digest)
        with pytest.raises(CorruptStoreError):
            store.put_code(MIXER)

    def test_unknown_code_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError):
            store.get_code(code_digest("nothing"))

    def test_same_code_twice_in_a_campaign_is_one_candidate(self, store: Store) -> None:
        camp = store.create_campaign("alpha", {})
        other = store.create_campaign("beta", {})
        first = store.add_candidate(camp.id, proposal(parent_ids=("p1",), options={"k": 2}))
        again = store.add_candidate(camp.id, proposal(name="renamed"))
        elsewhere = store.add_candidate(other.id, proposal())
        assert again == first
        assert first.name == "deltanet" and first.digest == code_digest(MIXER)
        assert first.parent_ids == ("p1",)
        assert first.options == {"k": 2}
        assert store.get_candidate(first.id) == first
        assert store.list_candidates(camp.id) == [first]
        assert elsewhere.id != first.id and elsewhere.digest == first.digest
        assert raw_execute(store, "SELECT count(*) FROM code_blob")[0][0] == 1

    def test_candidate_needs_an_existing_campaign(self, store: Store) -> None:
        with pytest.raises(NotFoundError):
            store.add_candidate("c-00000000", proposal())
        with pytest.raises(NotFoundError):
            store.get_candidate("cand-000000000000")

    def _campaign_with_candidate(self, store: Store, name: str = "alpha") -> tuple[str, str]:
        camp = store.create_campaign(name, {})
        cand = store.add_candidate(camp.id, proposal())
        return camp.id, cand.id

    def test_sequence_numbers_count_per_campaign(self, store: Store) -> None:
        a, ca = self._campaign_with_candidate(store, "alpha")
        b, cb = self._campaign_with_candidate(store, "beta")
        seqs = [
            store.enqueue_experiment(a, ca, "baseline", 0).seq,
            store.enqueue_experiment(a, ca, "rerun", 1).seq,
            store.enqueue_experiment(b, cb, "candidate", 0).seq,
        ]
        assert seqs == [1, 2, 1]
        with pytest.raises(NotFoundError, match="not found in campaign"):
            store.enqueue_experiment(a, cb, "candidate", 0)
        with pytest.raises(ValueError, match="role"):
            store.enqueue_experiment(a, ca, "extra", 0)

    def test_claim_takes_the_oldest_queued_experiment(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        first = store.enqueue_experiment(camp, cand, "baseline", 0)
        second = store.enqueue_experiment(camp, cand, "rerun", 1)
        claimed = store.claim_next_experiment(camp)
        assert claimed is not None and claimed.id == first.id
        assert (claimed.status, claimed.attempts) == ("running", 1)
        assert claimed.started_at is not None
        again = store.claim_next_experiment(camp)
        assert again is not None and again.id == second.id
        assert store.claim_next_experiment(camp) is None

    def test_finish_records_the_outcome_and_its_metrics(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        for seed in (0, 1):
            store.enqueue_experiment(camp, cand, "candidate", seed)
        runs = [store.claim_next_experiment(camp) for _ in range(2)]
        assert runs[0] is not None and runs[1] is not None
        done = store.finish_experiment(
            runs[0].id,
            "done",
            screen={"checks": [{"name": "causal", "passed": True}]},
            train={"steps": 1500},
            metrics={"mean_acc": 0.75, "params": 1234.0},
            fitness=0.1,
            fitness_version="v1",
            timings={"total_s": 12.5},
            analysis="fine",
        )
        assert done.status == "done" and done.finished_at is not None
        assert (done.metrics or {}) == {"mean_acc": 0.75, "params": 1234.0}
        assert (done.timings or {}) == {"total_s": 12.5}
        assert (done.fitness, done.fitness_version, done.analysis) == (0.1, "v1", "fine")
        assert store.get_experiment(done.id) == done
        failed = store.finish_experiment(
            runs[1].id, "failed", failure_class="timeout", metrics={"mean_acc": 0.25}
        )
        assert failed.failure_class == "timeout"
        ranked = store.best_by_metric(camp, "mean_acc")
        assert [(e.id, v) for e, v in ranked] == [(done.id, 0.75), (failed.id, 0.25)]

    def test_only_a_running_experiment_can_be_finished(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        queued = store.enqueue_experiment(camp, cand, "candidate", 0)
        with pytest.raises(ConflictError, match="queued, not running"):
            store.finish_experiment(queued.id, "done")
        store.claim_next_experiment(camp)
        store.finish_experiment(queued.id, "done")
        with pytest.raises(ConflictError, match="done, not running"):
            store.finish_experiment(queued.id, "failed", failure_class="crash")
        with pytest.raises(NotFoundError):
            store.finish_experiment("exp-000000000000", "done")

    def test_finish_refuses_inconsistent_outcomes(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        store.enqueue_experiment(camp, cand, "candidate", 0)
        run = store.claim_next_experiment(camp)
        assert run is not None
        with pytest.raises(ValueError, match="needs a failure_class"):
            store.finish_experiment(run.id, "failed")
        with pytest.raises(ValueError, match="no failure class"):
            store.finish_experiment(run.id, "done", failure_class="crash")
        with pytest.raises(ValueError, match="finite"):
            store.finish_experiment(run.id, "done", metrics={"loss": float("nan")})
        with pytest.raises(ValueError):
            store.finish_experiment(run.id, "failed", failure_class="gremlins")
        assert store.get_experiment(run.id).status == "running"

    def test_score_is_set_on_done_experiments_only(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        exp = store.enqueue_experiment(camp, cand, "candidate", 0)
        with pytest.raises(ConflictError, match="only a done one"):
            store.set_experiment_score(exp.id, 0.5, "v1")
        store.claim_next_experiment(camp)
        store.finish_experiment(exp.id, "done", analysis="first")
        scored = store.set_experiment_score(exp.id, 0.5, "v1")
        assert (scored.fitness, scored.fitness_version, scored.analysis) == (0.5, "v1", "first")
        rescored = store.set_experiment_score(exp.id, 0.25, "v2", "second")
        assert (rescored.fitness, rescored.analysis) == (0.25, "second")

    def test_requeue_after_a_pause_does_not_count_as_an_attempt(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        exp = store.enqueue_experiment(camp, cand, "candidate", 0)
        store.claim_next_experiment(camp)
        back = store.requeue_experiment(exp.id)
        assert (back.status, back.attempts, back.started_at) == ("queued", 0, None)
        events = store.list_events(camp, kind="experiment_requeued")
        assert [e.payload for e in events] == [{"experiment": exp.id}]
        with pytest.raises(ConflictError):
            store.requeue_experiment(exp.id)

    def test_crash_recovery_requeues_then_gives_up(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        exp = store.enqueue_experiment(camp, cand, "candidate", 0)
        untouched = store.enqueue_experiment(camp, cand, "rerun", 1)
        store.claim_next_experiment(camp)  # attempt 1, then the node "crashes"
        assert store.recover_interrupted(camp) == [exp.id]
        again = store.get_experiment(exp.id)
        assert (again.status, again.attempts, again.started_at) == ("queued", 1, None)
        store.claim_next_experiment(camp)  # attempt 2, and it crashes the node again
        assert store.recover_interrupted(camp, max_attempts=2) == [exp.id]
        given_up = store.get_experiment(exp.id)
        assert (given_up.status, given_up.failure_class) == ("failed", "interrupted")
        assert store.get_experiment(untouched.id).status == "queued"
        payloads = [e.payload for e in store.list_events(camp, kind="crash_recovery")]
        assert payloads == [
            {"requeued": [exp.id], "failed": []},
            {"requeued": [], "failed": [exp.id]},
        ]
        assert store.recover_interrupted(camp) == []

    def test_an_experiment_finished_as_interrupted_runs_again(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        exp = store.enqueue_experiment(camp, cand, "candidate", 0)
        store.claim_next_experiment(camp)
        stopped = store.finish_experiment(exp.id, "interrupted")
        assert (stopped.status, stopped.failure_class) == ("interrupted", "interrupted")
        assert store.recover_interrupted(camp) == [exp.id]
        again = store.get_experiment(exp.id)
        assert (again.status, again.failure_class) == ("queued", None)

    def test_listing_and_counting_filter_by_status(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        ids = [store.enqueue_experiment(camp, cand, "candidate", s).id for s in range(3)]
        store.claim_next_experiment(camp)
        assert [e.id for e in store.list_experiments(camp)] == ids
        assert [e.id for e in store.list_experiments(camp, status="queued")] == ids[1:]
        assert store.count_experiments(camp) == 3
        assert store.count_experiments(camp, status="running") == 1
        with pytest.raises(ValueError):
            store.count_experiments(camp, status="lost")

    def test_experiment_stats_group_by_campaign_and_status(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        ids = [store.enqueue_experiment(camp, cand, "candidate", s).id for s in range(4)]
        for exp_id, fitness in zip(ids[:2], (0.25, -0.5), strict=True):
            store.claim_next_experiment(camp)
            store.finish_experiment(exp_id, "done")
            store.set_experiment_score(exp_id, fitness, "v1")
        store.claim_next_experiment(camp)
        assert sorted(store.experiment_stats()) == [
            (camp, "done", 2, 0.25),
            (camp, "queued", 1, None),
            (camp, "running", 1, None),
        ]

    def test_concurrent_claims_never_share_an_experiment(self, store: Store, db: Database) -> None:
        camp, cand = self._campaign_with_candidate(store)
        for seed in range(40):
            store.enqueue_experiment(camp, cand, "candidate", seed)
        stores = [db.open() for _ in range(4)]
        claimed: list[list[str]] = [[] for _ in stores]
        start = threading.Barrier(len(stores))

        def worker(i: int) -> None:
            start.wait()
            while (exp := stores[i].claim_next_experiment(camp)) is not None:
                claimed[i].append(exp.id)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in stores:
            s.close()
        every = [e for ids in claimed for e in ids]
        assert len(every) == len(set(every)) == 40
        assert all(e.attempts == 1 for e in store.list_experiments(camp))

    def test_insights_come_back_most_recent_last(self, store: Store) -> None:
        camp, cand = self._campaign_with_candidate(store)
        exp = store.enqueue_experiment(camp, cand, "candidate", 0)
        for i in range(4):
            store.add_insight(camp, f"lesson {i}", exp.id if i == 0 else None)
        assert [i.text for i in store.list_insights(camp)] == [f"lesson {i}" for i in range(4)]
        assert [i.text for i in store.list_insights(camp, limit=2)] == ["lesson 2", "lesson 3"]
        assert store.list_insights(camp)[0].experiment_id == exp.id
        with pytest.raises(NotFoundError):
            store.add_insight(camp, "orphan", "exp-000000000000")

    def test_events_page_in_order(self, store: Store) -> None:
        camp = store.create_campaign("alpha", {})
        node_wide = store.add_event(None, "node_started", {"version": "0.1.0"})
        mine = store.add_event(camp.id, "run_started", {"config_hash": camp.config_hash})
        assert mine.id > node_wide.id
        every = store.list_events()
        assert [e.kind for e in every] == ["campaign_created", "node_started", "run_started"]
        assert [e.kind for e in store.list_events(camp.id)] == ["campaign_created", "run_started"]
        assert store.list_events(after_id=node_wide.id) == [mine]
        assert store.list_events(limit=1) == every[:1]
        with pytest.raises(NotFoundError):
            store.add_event("c-00000000", "run_started")

    def test_rows_are_frozen_copies(self, store: Store) -> None:
        row = store.create_campaign("alpha", {})
        with pytest.raises(dataclasses.FrozenInstanceError):
            row.status = "running"  # type: ignore[misc]
        assert isinstance(row, CampaignRow)
        assert store.get_campaign(row.id).status == "created"

    def test_llm_exchanges_are_kept_in_full_and_summed_as_counts_and_digests(
        self, store: Store
    ) -> None:
        camp = store.create_campaign("alpha", {})
        cand = store.add_candidate(camp.id, proposal())
        exp = store.enqueue_experiment(camp.id, cand.id, "candidate", 0)
        assert store.start_experiment(exp.id).status == "running"
        with pytest.raises(ConflictError, match="not queued"):
            store.start_experiment(exp.id)
        call = {
            "role": "researcher",
            "purpose": "propose",
            "model": "m",
            "status": "ok",
            "prompt": '[{"role": "user", "content": "write a Mixer"}]',
            "completion": '{"code": "class Mixer: ..."}',
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "cost_usd": 0.002,
            "latency_s": 1.5,
            "structured": True,
        }
        failed = call | {"status": "timeout", "completion": "", "completion_tokens": 0}
        rows = store.add_llm_exchanges(camp.id, exp.id, [call, failed])
        store.add_llm_exchanges(camp.id, None, [call])
        assert rows[0].prompt == call["prompt"] and rows[0].structured is True
        assert (
            rows[0].prompt_sha256
            == "sha256:" + hashlib.sha256(str(call["prompt"]).encode()).hexdigest()
        )
        assert len(store.list_llm_exchanges(camp.id)) == 3
        usage = store.llm_usage(camp.id, exp.id)
        assert (usage.calls, usage.failed, usage.tokens) == (2, 1, 270)
        assert usage.seconds == pytest.approx(3.0) and usage.cost_usd == pytest.approx(0.004)
        assert store.llm_usage(camp.id).calls == 3  # with the call of no experiment
        empty = store.create_campaign("no-llm", {"preset": "quick"})
        assert store.llm_usage(empty.id) == LLMUsage()
        summary = store.refresh_experiment_llm(exp.id).llm or {}
        assert summary["calls"] == 2 and summary["models"] == ["m"]
        assert summary["exchanges"][0]["completion"] == rows[0].completion_sha256
        assert "Mixer" not in json.dumps(summary)
        with pytest.raises(NotFoundError):
            store.add_llm_exchanges("c-00000000", None, [call])

    def test_migrated_schema_matches_the_models(self, store: Store) -> None:
        inspector = sa.inspect(store._engine)
        tables = set(inspector.get_table_names())
        assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}
        for name, table in SQLModel.metadata.tables.items():
            columns = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
            assert columns == {c.name: c.nullable for c in table.columns}, name

    def test_reopening_is_idempotent(self, store: Store, db: Database) -> None:
        camp = store.create_campaign("alpha", {})
        for _ in range(2):
            with db.open() as again:
                assert again.get_campaign(camp.id) == camp
        assert current_version(store._engine) == len(MIGRATIONS)
        assert raw_execute(store, "SELECT version_num FROM alembic_version") == [(MIGRATIONS[-1],)]
