"""The real client over HTTP against the scripted server: failures become values."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from llm_server import MODELS, ScriptedServer, raw, reply, status

from loop.llm import (
    ROLES,
    BudgetExhausted,
    Caps,
    Endpoint,
    Ledger,
    LLMCallError,
    LLMConfigError,
    Message,
    OpenAIChat,
    Schema,
)

pytestmark = pytest.mark.integration

HELLO = [Message("system", "You are the Researcher."), Message("user", "hi")]
SCHEMA = Schema("s", {"type": "object", "properties": {"a": {"type": "integer"}}})


def chat(url: str, caps: Caps | None = None, **kw: object) -> OpenAIChat:
    ep = Endpoint(url, MODELS[0], "test-key", timeout_s=1.0, max_retries=1)
    ep = dataclasses.replace(ep, **kw)  # type: ignore[arg-type]
    return OpenAIChat(dict.fromkeys(ROLES, ep), Ledger(caps or Caps()))


def test_a_body_that_is_not_a_completion_is_a_failed_call_not_a_crash() -> None:
    with ScriptedServer() as server:
        server.script("researcher", raw("<html>bad gateway</html>"), reply({"a": 1}))
        client = chat(server.url)

        async def go() -> None:
            with pytest.raises(LLMCallError, match="unreadable reply") as exc:
                await client.complete("researcher", HELLO, purpose="propose")
            assert exc.value.exchange.status == "error"
            ok = await client.complete("researcher", HELLO, purpose="propose", schema=SCHEMA)
            assert ok.data == {"a": 1} and ok.exchange.structured
            await client.close()

        asyncio.run(go())
    assert client.ledger.spent.calls == 2


def test_server_errors_are_retried_by_the_sdk_then_reported() -> None:
    with ScriptedServer() as server:
        server.script("researcher", status(503), status(503), reply("late"))
        client = chat(server.url)

        async def go() -> None:
            with pytest.raises(LLMCallError, match="HTTP 503"):
                await client.complete("researcher", HELLO, purpose="propose")
            assert (await client.complete("researcher", HELLO, purpose="propose")).text == "late"
            await client.close()

        asyncio.run(go())
        assert [s.action for s in server.seen] == ["status", "status", "reply"]


def test_a_spent_budget_sends_nothing() -> None:
    with ScriptedServer() as server:
        client = chat(server.url, Caps(max_calls=0))
        with pytest.raises(BudgetExhausted):
            asyncio.run(client.complete("researcher", HELLO, purpose="propose"))
        assert server.seen == []


def test_a_wrong_key_or_model_during_a_run_is_a_config_error() -> None:
    with ScriptedServer() as server:
        with pytest.raises(LLMConfigError, match="refused the API key"):
            asyncio.run(chat(server.url, api_key="nope").complete("researcher", HELLO, purpose="p"))
        with pytest.raises(LLMConfigError, match="does not serve model 'gone'"):
            asyncio.run(chat(server.url, model="gone").complete("researcher", HELLO, purpose="p"))


def test_parameters_a_server_refuses_are_dropped_once_and_remembered() -> None:
    with ScriptedServer(
        refuse_structured=frozenset({"researcher"}), refuse_max_tokens=True
    ) as server:
        server.script("researcher", reply('ok: {"a": 2}'), reply('{"a": 3}'))
        client = chat(server.url)

        async def go() -> None:
            first = await client.complete("researcher", HELLO, purpose="p", schema=SCHEMA)
            assert first.data == {"a": 2} and not first.exchange.structured
            assert (await client.complete("researcher", HELLO, purpose="p", schema=SCHEMA)).data
            await client.close()

        asyncio.run(go())
        actions = [s.action for s in server.seen]
        assert actions == ["refused_max_tokens", "refused_format", "reply", "reply"]
        last = server.seen[-1].body
        assert last["max_completion_tokens"] == 4096 and "response_format" not in last
    strict = server.seen[0].body["response_format"]["json_schema"]["strict"]
    assert strict is True
