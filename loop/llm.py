"""OpenAI-compatible chat for the three agents: a client per role, budgets, transcripts.

The only module that imports `openai`. Any server that speaks the chat completions API
works (OpenAI, Azure OpenAI's v1 endpoint, vLLM, Ollama, llama.cpp's server). Retries are
the SDK's own (`max_retries`, exponential backoff, a 429's Retry-After honoured); there is
no second retry loop here. Every call, failed or not, becomes an `Exchange`: the full text
stays on the node, experiment records carry only its hashes and counts.

Structured outputs: a call with a `Schema` asks for `response_format=json_schema`; a server
that rejects that is asked once more without it (and not asked again), and replies are
read by a tolerant parser (code fences, prose around the object, trailing commas).

Agents code against the `ChatModel` protocol, so tests use a fake; `Portal` lets the
synchronous scheduler threads call the async client on one private event loop, where
calls from several threads run at once; a `CallScope` of it can cancel its calls together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import openai

from loop.errors import LoopError

log = logging.getLogger(__name__)

Role = Literal["researcher", "engineer", "analyst"]
ROLES: tuple[Role, ...] = ("researcher", "engineer", "analyst")
StructuredMode = Literal["auto", "on", "off"]
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """Where one role's calls go and how they are made and priced."""

    base_url: str
    model: str
    api_key: str = field(repr=False)
    timeout_s: float = 120.0
    max_retries: int = 2
    structured: StructuredMode = "auto"
    max_output_tokens: int = 4096
    temperature: float | None = None
    price_input_per_mtok: float = 0.0  # USD per million prompt tokens
    price_output_per_mtok: float = 0.0  # USD per million completion tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.price_input_per_mtok
            + completion_tokens * self.price_output_per_mtok
        ) / 1e6


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Schema:
    """A JSON schema the reply must follow; `name` is what the API calls it."""

    name: str
    schema: Mapping[str, Any]


def sha256_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Exchange:
    """One call as it happened. The text stays local; records carry hashes and counts."""

    role: Role
    purpose: str  # "propose", "repair", "analyse", "probe"
    model: str
    prompt: str  # the messages as JSON
    completion: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    status: Literal["ok", "timeout", "rate_limited", "error"]
    error: str = ""
    structured: bool = False

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def prompt_sha256(self) -> str:
        return sha256_text(self.prompt)

    @property
    def completion_sha256(self) -> str:
        return sha256_text(self.completion)


@dataclass(frozen=True)
class Reply:
    """A completed call: the text, the JSON object read from it (when a schema was given
    and one could be read), and the exchange to keep."""

    text: str
    data: dict[str, Any] | None
    exchange: Exchange


class LLMError(LoopError):
    """Root of the LLM errors. The caller records what happened and carries on (the
    subclasses say whether to fix the settings, pause or just go on)."""


class LLMConfigError(LLMError):
    """The endpoint, model or key is wrong (unreachable, unknown model, key refused).

    Fix the [llm] settings or the --llm-url/--model options; retrying will not help.
    """


class LLMCallError(LLMError):
    """One call failed after the SDK's retries (timeout, rate limit, server error).

    Record the failure (its `exchange` says what was sent) and go on; the next call may
    succeed. Nothing was spent beyond what the exchange shows.
    """

    def __init__(self, message: str, exchange: Exchange) -> None:
        super().__init__(message)
        self.exchange = exchange


class BudgetExhausted(LLMError):
    """The campaign's LLM budget (calls, tokens or money) is spent: no call was made.

    Pause the campaign; raise its budget in a new campaign config to go on.
    """


class LLMCancelled(LLMError):
    """The call was cancelled (its `CallScope` was, because the run is stopping): no reply
    came back and nothing was charged. Drop the work it was for."""


@dataclass(frozen=True)
class Caps:
    """A campaign's LLM budget; None means no limit on that measure."""

    max_calls: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None


@dataclass(frozen=True)
class Spent:
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


class Ledger:
    """What a campaign has spent on LLM calls against its caps; shared by threads.

    A call is refused before it is made once any cap is reached. A call holds a place
    while it runs (`reserve`), so calls made at once cannot overshoot the calls cap. Tokens
    and money are known only when a call ends: a call starts while what was spent is under
    the cap, so the calls in flight when a cap is crossed complete and are the overshoot
    (one call when calls are made one at a time). Callers that start calls ahead of need
    hold them back while `exhausted(ahead=...)` counts their calls in flight as spent.
    """

    def __init__(self, caps: Caps, spent: Spent = Spent()) -> None:
        self.caps = caps
        self._spent = spent
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def spent(self) -> Spent:
        with self._lock:
            return self._spent

    def exhausted(self, ahead: int = 0) -> str | None:
        """Which cap is reached, in words, or None while there is budget left. With
        `ahead`, that many calls not charged yet count as spent, each at the mean size of
        the calls charged so far."""
        with self._lock:
            return self._exhausted(self._spent, ahead)

    def _exhausted(self, s: Spent, ahead: int) -> str | None:
        c = self.caps
        more = f" (+{ahead} in flight)" if ahead else ""
        calls = s.calls + ahead
        if c.max_calls is not None and calls >= c.max_calls:
            return f"LLM calls {calls} of {c.max_calls}{more}"
        tokens = s.tokens + (ahead * s.tokens / s.calls if s.calls else 0)
        if c.max_tokens is not None and tokens >= c.max_tokens:
            return f"LLM tokens {tokens:.0f} of {c.max_tokens}{more}"
        cost = s.cost_usd + (ahead * s.cost_usd / s.calls if s.calls else 0.0)
        if c.max_cost_usd is not None and cost >= c.max_cost_usd:
            return f"LLM cost ${cost:.4f} of ${c.max_cost_usd:.4f}{more}"
        return None

    def check(self) -> None:
        reason = self.exhausted()
        if reason is not None:
            raise BudgetExhausted(f"LLM budget exhausted: {reason}")

    @contextlib.contextmanager
    def reserve(self) -> Iterator[None]:
        """Hold one call's place while it runs: BudgetExhausted (nothing sent) once a cap
        is reached, the calls in flight counting against the calls cap. Released however
        the call ends; `add` charges what it spent."""
        with self._lock:
            s = self._spent
            reason = self._exhausted(Spent(s.calls + self._in_flight, s.tokens, s.cost_usd), 0)
            if reason is not None:
                raise BudgetExhausted(f"LLM budget exhausted: {reason}")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def add(self, exchange: Exchange) -> None:
        with self._lock:
            s = self._spent
            self._spent = Spent(
                s.calls + 1, s.tokens + exchange.tokens, s.cost_usd + exchange.cost_usd
            )


class ChatModel(Protocol):
    """What the agents need of an LLM; `OpenAIChat` over HTTP, or a fake in tests."""

    async def complete(
        self,
        role: Role,
        messages: Sequence[Message],
        *,
        purpose: str,
        schema: Schema | None = None,
    ) -> Reply: ...

    def model_of(self, role: Role) -> str: ...


def _prompt_json(messages: Sequence[Message]) -> str:
    return json.dumps(
        [{"role": m.role, "content": m.content} for m in messages], ensure_ascii=False
    )


class OpenAIChat:
    """The real client: one AsyncOpenAI per role, every call charged to `ledger`."""

    def __init__(self, endpoints: Mapping[Role, Endpoint], ledger: Ledger) -> None:
        missing = [r for r in ROLES if r not in endpoints]
        if missing:
            raise LLMConfigError(f"no LLM endpoint for role(s) {', '.join(missing)}")
        self.endpoints = dict(endpoints)
        self.ledger = ledger
        self._clients: dict[Role, openai.AsyncOpenAI] = {}
        self._plain: set[Role] = set()  # roles whose server refused response_format
        self._completion_tokens: set[Role] = set()  # roles needing max_completion_tokens

    def model_of(self, role: Role) -> str:
        return self.endpoints[role].model

    def _client(self, role: Role) -> openai.AsyncOpenAI:
        client = self._clients.get(role)
        if client is None:
            ep = self.endpoints[role]
            client = openai.AsyncOpenAI(
                base_url=ep.base_url,
                api_key=ep.api_key or "unused",  # local servers take any key
                timeout=ep.timeout_s,
                max_retries=ep.max_retries,
            )
            self._clients[role] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def complete(
        self,
        role: Role,
        messages: Sequence[Message],
        *,
        purpose: str,
        schema: Schema | None = None,
    ) -> Reply:
        """One chat completion. Raises BudgetExhausted (nothing sent), LLMConfigError (the
        endpoint, model or key is wrong) or LLMCallError (this call failed; go on)."""
        with self.ledger.reserve():
            return await self._complete(role, messages, purpose, schema)

    async def _complete(
        self, role: Role, messages: Sequence[Message], purpose: str, schema: Schema | None
    ) -> Reply:
        ep = self.endpoints[role]
        structured = schema is not None and ep.structured != "off" and role not in self._plain
        started = time.perf_counter()
        try:
            # Not a retry loop: a 400 naming a parameter the server does not take is asked
            # again once without it (each fallback at most once, then remembered per role).
            for _ in range(3):
                try:
                    response = await self._create(role, messages, schema if structured else None)
                    break
                except openai.BadRequestError as exc:
                    if _about_token_limit(exc) and role not in self._completion_tokens:
                        self._completion_tokens.add(role)
                    elif structured and ep.structured == "auto" and _about_format(exc):
                        log.info("server refused response_format", extra={"role": role})
                        self._plain.add(role)
                        structured = False
                    else:
                        raise
        except openai.APIError as exc:
            exchange = self._failed(role, purpose, messages, started, exc, structured)
            self.ledger.add(exchange)
            if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
                raise LLMConfigError(
                    f"{ep.base_url} refused the API key for the {role} ({exc.status_code}); "
                    "set [llm] api_key or ASI_NODE_LLM__API_KEY_FILE"
                ) from None
            if isinstance(exc, openai.NotFoundError):
                raise LLMConfigError(
                    f"{ep.base_url} does not serve model {ep.model!r} for the {role} (404); "
                    "check the model name and the base URL (it usually ends in /v1)"
                ) from None
            raise LLMCallError(f"{role} call failed: {exchange.error}", exchange) from None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # A 200 whose body is not a chat completion (not JSON, wrong shape): the SDK
            # raises whatever its parser met. This call failed; the campaign goes on.
            exchange = self._failed(role, purpose, messages, started, exc, structured)
            self.ledger.add(exchange)
            raise LLMCallError(f"{role} call failed: {exchange.error}", exchange) from None
        latency = time.perf_counter() - started
        text = ""
        if response.choices:
            text = response.choices[0].message.content or ""
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        exchange = Exchange(
            role=role,
            purpose=purpose,
            model=response.model or ep.model,
            prompt=_prompt_json(messages),
            completion=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=ep.cost(prompt_tokens, completion_tokens),
            latency_s=latency,
            status="ok",
            structured=structured,
        )
        self.ledger.add(exchange)
        data = parse_json_object(text) if schema is not None else None
        return Reply(text, data, exchange)

    async def _create(self, role: Role, messages: Sequence[Message], schema: Schema | None) -> Any:
        ep = self.endpoints[role]
        kwargs: dict[str, Any] = {
            "model": ep.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        limit = "max_completion_tokens" if role in self._completion_tokens else "max_tokens"
        kwargs[limit] = ep.max_output_tokens
        if ep.temperature is not None:
            kwargs["temperature"] = ep.temperature
        if schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": schema.name,
                    "schema": dict(schema.schema),
                    "strict": True,
                },
            }
        return await self._client(role).chat.completions.create(**kwargs)

    def _failed(
        self,
        role: Role,
        purpose: str,
        messages: Sequence[Message],
        started: float,
        exc: Exception,
        structured: bool,
    ) -> Exchange:
        if not isinstance(exc, openai.APIError):
            status: Literal["timeout", "rate_limited", "error"] = "error"
            error = f"unreadable reply ({type(exc).__name__}: {_first_line(str(exc))})"
        elif isinstance(exc, openai.APITimeoutError):
            status = "timeout"
            error = f"no answer within {self.endpoints[role].timeout_s:g}s (after retries)"
        elif isinstance(exc, openai.RateLimitError):
            status, error = "rate_limited", "rate limited (429) after retries"
        elif isinstance(exc, openai.APIConnectionError):
            status, error = "error", f"cannot reach {self.endpoints[role].base_url}"
        else:
            code = getattr(exc, "status_code", None)
            status, error = "error", f"HTTP {code}: {_first_line(str(exc))}"
        return Exchange(
            role=role,
            purpose=purpose,
            model=self.endpoints[role].model,
            prompt=_prompt_json(messages),
            completion="",
            prompt_tokens=0,
            completion_tokens=0,
            cost_usd=0.0,
            latency_s=time.perf_counter() - started,
            status=status,
            error=error,
            structured=structured,
        )

    async def probe(self, role: Role) -> str:
        """Check that the role's endpoint answers, takes the key and serves the model.

        Lists the models where the server supports it, else makes a one-token call.
        Returns a line saying what was found; raises LLMConfigError saying what is wrong.
        """
        ep = self.endpoints[role]
        client = self._client(role)
        try:
            listed = [m.id async for m in client.models.list()]
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            raise LLMConfigError(
                f"{ep.base_url} refused the API key ({role}); set [llm] api_key or "
                "ASI_NODE_LLM__API_KEY_FILE"
            ) from None
        except openai.APIConnectionError:
            raise LLMConfigError(
                f"cannot reach {ep.base_url}: is the server running, and does the URL end in /v1?"
            ) from None
        except openai.APIStatusError:
            listed = []  # some servers have no /models: fall back to a tiny call
        if ep.model in listed:
            return f"{ep.base_url} serves {ep.model}"
        # Not listed (or no list): Azure lists base models, not deployment names, so a
        # one-token call decides.
        shown = ", ".join(listed[:10]) + (" ..." if len(listed) > 10 else "")
        try:
            await client.chat.completions.create(
                model=ep.model, messages=[{"role": "user", "content": "ping"}], max_tokens=1
            )
        except openai.NotFoundError:
            raise LLMConfigError(
                f"{ep.base_url} does not serve model {ep.model!r}"
                + (f"; it lists: {shown}" if shown else "")
            ) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            raise LLMConfigError(f"{ep.base_url} refused the API key ({role})") from None
        except openai.APIConnectionError:
            raise LLMConfigError(f"cannot reach {ep.base_url}") from None
        except openai.APIError as exc:
            raise LLMConfigError(f"{ep.base_url} failed a test call: {exc}") from None
        return f"{ep.base_url} answered a test call with {ep.model}"

    async def first_model(self, role: Role) -> str | None:
        """The first model the endpoint lists (for `--model` left out), or None."""
        try:
            async for m in self._client(role).models.list():
                return str(m.id)
        except openai.APIError:
            return None
        return None


def _about_token_limit(exc: openai.BadRequestError) -> bool:
    """Newer OpenAI models refuse `max_tokens` and ask for `max_completion_tokens`."""
    return "max_completion_tokens" in str(exc)


def _about_format(exc: openai.BadRequestError) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("response_format", "json_schema", "structured", "format"))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a reply, read tolerantly; None when there is none.

    Accepts a bare object, one inside a ```json fence, one with prose around it, and
    trailing commas before a closing bracket (a common slip of small models).
    """
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start = text.find("{")
    while start != -1:
        end = _balanced_end(text, start)
        if end is not None:
            candidates.append(text[start : end + 1])
            break
        start = text.find("{", start + 1)
    for chunk in candidates:
        for attempt in (chunk, _TRAILING_COMMA.sub(r"\1", chunk)):
            try:
                value = json.loads(attempt, strict=False)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    return None


def _balanced_end(text: str, start: int) -> int | None:
    """Index of the brace closing the object opened at `start`, skipping strings."""
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


class Caller(Protocol):
    """What the agents need of a portal: a coroutine run to its result, waited for."""

    def call(self, coro: Coroutine[Any, Any, T]) -> T: ...


class Portal:
    """One private event loop on its own thread; synchronous callers submit coroutines.

    The async clients live on this loop only; calls submitted from several threads run
    on it at once. `call` waits for the coroutine; the SDK's own timeout bounds every
    request, so nothing is left running behind a wait.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llm-portal", daemon=True
        )
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def close(self) -> None:
        if self._loop.is_running():
            # Cancelled calls may still be unwinding: let them end before the loop stops.
            with contextlib.suppress(TimeoutError):
                self.submit(_end_tasks()).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()


async def _end_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class CallScope:
    """Calls through a portal that end together: `cancel` cancels those in flight (their
    callers get LLMCancelled at once, the requests are dropped) and refuses new ones.

    A run's background Researcher and Analyst calls go through one, cancelled at stop.
    """

    def __init__(self, portal: Portal) -> None:
        self._portal = portal
        self._pending: set[Future[Any]] = set()
        self._cancelled = False
        self._lock = threading.Lock()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._cancelled:
                coro.close()
                raise LLMCancelled("the call was cancelled: the run is stopping")
            future = self._portal.submit(coro)
            self._pending.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise LLMCancelled("the call was cancelled: the run is stopping") from None
        finally:
            with self._lock:
                self._pending.discard(future)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            pending = list(self._pending)
        for future in pending:
            future.cancel()
