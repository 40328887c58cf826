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


def test_a_fork_copies_the_finished_state_up_to_its_position_and_nothing_after(
    store: Store,
) -> None:
    parent = store.create_campaign("x", {"preset": "quick"})
    done = []
    for i in range(3):
        cand = store.add_candidate(
            parent.id, Proposal(name=f"m{i}", motivation="m", code=f"x = {i}\n", origin="offline")
        )
        exp = store.enqueue_experiment(parent.id, cand.id, "candidate", 0)
        store.start_experiment(exp.id)
        store.finish_experiment(exp.id, "done", metrics={"mean_acc": 0.1 * i})
        store.add_insight(parent.id, f"insight {i}", exp.id)
        done.append(exp)
    ledger = DirectiveLedger(store)
    child = ledger.fork(parent.id, "x2", {"preset": "quick", "seed": 1}, position=done[1].seq)
    copied = store.list_experiments(child.id)
    assert [e.seq for e in copied] == [done[0].seq, done[1].seq]
    assert [i.text for i in store.list_insights(child.id)] == ["insight 0", "insight 1"]
    assert {c.name for c in store.list_candidates(child.id)} == {"m0", "m1"}
    assert store.get_experiment(done[0].id).campaign_id == parent.id  # the parent keeps its own
    with pytest.raises(ConflictError, match="in its future"):
        ledger.fork(parent.id, "x3", {"preset": "quick"}, position=99)
    assert [c.name for c in store.list_campaigns()] == ["x", "x2"]  # nothing left behind
