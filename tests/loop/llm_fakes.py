"""A fake LLM behind the ChatModel protocol: scripted replies per role, charged to a ledger."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from typing import Any

from loop.llm import (
    Exchange,
    Ledger,
    LLMCallError,
    Message,
    Reply,
    Role,
    Schema,
    parse_json_object,
)


class FakeChat:
    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger
        self.replies: dict[str, deque[Any]] = {}
        self.calls: list[tuple[Role, list[Message]]] = []

    def script(self, role: Role, *replies: Any) -> None:
        """Each reply: a dict (sent as JSON), a string, or an exception to raise."""
        self.replies.setdefault(role, deque()).extend(replies)

    def model_of(self, role: Role) -> str:
        return "fake"

    async def complete(
        self,
        role: Role,
        messages: Sequence[Message],
        *,
        purpose: str,
        schema: Schema | None = None,
    ) -> Reply:
        if self.ledger is not None:
            self.ledger.check()
        self.calls.append((role, list(messages)))
        item = self.replies[role].popleft()
        if isinstance(item, LLMCallError):
            raise item
        text = item if isinstance(item, str) else json.dumps(item)
        exchange = Exchange(
            role=role,
            purpose=purpose,
            model="fake",
            prompt=json.dumps([m.content for m in messages]),
            completion=text,
            prompt_tokens=50,
            completion_tokens=len(text) // 4,
            cost_usd=0.0,
            latency_s=0.001,
            status="ok",
        )
        if self.ledger is not None:
            self.ledger.add(exchange)
        return Reply(text, parse_json_object(text) if schema else None, exchange)


def failed_call(role: Role = "researcher") -> LLMCallError:
    exchange = Exchange(role, "propose", "fake", "[]", "", 0, 0, 0.0, 1.0, "timeout", "no answer")
    return LLMCallError(f"{role} call failed: no answer", exchange)
