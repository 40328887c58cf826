"""What an experiment can end as: failure classes and the screening verdict, as values."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FailureClass(enum.StrEnum):
    """Why a candidate did not produce an honest score. Stored as its string value."""

    SYNTAX_IMPORT = "syntax_import"  # does not parse, or an import fails
    FORBIDDEN = "forbidden"  # imports or calls something outside the allow-list
    SHAPE = "shape"  # wrong output shape, crashes on odd shapes, bad constructor
    FUTURE_LEAK = "future_leak"  # outputs depend on later tokens
    RECURRENT_MISMATCH = "recurrent_mismatch"  # step-by-step disagrees with forward
    STATE_GROWTH = "state_growth"  # recurrent state grows with sequence length
    PARAM_BUDGET = "param_budget"  # too many parameters
    STATE_BUDGET = "state_budget"  # recurrent state over the budget
    TOO_SLOW = "too_slow"  # cost grows faster than linearly, or over the time budget
    NAN_DIVERGENCE = "nan_divergence"  # non-finite loss or outputs
    OOM = "oom"  # ran out of memory
    TIMEOUT = "timeout"  # wall-clock or CPU limit reached
    EXPORT = "export"  # the trained model could not be exported as a graph
    HOPELESS = "hopeless"  # aborted early: learning nothing
    OUTPACED = "outpaced"  # stopped at a rung: its loss curve behind the campaign's others
    BAD_OUTPUT = "bad_output"  # the sandbox returned no valid result
    CRASH = "crash"  # any other error inside the sandbox
    INTERRUPTED = "interrupted"  # stopped from outside (pause, shutdown); runs again
    LLM_RESPONSE = "llm_response"  # the LLM's reply held no usable code (or the call failed)
    DUPLICATE = "duplicate"  # the LLM kept proposing what the archive already holds
    BEHAVIOUR_TWIN = "behaviour_twin"  # computes what a trained candidate does (loop.probe)


@dataclass(frozen=True)
class CheckResult:
    """One screening check: its name, whether it passed, and a human-readable detail."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class ScreenReport:
    """The screening checks in the order they ran; `failure` is set when one failed."""

    checks: tuple[CheckResult, ...] = field(default_factory=tuple)
    failure: FailureClass | None = None
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.failure is None
