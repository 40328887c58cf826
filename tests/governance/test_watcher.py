"""The directive watcher: restrictive wins, confirmations, epoch order, revocation, staleness."""

from __future__ import annotations

import logging

import pytest
from gov_fakes import FakeClock, FakeSource

from governance.directives import (
    ALL_CAMPAIGNS,
    CampaignState,
    Directive,
    DirectiveKind,
    campaign_key,
    campaign_of_key,
    most_restrictive,
)
from governance.watcher import Watcher

P, R, S, F = DirectiveKind.PAUSE, DirectiveKind.RESUME, DirectiveKind.STOP, DirectiveKind.FORK
RUNNING, PAUSED, STOPPED = CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.STOPPED


def watcher(*sources: FakeSource, clock: FakeClock | None = None, **kw: object) -> Watcher:
    return Watcher(list(sources), clock=clock or FakeClock(), **kw)  # type: ignore[arg-type]


def test_a_pause_applies_on_the_first_poll_without_confirmations() -> None:
    src = FakeSource(head=100)
    w = watcher(src, confirmations=5)
    src.issue(P, "c-1", 1, height=100)
    result = w.poll()
    assert [a.directive.kind for a in result.applied] == [P]
    assert result.applied[0].confirmations == 1
    assert w.state("c-1") is PAUSED and not w.allows("c-1")
    assert w.allows("c-2")


def test_a_resume_waits_for_its_confirmations() -> None:
    src = FakeSource(head=100)
    w = watcher(src, confirmations=3)
    src.issue(P, "c-1", 1, height=90)
    w.poll()
    src.issue(R, "c-1", 2, height=100)
    assert w.poll().applied == ()
    assert w.state("c-1") is PAUSED
    src.head = 101
    assert w.poll().applied == ()
    src.head = 102
    applied = w.poll().applied
    assert [(a.directive.kind, a.confirmations) for a in applied] == [(R, 3)]
    assert w.allows("c-1")


def test_a_pause_supersedes_an_unconfirmed_resume_before_it() -> None:
    src = FakeSource(head=100)
    w = watcher(src, confirmations=3)
    src.issue(P, "c-1", 1, height=90)
    w.poll()
    src.issue(R, "c-1", 2, height=100)
    src.issue(P, "c-1", 3, height=100)
    result = w.poll()
    assert [a.directive.epoch for a in result.applied] == [3]
    # Overtaken, never in effect, but reported so the node records every epoch in order.
    assert [(s.directive.epoch, s.by.epoch) for s in result.superseded] == [(2, 3)]
    assert result.ignored == ()
    src.head = 200
    assert w.poll().applied == ()
    assert w.state("c-1") is PAUSED


def test_directives_apply_in_epoch_order_and_stale_epochs_are_ignored_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    src = FakeSource(head=None)  # final answers: no confirmations to wait for
    w = watcher(src)
    src.issue(R, "c-1", 3)
    src.issue(P, "c-1", 2)
    applied = w.poll().applied
    assert [a.directive.epoch for a in applied] == [2, 3]
    assert w.state("c-1") is RUNNING
    src.issue(P, "c-1", 3)
    src.issue(P, "c-1", 1)
    with caplog.at_level(logging.WARNING, logger="governance.watcher"):
        result = w.poll()
    assert result.applied == ()
    # epoch 1 was never applied here: stale; epoch 3 was, so seeing it again is silent
    assert [i.directive.epoch for i in result.ignored] == [1]
    assert any(r.getMessage() == "directive ignored" for r in caplog.records)
    assert w.state("c-1") is RUNNING


def test_the_most_restrictive_source_wins() -> None:
    evm, sns = FakeSource("evm", head=None), FakeSource("sns", head=None)
    w = watcher(evm, sns)
    sns.issue(P, "c-1", 10)
    evm.issue(R, "c-1", 4)
    w.poll()
    assert w.state("c-1") is PAUSED
    sns.issue(R, "c-1", 11)
    evm.issue(S, "c-1", 5)
    w.poll()
    assert w.state("c-1") is STOPPED
    assert most_restrictive([R, F, P]) is P and most_restrictive([]) is None


def test_a_status_snapshot_pauses_even_without_the_event() -> None:
    src = FakeSource(head=None)
    w = watcher(src)
    src.states = {"c-1": PAUSED}
    w.poll()
    assert w.state("c-1") is PAUSED
    src.states = {"c-1": RUNNING}
    w.poll()
    assert w.state("c-1") is RUNNING


def test_a_global_pause_pauses_every_campaign() -> None:
    src = FakeSource(head=None)
    w = watcher(src)
    src.issue(P, ALL_CAMPAIGNS, 1)
    w.poll()
    assert not w.allows("c-1") and not w.allows("anything")


def test_a_stop_is_final() -> None:
    src = FakeSource(head=None)
    w = watcher(src)
    src.issue(S, "c-1", 1)
    src.issue(R, "c-1", 2)
    result = w.poll()
    assert [a.directive.kind for a in result.applied] == [S]
    assert "final" in result.ignored[0].reason
    assert w.state("c-1") is STOPPED


def test_a_revoked_node_pauses_everything_until_it_is_approved_again() -> None:
    src = FakeSource(head=None)
    w = watcher(src)
    src.revoked = True  # revoked, or suspended with its TEE measurement
    assert w.poll().revoked
    assert w.state("c-1") is PAUSED  # a pause, not an end: approval may come back
    src.revoked = False
    assert not w.poll().revoked
    assert w.allows("c-1")


def test_a_stop_holds_at_once_but_ends_the_campaign_only_once_final() -> None:
    src = FakeSource(head=100)
    w = watcher(src, confirmations=3)
    src.issue(S, "c-1", 1, height=100)
    assert [a.directive.kind for a in w.poll().applied] == [S]  # obeyed at first sight
    assert w.state("c-1") is PAUSED and not w.final_stop("c-1")
    src.head = 102
    w.poll()
    assert w.state("c-1") is STOPPED and w.final_stop("c-1")


def test_a_stop_that_leaves_the_chain_before_it_is_final_never_ends_the_campaign() -> None:
    src = FakeSource(head=100)
    w = watcher(src, confirmations=3)
    src.issue(S, "c-1", 1, height=100)
    w.poll()
    assert w.state("c-1") is PAUSED
    src.reorged.add(("c-1", 1))  # a reorganisation removed it (or an endpoint invented it)
    src.head = 110
    w.poll()
    assert w.allows("c-1") and not w.final_stop("c-1")


def test_a_campaign_the_source_holds_is_paused_with_the_reason() -> None:
    src = FakeSource(head=None)
    w = watcher(src)
    src.held["c-1"] = "not registered on the controller"
    w.poll()
    assert w.state("c-1") is PAUSED and w.held("c-1") == ["evm: not registered on the controller"]
    assert w.allows("c-2")
    src.held.clear()
    w.poll()
    assert w.allows("c-1") and w.held("c-1") == []


def test_the_node_pauses_itself_when_no_fresh_state_arrives_and_recovers_after() -> None:
    clock = FakeClock()
    src = FakeSource(head=None)
    w = watcher(src, clock=clock, stale_after_s=30)
    w.poll()
    src.down = True
    clock.advance(20)
    assert w.poll().failed_sources == ("evm",)
    assert w.allows("c-1")
    clock.advance(11)
    assert w.poll().stale
    assert w.state("c-1") is PAUSED
    src.down = False
    assert not w.poll().stale
    assert w.allows("c-1")


def test_a_fork_needs_confirmations_and_names_its_parent_and_config() -> None:
    src = FakeSource(head=10)
    w = watcher(src, confirmations=2)
    src.issue(F, "child", 1, height=10, parent_id="c-1", from_position=4, config_hash=b"\x01" * 32)
    assert w.poll().applied == ()
    src.head = 11
    (applied,) = w.poll().applied
    assert applied.directive.parent_id == "c-1" and applied.directive.from_position == 4
    assert w.state("child") is PAUSED  # a child starts paused; a resume runs it
    src.issue(R, "child", 2, height=11)
    src.head = 12
    assert [a.directive.kind for a in w.poll().applied] == [R]
    assert w.state("child") is RUNNING
    with pytest.raises(ValueError, match="32-byte"):
        Directive(F, "child", 1, "evm", parent_id="c-1", config_hash=b"short")
    with pytest.raises(ValueError, match="parent"):
        Directive(F, "child", 1, "evm", config_hash=b"\x01" * 32)


def test_applied_epochs_survive_a_restart() -> None:
    src = FakeSource(head=None)
    w = watcher(src, applied_epochs={("evm", "c-1"): 5}, states={("evm", "c-1"): PAUSED})
    src.issue(R, "c-1", 5)
    assert w.poll().applied == ()
    assert w.state("c-1") is PAUSED


def test_campaign_ids_round_trip_through_bytes32_keys() -> None:
    key = campaign_key("c-0a1b2c3d")
    assert len(key) == 32 and campaign_of_key(key) == "c-0a1b2c3d"
    with pytest.raises(ValueError):
        campaign_key("x" * 33)
    with pytest.raises(ValueError):
        campaign_of_key(b"\x00" * 32)
