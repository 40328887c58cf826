"""What every Store backend must do for processes sharing a campaign: leases on running
experiments, a budget and a queue that concurrent proposers cannot overshoot or repeat,
one score and one log per experiment. Mixed into test_store.py (SQLite) and
test_store_postgres.py beside `StoreContract`, with the same `db` fixture.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from store_contract import Database, proposal

from node.errors import ConflictError, LeaseLostError
from node.store import Lease, Store

A = Lease(node="node-a", run="r1", seconds=10)
B = Lease(node="node-b", run="r1", seconds=10)


class ManualClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.t = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def mixer(n: int) -> str:
    return f"from kernels.baselines import DeltaNet as Mixer\n# variant {n}\n"


class LeaseContract:
    def _queued(self, db: Database, seeds: int = 1) -> tuple[Store, ManualClock, str]:
        clock = ManualClock()
        store = db.open(now=clock)
        camp = store.create_campaign("shared", {})
        cand = store.add_candidate(camp.id, proposal())
        for seed in range(seeds):
            store.enqueue_experiment(camp.id, cand.id, "candidate", seed)
        return store, clock, camp.id

    def test_a_claim_holds_the_lease_that_renewal_extends(self, db: Database) -> None:
        store, clock, camp = self._queued(db)
        with store:
            exp = store.claim_next_experiment(camp, A)
            assert exp is not None
            assert (exp.lease_owner, exp.lease_expires_at) == (
                "node-a/r1",
                clock.t + timedelta(seconds=10),
            )
            clock.advance(8)
            assert store.renew_leases(A, [exp.id]) == {exp.id}
            renewed = store.get_experiment(exp.id).lease_expires_at
            assert renewed == clock.t + timedelta(seconds=10)
            assert store.renew_leases(B, [exp.id]) == set()  # not B's to renew
            clock.advance(9)  # past the first expiry, within the renewed one
            assert store.recover_interrupted(camp, lease=B) == []
            assert store.get_experiment(exp.id).status == "running"

    def test_an_expired_lease_is_taken_over_and_its_old_runner_records_nothing(
        self, db: Database
    ) -> None:
        store, clock, camp = self._queued(db)
        with store:
            exp = store.claim_next_experiment(camp, A)
            assert exp is not None
            clock.advance(10)  # A stopped renewing: its lease runs out
            assert store.recover_interrupted(camp, lease=B) == [exp.id]
            taken = store.claim_next_experiment(camp, B)
            assert taken is not None and taken.id == exp.id and taken.lease_owner == B.owner
            assert store.renew_leases(A, [exp.id]) == set()
            with pytest.raises(LeaseLostError, match="node-b/r1"):
                store.finish_experiment(exp.id, "done", metrics={"acc": 0.5}, lease=A)
            with pytest.raises(LeaseLostError):
                store.requeue_experiment(exp.id, A)
            done = store.finish_experiment(exp.id, "done", metrics={"acc": 0.7}, lease=B)
            assert (done.status, done.metrics, done.attempts) == ("done", {"acc": 0.7}, 2)
            assert done.lease_expires_at is None and done.lease_owner == B.owner
            with pytest.raises(LeaseLostError):
                store.finish_experiment(exp.id, "done", lease=A)

    def test_a_restarted_node_takes_its_earlier_claims_back_at_once(self, db: Database) -> None:
        store, _clock, camp = self._queued(db, seeds=2)
        with store:
            mine = store.claim_next_experiment(camp, A)
            theirs = store.claim_next_experiment(camp, B)
            assert mine is not None and theirs is not None
            restarted = Lease(node="node-a", run="r2", seconds=10)
            # Neither lease ran out: only node A's earlier run is gone.
            assert store.recover_interrupted(camp, lease=restarted) == [mine.id]
            assert store.get_experiment(theirs.id).status == "running"
            assert store.recover_interrupted(camp, lease=B) == []
            again = store.claim_next_experiment(camp, restarted)
            assert again is not None and again.id == mine.id
            assert store.recover_interrupted(camp, lease=restarted) == []

    def test_a_requeued_experiment_keeps_no_lease(self, db: Database) -> None:
        store, _clock, camp = self._queued(db)
        with store:
            exp = store.claim_next_experiment(camp, A)
            assert exp is not None
            back = store.requeue_experiment(exp.id, A)
            assert (back.status, back.lease_owner, back.lease_expires_at) == ("queued", None, None)

    def test_proposals_stay_within_the_budget_and_are_queued_once(self, db: Database) -> None:
        with db.open() as store:
            camp = store.create_campaign("budget", {}).id
            store.add_candidate(camp, proposal(origin="baseline"))  # not counted
            first = store.add_proposal(camp, proposal(mixer(1), "one"), seed=0, max_generated=2)
            assert first is not None
            cand, exp = first
            assert (exp.candidate_id, exp.role, exp.seed, exp.status) == (
                cand.id,
                "candidate",
                0,
                "queued",
            )
            assert (
                store.add_proposal(camp, proposal(mixer(1), "again"), seed=0, max_generated=2)
                is None
            )
            assert store.add_proposal(camp, proposal(mixer(2), "two"), seed=0, max_generated=2)
            assert (
                store.add_proposal(camp, proposal(mixer(3), "three"), seed=0, max_generated=2)
                is None
            )
            assert len(store.list_candidates(camp)) == 3
            assert [e.seq for e in store.list_experiments(camp)] == [1, 2]

    def test_concurrent_proposers_never_overshoot_the_budget(self, db: Database) -> None:
        with db.open() as store:
            camp = store.create_campaign("race", {}).id

        def propose(n: int) -> bool:
            with db.open() as own:  # a process of its own, as a second node would be
                added = own.add_proposal(
                    camp, proposal(mixer(n % 5), f"p{n}"), seed=0, max_generated=3
                )
                return added is not None

        with ThreadPoolExecutor(max_workers=6) as pool:
            added = list(pool.map(propose, range(12)))
        with db.open() as store:
            exps = store.list_experiments(camp)
            assert sum(added) == 3 == len(store.list_candidates(camp)) == len(exps)
            assert sorted(e.seq for e in exps) == [1, 2, 3]

    def test_an_experiment_is_queued_once_per_seed_when_asked(self, db: Database) -> None:
        with db.open() as store:
            camp = store.create_campaign("once", {}).id
            cand = store.add_candidate(camp, proposal()).id
            first = store.enqueue_experiment(camp, cand, "baseline", 3, once=True)
            assert store.enqueue_experiment(camp, cand, "baseline", 3, once=True) == first
            other = store.enqueue_experiment(camp, cand, "baseline", 4, once=True)
            assert other.seq == first.seq + 1
            assert len(store.list_experiments(camp)) == 2

    def test_an_experiment_is_scored_once_and_recorded_by_one_node(self, db: Database) -> None:
        store, _clock, camp = self._queued(db)
        with store:
            exp = store.claim_next_experiment(camp, A)
            assert exp is not None
            with pytest.raises(ConflictError, match="only a done one"):
                store.score_once(exp.id, 0.1, "f1")
            store.finish_experiment(exp.id, "done", metrics={"acc": 0.5}, lease=A)
            scored = store.score_once(exp.id, 0.1, "f1", "first")
            assert scored is not None and scored.fitness == 0.1
            assert store.score_once(exp.id, 0.2, "f1", "second") is None
            assert store.get_experiment(exp.id).analysis == "first"
            assert store.claim_record(exp.id, "node-b")
            assert store.claim_record(exp.id, "node-b")  # its own, again after a restart
            assert not store.claim_record(exp.id, "node-a")
            assert store.get_experiment(exp.id).recorded_by == "node-b"

    def test_a_lease_refuses_a_bad_owner_or_length(self) -> None:
        with pytest.raises(ValueError, match="without '/'"):
            Lease(node="a/b", run="r", seconds=1)
        with pytest.raises(ValueError, match="positive"):
            Lease(node="a", run="r", seconds=0)
