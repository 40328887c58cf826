"""The LLM module's pure parts: the tolerant JSON reader, the budget ledger, costs."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loop.llm import (
    BudgetExhausted,
    CallScope,
    Caps,
    Endpoint,
    Exchange,
    Ledger,
    LLMCancelled,
    Portal,
    Spent,
    parse_json_object,
)

OBJ = {"name": "x", "code": "class Mixer:\n    pass  # {not json}\n", "n": 3}


def test_reads_a_bare_object() -> None:
    assert parse_json_object(json.dumps(OBJ)) == OBJ


def test_reads_an_object_in_a_fence_with_prose_and_a_trailing_comma() -> None:
    text = "Sure! Here it is:\n```json\n" + json.dumps(OBJ)[:-1] + ",}\n```\nAnything else?"
    assert parse_json_object(text) == OBJ


def test_reads_an_object_inside_prose_without_a_fence() -> None:
    assert parse_json_object("My answer: " + json.dumps(OBJ) + " -- done") == OBJ


@pytest.mark.parametrize("text", ["", "no json here", "[1, 2]", "{broken", '"just a string"'])
def test_gives_none_when_there_is_no_object(text: str) -> None:
    assert parse_json_object(text) is None


@given(
    st.dictionaries(
        st.text(max_size=8), st.one_of(st.text(max_size=30), st.integers()), max_size=5
    ),
    st.text(alphabet="abc .:\n", max_size=20),
)
def test_any_object_survives_surrounding_prose(obj: dict[str, object], prose: str) -> None:
    assert parse_json_object(prose + json.dumps(obj) + prose) == obj


def exchange(tokens: int, cost: float = 0.0) -> Exchange:
    return Exchange("researcher", "propose", "m", "p", "c", tokens, 0, cost, 0.1, "ok")


def test_ledger_refuses_the_call_after_a_cap_is_reached() -> None:
    ledger = Ledger(Caps(max_calls=2))
    ledger.check()
    ledger.add(exchange(10))
    ledger.check()
    ledger.add(exchange(10))
    with pytest.raises(BudgetExhausted, match="LLM calls 2 of 2"):
        ledger.check()


def test_ledger_counts_tokens_and_money_from_where_a_campaign_left_off() -> None:
    ledger = Ledger(Caps(max_tokens=1000), Spent(calls=5, tokens=990, cost_usd=0.5))
    assert ledger.exhausted() is None
    ledger.add(exchange(20, 0.01))
    assert ledger.exhausted() == "LLM tokens 1010 of 1000"
    money = Ledger(Caps(max_cost_usd=0.05))
    money.add(exchange(1, 0.06))
    assert money.exhausted() is not None and "$0.0600" in money.exhausted()  # type: ignore[operator]


def test_calls_in_flight_count_against_the_calls_cap() -> None:
    ledger = Ledger(Caps(max_calls=3), Spent(calls=1))
    with ledger.reserve(), ledger.reserve():
        with pytest.raises(BudgetExhausted, match="LLM calls 3 of 3"), ledger.reserve():
            pass
        ledger.add(exchange(10))
    with ledger.reserve():  # one was charged, one ended without a charge (cancelled)
        pass
    ledger.add(exchange(10))
    with pytest.raises(BudgetExhausted), ledger.reserve():
        pass


def test_calls_ahead_are_counted_at_the_mean_size_of_those_spent() -> None:
    ledger = Ledger(Caps(max_tokens=1000), Spent(calls=2, tokens=400))
    assert ledger.exhausted(ahead=2) is None  # 400 + 2 x 200 = 800
    assert ledger.exhausted(ahead=3) == "LLM tokens 1000 of 1000 (+3 in flight)"
    assert ledger.exhausted() is None
    fresh = Ledger(Caps(max_tokens=1000))
    assert fresh.exhausted(ahead=5) is None  # nothing spent: no size to expect yet


def test_a_cancelled_scope_ends_its_calls_at_once_and_refuses_new_ones() -> None:
    before = set(threading.enumerate())
    portal = Portal()
    scope = CallScope(portal)
    started = threading.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(30)
        return "late"

    async def quick() -> str:
        return "now"

    errors: list[BaseException] = []

    def call() -> None:
        try:
            scope.call(slow())
        except LLMCancelled as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert started.wait(5)
    assert portal.call(quick()) == "now"  # the portal serves others while a call waits
    begun = time.monotonic()
    scope.cancel()
    caller.join(5)
    assert not caller.is_alive() and time.monotonic() - begun < 1
    assert len(errors) == 1
    with pytest.raises(LLMCancelled):
        scope.call(quick())
    assert portal.call(quick()) == "now"  # only the scope's calls were cancelled
    portal.close()
    assert set(threading.enumerate()) <= before


def test_no_caps_never_exhaust() -> None:
    ledger = Ledger(Caps())
    for _ in range(100):
        ledger.add(exchange(10**6, 10.0))
    assert ledger.exhausted() is None


def test_cost_uses_prices_per_million_tokens() -> None:
    ep = Endpoint("http://x/v1", "m", "", price_input_per_mtok=2.0, price_output_per_mtok=8.0)
    assert ep.cost(1_000_000, 500_000) == pytest.approx(6.0)
    assert "api_key" not in repr(ep)
