"""Proposals ahead of need: the Researcher's and the Analyst's calls run in the background,
several at once, so workers do not wait for an LLM; a stop cancels them and leaves no
thread; the LLM budget holds; proposals made at once that duplicate each other are sent
back when they are recorded."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from fakes import FakeEngineer
from llm_server import ScriptedServer, reply
from test_llm_campaign import analysis, mixer, proposal, setup_for

from loop.archive import code_fingerprint
from loop.engineer import EvalResult, ExperimentJob
from loop.llm import Exchange, Ledger, Message, Reply, Role, Schema, parse_json_object
from loop.outcome import FailureClass
from node.campaign.background import Timings, proposals_wanted
from node.campaign.config import Budget, CampaignConfig
from node.campaign.llm_setup import LLMSetup
from node.campaign.scheduler import CampaignRunner, RunEnd
from node.store import CampaignRow, Store

TOKENS = 500  # per call of the fake
SETUP = LLMSetup({}, max_code_chars=5000)  # endpoints unused: the chat is a fake


def fresh(n: int) -> dict[str, str]:
    """A new design each time: its own code and motivation."""
    code = mixer(f"n{n}") + f"\nVARIANT = {n}\n"
    return proposal(f"p{n}", f"topic {n} words {n * 13} idea", code)


class SlowChat:
    """Calls that take `delay[role]` seconds on the portal's loop, so several run at once;
    each holds its place in the ledger as the real client does and costs TOKENS."""

    def __init__(self, ledger: Ledger, delay: dict[str, float]) -> None:
        self.ledger = ledger
        self.delay = delay
        self.calls: list[tuple[Role, list[Message]]] = []
        self.in_flight: dict[str, int] = {"researcher": 0, "analyst": 0, "engineer": 0}
        self.most: dict[str, int] = dict(self.in_flight)
        self.cancelled = 0

    def model_of(self, role: Role) -> str:
        return "slow"

    def answer(self, role: Role, messages: Sequence[Message], n: int) -> object:
        return fresh(n) if role == "researcher" else analysis(0.5)

    async def complete(
        self, role: Role, messages: Sequence[Message], *, purpose: str, schema: Schema | None = None
    ) -> Reply:
        with self.ledger.reserve():
            self.in_flight[role] += 1
            self.most[role] = max(self.most[role], self.in_flight[role])
            try:
                await asyncio.sleep(self.delay.get(role, 0.0))
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.in_flight[role] -= 1
            n = len(self.calls)
            self.calls.append((role, list(messages)))
            text = json.dumps(self.answer(role, messages, n))
            exchange = Exchange(
                role, purpose, "slow", "[]", text, TOKENS - 100, 100, 0.0, 0.0, "ok"
            )
            self.ledger.add(exchange)
            return Reply(text, parse_json_object(text), exchange)


class TwinChat(SlowChat):
    """Every first call proposes the same design (the code differs in a comment); one sent
    back gets a new design."""

    exact = False

    def answer(self, role: Role, messages: Sequence[Message], n: int) -> object:
        if role != "researcher":
            return analysis(0.5)
        if messages[-1].content.startswith("Rejected as a near-duplicate"):
            return fresh(n)
        code = mixer("tw") + ("" if self.exact else f"# written by call {n}\n")
        return proposal("twin", "One shared idea: gate the running sum per token.", code)


class CopyChat(TwinChat):
    """The same design, to the byte, every time (a model at temperature 0)."""

    exact = True


class TimedEngineer(FakeEngineer):
    """Experiments that take `seconds` (a stop cuts them short); each one's span is kept."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.spans: list[tuple[str, float, float]] = []

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        start = time.monotonic()
        if (cancel or threading.Event()).wait(self.seconds):
            return EvalResult(FailureClass.INTERRUPTED, "stopped")
        result = super().run(job, cancel)
        with self.lock:
            self.spans.append((job.code, start, time.monotonic()))
        return result


class Records:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def experiment_final(self, experiment_id: str) -> None:
        self.ids.append(experiment_id)


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


def campaign(store: Store, **budget: Any) -> CampaignRow:
    cfg = CampaignConfig(
        preset="quick",
        baselines=("deltanet", "linear"),
        researcher="llm",
        budget=Budget(max_rerun_candidates=0, **budget),
    )
    return store.create_campaign(f"c{len(store.list_campaigns())}", cfg.model_dump(mode="json"))


def runner(
    store: Store,
    camp: CampaignRow,
    engineer: FakeEngineer,
    chats: list[SlowChat],
    delay: dict[str, float],
    chat: Callable[[Ledger, dict[str, float]], SlowChat] = SlowChat,
    setup: LLMSetup = SETUP,
    **kwargs: Any,
) -> CampaignRunner:
    def factory(ledger: Ledger) -> SlowChat:
        chats.append(chat(ledger, delay))
        return chats[-1]

    return CampaignRunner(
        store,
        store.get_campaign(camp.id),
        engineer,  # type: ignore[arg-type]
        workers=2,
        threads_per_worker=1,
        node_secret=b"s" * 32,
        llm=setup,
        chat_factory=factory,
        **kwargs,
    )


def run_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(("llm-", "experiment"))}


def wait_until(test: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_proposals_wanted_follow_the_call_and_experiment_times() -> None:
    assert proposals_wanted(2, 2, Timings(None, 10.0), 8) == 4  # a call as long as a run
    assert proposals_wanted(2, 0, Timings(20.0, 10.0), 8) == 6  # 2 ready + 4 in flight
    assert proposals_wanted(2, 0, Timings(20.0, 10.0), 3) == 5
    assert proposals_wanted(2, 0, Timings(1.0, 3600.0), 8) == 3
    assert proposals_wanted(2, 1, Timings(20.0, 10.0), 8, ahead=0) == 1  # on demand


def idle_share(engineer: TimedEngineer) -> float:
    """The share of 2 workers' time idle between the first candidate's start and the last
    one's end."""
    spans = [s for s in engineer.spans if "kernels.baselines" not in s[0]]
    assert len(spans) == 10
    start, end = min(s[1] for s in spans), max(s[2] for s in spans)
    return 1 - sum(s[2] - s[1] for s in spans) / (2 * (end - start))


def test_proposals_ahead_keep_the_workers_busy_while_calls_take_longer(store: Store) -> None:
    # Calls of 0.8 s, experiments of 0.4 s on 2 workers: a proposal is needed every 0.2 s.
    # On a quiet machine the workers idle about 5 % of the time with proposals ahead and
    # 63 % on demand; the bound between the two leaves room for a loaded machine (29 %
    # seen with proposals ahead). Timings are the benchmark's (bench_proposals.py).
    before = run_threads()
    delay = {"researcher": 0.8, "analyst": 0.8}
    engineer = TimedEngineer(0.4)
    chats: list[SlowChat] = []
    camp = campaign(store, max_candidates=10)
    begun = time.monotonic()
    summary = runner(store, camp, engineer, chats, delay).run()
    wall = time.monotonic() - begun
    assert summary.reason == RunEnd.BUDGET
    idle = idle_share(engineer)
    assert idle < 0.4, f"workers idle {idle:.0%} between the first and last candidate"
    assert chats[0].most["researcher"] >= 4 and chats[0].most["analyst"] >= 2
    assert wall < 10 * 0.8  # what the proposals alone take one call at a time
    scored = [e for e in store.list_experiments(camp.id) if e.role == "candidate"]
    assert all(e.fitness is not None and "LLM analysis" in e.analysis for e in scored)
    assert run_threads() <= before
    # The same campaign with proposals on demand (one per idle worker) idles above the bound.
    on_demand = TimedEngineer(0.4)
    setup = LLMSetup({}, max_code_chars=5000, proposals_ahead=0)
    runner(store, campaign(store, max_candidates=10), on_demand, [], delay, setup=setup).run()
    assert idle_share(on_demand) > 0.4


def test_a_stop_cancels_the_calls_in_flight_and_leaves_no_thread(store: Store) -> None:
    before = run_threads()
    stop = threading.Event()
    chats: list[SlowChat] = []
    camp = campaign(store, max_candidates=6)
    run = runner(store, camp, TimedEngineer(0.05), chats, {"researcher": 30.0}, stop=stop)
    ended: list[Any] = []
    thread = threading.Thread(target=lambda: ended.append(run.run()))
    thread.start()
    wait_until(lambda: bool(chats) and chats[0].in_flight["researcher"] >= 4)
    begun = time.monotonic()
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - begun < 3
    assert ended[0].reason == RunEnd.STOPPED
    assert chats[0].cancelled == 4 and chats[0].calls == []
    assert run_threads() <= before
    assert [c for c in store.list_candidates(camp.id) if c.origin == "llm"] == []
    assert store.get_campaign(camp.id).status == "paused"
    assert store.llm_usage(camp.id).calls == 0  # nothing came back: nothing to keep


def test_an_experiment_awaiting_its_analysis_at_a_stop_is_scored_by_the_next_run(
    store: Store,
) -> None:
    before = run_threads()
    stop = threading.Event()
    chats: list[SlowChat] = []
    records = Records()
    camp = campaign(store, max_candidates=2)
    slow = {"researcher": 0.0, "analyst": 30.0}
    run = runner(store, camp, TimedEngineer(0.05), chats, slow, stop=stop, recorder=records)
    thread = threading.Thread(target=run.run)
    thread.start()
    wait_until(lambda: bool(chats) and chats[0].in_flight["analyst"] == 2)
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and run_threads() <= before
    waiting = [e for e in store.list_experiments(camp.id) if e.role == "candidate"]
    assert [(e.status, e.fitness) for e in waiting] == [("done", None), ("done", None)]
    assert not {e.id for e in waiting} & set(records.ids)  # recorded once scored, not before

    quick = {"researcher": 0.0, "analyst": 0.0}
    summary = runner(store, camp, TimedEngineer(0.05), chats, quick, recorder=records).run()
    assert summary.reason == RunEnd.BUDGET and summary.finished == 0
    scored = [e for e in store.list_experiments(camp.id) if e.role == "candidate"]
    assert all(e.fitness is not None and "LLM analysis" in e.analysis for e in scored)
    assert sorted(records.ids).count(scored[0].id) == 1 and scored[1].id in records.ids
    assert run_threads() <= before


@pytest.mark.integration
def test_calls_made_at_once_stop_at_the_calls_cap(store: Store) -> None:
    camp = campaign(store, max_candidates=20, max_llm_calls=7)
    with ScriptedServer() as server:
        server.defaults["researcher"] = lambda n: reply(fresh(n), after=0.3)
        server.defaults["analyst"] = lambda n: reply(analysis(0.5), after=0.3)
        summary = CampaignRunner(
            store,
            camp,
            FakeEngineer(),  # type: ignore[arg-type]
            workers=2,
            threads_per_worker=1,
            node_secret=b"s" * 32,
            llm=setup_for(server.url),
        ).run()
        served = sorted(s.at for s in server.seen if s.action == "reply")
    assert summary.reason == RunEnd.PAUSED and "LLM calls 7 of 7" in summary.detail
    assert len(served) == 7 and store.llm_usage(camp.id).calls == 7
    assert served[3] - served[0] < 0.3  # the first four were asked at once


def test_calls_made_at_once_overshoot_a_token_cap_by_less_than_one_call(store: Store) -> None:
    chats: list[SlowChat] = []
    camp = campaign(store, max_candidates=40, max_llm_tokens=5200)
    delay = {"researcher": 0.2, "analyst": 0.2}
    summary = runner(store, camp, TimedEngineer(0.05), chats, delay).run()
    assert summary.reason == RunEnd.PAUSED and "LLM tokens" in summary.detail
    assert 5200 <= store.llm_usage(camp.id).tokens < 5200 + TOKENS
    assert chats[0].most["researcher"] >= 3


def test_proposals_made_at_once_that_duplicate_each_other_are_sent_back_when_recorded(
    store: Store,
) -> None:
    chats: list[SlowChat] = []
    events: list[tuple[str, dict[str, Any]]] = []
    camp = campaign(store, max_candidates=4)
    delay = {"researcher": 0.3, "analyst": 0.0}
    on_event = lambda k, d: events.append((k, d))  # noqa: E731
    run = runner(store, camp, TimedEngineer(0.05), chats, delay, TwinChat, on_event=on_event)
    assert run.run().reason == RunEnd.BUDGET
    gen = [c for c in store.list_candidates(camp.id) if c.origin == "llm"]
    assert len(gen) == 4 and [c.name for c in gen].count("twin") == 1
    assert len({code_fingerprint(store.get_code(c.digest)) for c in gen}) == 4
    assert [d for k, d in events if k == "duplicate"] == [{"sent_back": 1, "step": "record"}] * 3
    resent = [m for r, m in chats[0].calls if r == "researcher" and m[-1].role == "user"]
    resent = [m for m in resent if m[-1].content.startswith("Rejected as a near-duplicate")]
    assert len(resent) == 3
    assert all("twin's" in m[-1].content and m[-2].role == "assistant" for m in resent)
    by_cand = {e.candidate_id: e for e in store.list_experiments(camp.id)}
    for cand in gen:
        calls = [x["purpose"] for x in (by_cand[cand.id].llm or {})["exchanges"]]
        assert calls == (
            ["propose", "analyse"] if cand.name == "twin" else ["propose"] * 2 + ["analyse"]
        )


def test_a_duplicate_found_at_record_time_with_no_send_back_left_is_a_failed_duplicate(
    store: Store,
) -> None:
    chats: list[SlowChat] = []
    camp = campaign(store, max_candidates=4)
    setup = LLMSetup({}, max_code_chars=5000, duplicate_rounds=0)
    delay = {"researcher": 0.3, "analyst": 0.0}
    summary = runner(store, camp, TimedEngineer(0.05), chats, delay, TwinChat, setup).run()
    assert summary.reason == RunEnd.BUDGET
    exps = [e for e in store.list_experiments(camp.id) if e.role == "candidate"]
    assert sorted(e.status for e in exps) == ["done", "failed", "failed", "failed"]
    failed = [e for e in exps if e.status == "failed"]
    assert all(e.failure_class == "duplicate" and "twin's" in e.analysis for e in failed)
    assert [r for r, _ in chats[0].calls].count("researcher") == 4  # none sent back


def test_an_exact_copy_given_up_at_record_time_keeps_its_calls_but_no_record(
    store: Store,
) -> None:
    chats: list[SlowChat] = []
    events: list[tuple[str, dict[str, Any]]] = []
    camp = campaign(store, max_candidates=4)
    setup = LLMSetup({}, max_code_chars=5000, duplicate_rounds=0)
    delay = {"researcher": 0.1, "analyst": 0.0}
    on_event = lambda k, d: events.append((k, d))  # noqa: E731
    run = runner(store, camp, TimedEngineer(0.05), chats, delay, CopyChat, setup, on_event=on_event)
    assert run.run().reason == RunEnd.COMPLETE  # unusable replies in a row, nothing running
    (twin,) = [c for c in store.list_candidates(camp.id) if c.origin == "llm"]
    assert [e.status for e in store.list_experiments(camp.id) if e.candidate_id == twin.id] == [
        "done"
    ]
    assert ("no_proposal", {"reason": "5 unusable LLM replies in a row"}) in events
    assert store.llm_usage(camp.id).calls == len(chats[0].calls)
