"""The store's record of applied directives and forks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loop.proposal import Proposal
from node.errors import ConflictError
from node.store import DirectiveLedger, Store


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


def test_recording_a_directive_twice_keeps_one_row(store: Store) -> None:
    camp = store.create_campaign("x", {"preset": "quick"})
    ledger = DirectiveLedger(store)
    first = ledger.record(source="evm", campaign_id=camp.id, epoch=4, kind="pause", ref="0x1")
    again = ledger.record(source="evm", campaign_id=camp.id, epoch=4, kind="pause", ref="0x1")
    assert first == again and len(ledger.list_applied(camp.id)) == 1
    assert ledger.applied_epochs() == {("evm", camp.id): 4}
    assert [e.kind for e in store.list_events(camp.id, kind="directive_applied")] == [
        "directive_applied"
    ]
    ledger.mark_acknowledged(first.id, "0xack")
    with pytest.raises(ConflictError, match="acknowledged"):
        ledger.mark_acknowledged(first.id, "0xack")


def test_a_fork_copies_exactly_the_named_finished_experiments_and_nothing_else(
    store: Store,
) -> None:
    parent = store.create_campaign("x", {"preset": "quick"})
    done = []
    for i in range(4):
        cand = store.add_candidate(
            parent.id, Proposal(name=f"m{i}", motivation="m", code=f"x = {i}\n", origin="offline")
        )
        exp = store.enqueue_experiment(parent.id, cand.id, "candidate", 0)
        store.start_experiment(exp.id)
        if i < 3:
            store.finish_experiment(exp.id, "done", metrics={"mean_acc": 0.1 * i})
            store.add_insight(parent.id, f"insight {i}", exp.id)
        done.append(exp)
    ledger = DirectiveLedger(store)
    # The log held #1 and #3 below the fork's size (#2 finished later): not a seq prefix.
    picked = [done[0].id, done[2].id]
    child = ledger.fork(
        parent.id, "x2", {"preset": "quick", "seed": 1}, experiments=picked, tree_size=7
    )
    copied = store.list_experiments(child.id)
    assert [e.seq for e in copied] == [done[0].seq, done[2].seq]
    assert [i.text for i in store.list_insights(child.id)] == ["insight 0", "insight 2"]
    assert {c.name for c in store.list_candidates(child.id)} == {"m0", "m2"}
    assert store.get_campaign(child.id).fork_tree_size == 7
    assert store.get_experiment(done[0].id).campaign_id == parent.id  # the parent keeps its own
    (lineage,) = store.list_events(child.id, kind="forked_from")
    assert lineage.payload["position"] == 7 and lineage.payload["experiments"] == 2

    with pytest.raises(ConflictError, match="is running"):
        ledger.fork(parent.id, "x3", {"preset": "quick"}, experiments=[done[3].id])
    with pytest.raises(ConflictError, match="no experiment exp-nope"):
        ledger.fork(parent.id, "x4", {"preset": "quick"}, experiments=["exp-nope"])
    assert [c.name for c in store.list_campaigns()] == ["x", "x2"]  # nothing left behind

    every = ledger.fork(parent.id, "x5", {"preset": "quick", "seed": 2})  # None: all finished
    assert len(store.list_experiments(every.id)) == 3 and every.fork_tree_size is None
