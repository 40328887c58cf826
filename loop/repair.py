"""The Engineer's debugger: a failed screen or training run goes back to an LLM to fix.

Each round sends the failure class, the tail of the error and the code; the patched code
runs through the whole experiment again (static check, sandboxed screen, training,
evaluation). Rounds are bounded, and every one is kept: the code it produced (by digest,
the text goes to the store), the failure it ended with and the call it took. The
debugger fixes bugs; it must keep the design (a repair that rewrites the idea is a new
proposal, which is the Researcher's job).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from loop.contract import INTERFACE, RULES, interface_problem
from loop.engineer import EvalResult, ExperimentJob
from loop.llm import (
    BudgetExhausted,
    ChatModel,
    Exchange,
    LLMCallError,
    LLMConfigError,
    Message,
    Portal,
    Schema,
)
from loop.outcome import FailureClass
from loop.proposal import code_digest

# Failures a code change can fix. Not: hopeless (learns nothing: a design verdict),
# timeout and bad_output (the harness or the machine), interrupted, the LLM's own classes.
REPAIRABLE = frozenset(
    {
        FailureClass.SYNTAX_IMPORT,
        FailureClass.FORBIDDEN,
        FailureClass.SHAPE,
        FailureClass.FUTURE_LEAK,
        FailureClass.RECURRENT_MISMATCH,
        FailureClass.STATE_GROWTH,
        FailureClass.PARAM_BUDGET,
        FailureClass.STATE_BUDGET,
        FailureClass.TOO_SLOW,
        FailureClass.NAN_DIVERGENCE,
        FailureClass.OOM,
        FailureClass.EXPORT,
        FailureClass.CRASH,
    }
)
TAIL_CHARS = 3000

REPAIR_SCHEMA = Schema(
    "mixer_repair",
    {
        "type": "object",
        "properties": {
            "diagnosis": {"type": "string", "description": "what was wrong, in one or two lines"},
            "code": {"type": "string", "description": "the whole fixed module"},
        },
        "required": ["diagnosis", "code"],
        "additionalProperties": False,
    },
)

SYSTEM = f"""\
You are the Engineer's debugger. A candidate token mixer failed; fix the bug so that it
passes screening and trains. Keep the design: same mechanism, same state layout where
possible; change only what the failure requires.

{INTERFACE}

{RULES}

Answer with one JSON object: {{"diagnosis": ..., "code": ...}} where `code` is the whole
fixed module."""


class Runs(Protocol):
    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult: ...


@dataclass(frozen=True)
class RepairRound:
    """One debugging round as recorded on the experiment."""

    round: int
    failure: str  # the failure that was sent
    code_before: str  # digest
    code_after: str | None  # digest of the patched code, None when no patch came back
    outcome: str  # "passed", a failure class, or why the round produced nothing
    diagnosis: str
    exchange: str | None  # the call's completion digest

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Repaired:
    """The first result, and what the rounds made of it: `final` and `code` are the last
    patched code's result and text when any round produced code."""

    first: EvalResult
    rounds: tuple[RepairRound, ...] = ()
    final: EvalResult | None = None
    code: str | None = None
    codes: tuple[str, ...] = ()  # every patched module, for the content-addressed store
    exchanges: tuple[Exchange, ...] = ()
    pause: str | None = None


class Repairer:
    def __init__(
        self, chat: ChatModel, portal: Portal, max_rounds: int = 2, max_code_chars: int = 20_000
    ) -> None:
        self.chat = chat
        self.portal = portal
        self.max_rounds = max_rounds
        self.max_code_chars = max_code_chars

    def prompt(self, code: str, result: EvalResult) -> list[Message]:
        failed = [c for c in (result.screen.get("checks") or []) if not c.get("passed", True)]
        checks = "; ".join(f"{c.get('name')}: {c.get('detail', '')}" for c in failed)
        tail = result.message[-TAIL_CHARS:]
        text = (
            f"Failure class: {result.failure}\n"
            + (f"Failed checks: {checks}\n" if checks else "")
            + f"Error (tail):\n```\n{tail}\n```\n\nCode:\n```python\n{code}\n```"
        )
        return [Message("system", SYSTEM), Message("user", text)]

    def run(
        self, engineer: Runs, job: ExperimentJob, cancel: threading.Event | None = None
    ) -> Repaired:
        first = engineer.run(job, cancel)
        result, code = first, job.code
        rounds: list[RepairRound] = []
        exchanges: list[Exchange] = []
        codes: list[str] = []
        final: EvalResult | None = None
        pause: str | None = None
        for number in range(1, self.max_rounds + 1):
            if result.failure not in REPAIRABLE or (cancel is not None and cancel.is_set()):
                break
            sent = str(result.failure)
            try:
                reply = self.portal.call(
                    self.chat.complete(
                        "engineer",
                        self.prompt(code, result),
                        purpose="repair",
                        schema=REPAIR_SCHEMA,
                    )
                )
            except (BudgetExhausted, LLMConfigError) as exc:
                pause = str(exc)
                rounds.append(RepairRound(number, sent, code_digest(code), None, pause, "", None))
                break
            except LLMCallError as exc:
                exchanges.append(exc.exchange)
                rounds.append(
                    RepairRound(number, sent, code_digest(code), None, str(exc), "", None)
                )
                continue
            exchanges.append(reply.exchange)
            data = reply.data or {}
            patched = str(data.get("code") or "")
            diagnosis = str(data.get("diagnosis") or "")[:500]
            problem = _patch_problem(patched, self.max_code_chars)
            if problem is not None:
                rounds.append(
                    RepairRound(
                        number,
                        sent,
                        code_digest(code),
                        None,
                        problem,
                        diagnosis,
                        reply.exchange.completion_sha256,
                    )
                )
                continue
            before = code_digest(code)
            code = patched
            codes.append(code)
            result = engineer.run(dataclasses.replace(job, code=code), cancel)
            final = result
            rounds.append(
                RepairRound(
                    number,
                    sent,
                    before,
                    code_digest(code),
                    "passed" if result.failure is None else str(result.failure),
                    diagnosis,
                    reply.exchange.completion_sha256,
                )
            )
            if result.failure is None:
                break
        return Repaired(
            first,
            tuple(rounds),
            final,
            code if final is not None else None,
            tuple(codes),
            tuple(exchanges),
            pause,
        )


def _patch_problem(code: str, limit: int) -> str | None:
    if not code.strip():
        return "the reply has no code"
    if len(code) > limit:
        return f"code is {len(code)} characters; the limit is {limit}"
    return interface_problem(code)
