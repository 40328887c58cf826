"""The Analyst with an LLM: written sections and insights in the metrics' vocabulary, and
an optional judge score that counts only under its own fitness version.

The programmatic analysis (loop.analyst) always comes first and is kept; the LLM adds
sections to it. Insights that use none of the metric vocabulary are dropped (an insight
the Researcher cannot tie to a number teaches it nothing). `fitness-v1+judge` adds a
small term for the judge's 0-1 score to fitness-v1; a campaign opts in by naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from loop.analyst import Analysis, Fitness
from loop.contract import METRICS
from loop.llm import (
    BudgetExhausted,
    Caller,
    ChatModel,
    Exchange,
    LLMCallError,
    LLMConfigError,
    Message,
    Schema,
)

JUDGE_FITNESS_VERSION = "fitness-v1+judge"
JUDGE_WEIGHT = 0.02  # at most +-0.01 fitness: about a seed's spread, never more than a result
SECTIONS = ("results", "comparison", "hypothesis", "next_step")
VOCABULARY = (
    "acc_",
    "mean_acc",
    "64x8",
    "128x16",
    "128x32",
    "256x64",
    "state_size",
    "state",
    "params",
    "time_ratio",
    "fitness",
    "recall",
)
# The language-model task's words (loop.contract.metrics_text of an LM spec).
LM_VOCABULARY = (
    "heldout_loss",
    "heldout_ppl",
    "heldout_acc",
    "perplexity",
    "loss",
    "params_non_embedding",
    "tokens",
    "state_size",
    "state",
    "params",
    "time_ratio",
    "fitness",
)
MAX_INSIGHTS = 4

ANALYSIS_SCHEMA = Schema(
    "mixer_analysis",
    {
        "type": "object",
        "properties": {
            **{s: {"type": "string"} for s in SECTIONS},
            "insights": {"type": "array", "items": {"type": "string"}},
            "judge": {"type": "number", "description": "0-1: how promising the design is"},
        },
        "required": [*SECTIONS, "insights", "judge"],
        "additionalProperties": False,
    },
)


def system_prompt(metrics: str = METRICS) -> str:
    """The Analyst's instructions for a campaign's task (loop.contract.metrics_text)."""
    return f"""\
You are the Analyst of an architecture search over token mixers. Explain one experiment's
result from its numbers, compare it with its parent and the reference, and distil at most
{MAX_INSIGHTS} insights for the Researcher.

{metrics}

Write every section and insight in these metrics' words (name the test set, the state_size,
the fitness). Answer with one JSON object with the string fields
{", ".join(SECTIONS)}, a list `insights`, and `judge`, a number from 0 to 1 saying how
promising the design is beyond its score."""


SYSTEM = system_prompt()


@dataclass(frozen=True)
class LLMAnalysis:
    text: str  # sections, to append to the programmatic analysis
    insights: tuple[str, ...]
    judge: float | None
    dropped_insights: int = 0
    exchanges: tuple[Exchange, ...] = ()
    error: str = ""
    pause: str | None = None


def judged_fitness(base: Fitness, judge: float) -> Fitness:
    """fitness-v1+judge = fitness-v1 + 0.02 * (judge - 0.5), judge clipped to [0, 1]; on an
    LM campaign the base is lm-fitness-v1, and the version says so (lm-fitness-v1+judge)."""
    j = min(1.0, max(0.0, judge))
    bonus = JUDGE_WEIGHT * (j - 0.5)
    return Fitness(
        version=f"{base.version}+judge",
        value=base.value + bonus,
        components={**base.components, "judge": j, "judge_bonus": bonus},
    )


class LLMAnalyst:
    def __init__(
        self,
        chat: ChatModel,
        portal: Caller,
        system: str = SYSTEM,
        vocabulary: tuple[str, ...] = VOCABULARY,
    ) -> None:
        self.chat = chat
        self.portal = portal
        self.system = system
        self.vocabulary = vocabulary

    def prompt(
        self,
        name: str,
        motivation: str,
        code: str,
        metrics: Mapping[str, float],
        fit: Fitness,
        programmatic: Analysis,
    ) -> list[Message]:
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        text = (
            f"Candidate {name}.\nMotivation: {motivation}\nMetrics: {numbers}\n"
            f"Fitness: {fit.value:+.4f} ({fit.version}; "
            + ", ".join(f"{k} {v:.4g}" for k, v in fit.components.items())
            + f")\nProgrammatic analysis: {programmatic.text}\n"
            f"Code:\n```python\n{code}\n```"
        )
        return [Message("system", self.system), Message("user", text)]

    def analyse(
        self,
        name: str,
        motivation: str,
        code: str,
        metrics: Mapping[str, float],
        fit: Fitness,
        programmatic: Analysis,
    ) -> LLMAnalysis:
        messages = self.prompt(name, motivation, code, metrics, fit, programmatic)
        try:
            reply = self.portal.call(
                self.chat.complete("analyst", messages, purpose="analyse", schema=ANALYSIS_SCHEMA)
            )
        except (BudgetExhausted, LLMConfigError) as exc:
            return LLMAnalysis("", (), None, error=str(exc), pause=str(exc))
        except LLMCallError as exc:
            return LLMAnalysis("", (), None, exchanges=(exc.exchange,), error=str(exc))
        data = reply.data
        if data is None:
            return LLMAnalysis(
                "", (), None, exchanges=(reply.exchange,), error="the reply held no JSON object"
            )
        sections = [
            f"{s.replace('_', ' ').capitalize()}: {' '.join(str(data[s]).split())}"
            for s in SECTIONS
            if isinstance(data.get(s), str) and data[s].strip()
        ]
        raw = data.get("insights")
        given = [" ".join(str(i).split()) for i in raw] if isinstance(raw, list) else []
        kept = [i for i in given if i and _in_vocabulary(i, self.vocabulary)][:MAX_INSIGHTS]
        judge = data.get("judge")
        score = (
            float(judge)
            if isinstance(judge, int | float)
            and not isinstance(judge, bool)
            and math.isfinite(judge)
            else None
        )
        return LLMAnalysis(
            " ".join(sections),
            tuple(kept),
            score,
            dropped_insights=len(given) - len(kept),
            exchanges=(reply.exchange,),
        )


def _in_vocabulary(text: str, vocabulary: tuple[str, ...] = VOCABULARY) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in vocabulary)
