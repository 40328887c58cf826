"""The LLM agents with a fake LLM: Researcher, the Engineer's debugger, the Analyst."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from llm_fakes import FakeChat, failed_call

from loop.analyst import Analysis, Fitness
from loop.analyst_llm import JUDGE_FITNESS_VERSION, LLMAnalyst, judged_fitness
from loop.archive import code_fingerprint
from loop.cognition import CognitionBase
from loop.contract import baseline_source, interface_problem
from loop.diffs import DiffError, apply_unified_diff
from loop.engineer import EvalResult, ExperimentJob
from loop.llm import Caps, Ledger, Portal
from loop.outcome import FailureClass
from loop.proposal import ArchiveView
from loop.repair import Repairer
from loop.researcher.llm import Known, LLMResearcher, ResearchConfig
from loop.tasks import MQARSpec
from loop.train import TrainConfig

GOOD = """import torch
from torch import nn


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, **options):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(torch.cumsum(x, dim=1))

    def init_state(self, batch):
        return (torch.zeros(batch, self.proj.in_features),)

    def step(self, x_t, state):
        total = state[0] + x_t
        return self.proj(total), (total,)
"""

DIFF = """--- a/candidate.py
+++ b/candidate.py
@@ -9,2 +9,2 @@
     def forward(self, x):
-        return self.proj(torch.cumsum(x, dim=1))
+        return self.proj(torch.cumsum(x, dim=1) * 0.5)
@@ -15,3 +15,3 @@
     def step(self, x_t, state):
         total = state[0] + x_t
-        return self.proj(total), (total,)
+        return self.proj(total * 0.5), (total,)
"""

PARENT = ArchiveView(
    "cand-1",
    "running-sum",
    GOOD,
    "sum everything",
    0.01,
    {"64x8": 0.9, "256x64": 0.2},
    4096,
    "Recall collapses on 256x64 (0.200): more pairs than the state holds.",
)


@pytest.fixture
def portal() -> Iterator[Portal]:
    p = Portal()
    yield p
    p.close()


def researcher(chat: FakeChat, portal: Portal, **kw: int) -> LLMResearcher:
    return LLMResearcher(chat, portal, CognitionBase.load(), ResearchConfig(**kw))  # type: ignore[arg-type]


NOTHING = Known({}, {})


def test_the_prompt_carries_parent_code_analysis_insights_cognition_and_the_rules(
    portal: Portal,
) -> None:
    messages = researcher(FakeChat(), portal).prompt([PARENT], [], ["gating helped 256x64"])
    system, user = messages[0].content, messages[1].content
    assert "def step(self, x_t" in system and "future_leak" in system and "state_budget" in system
    assert GOOD in user and "Recall collapses on 256x64" in user
    assert "gating helped 256x64" in user and "Design knowledge (cognition base)" in user
    assert "[arXiv:" in user


def test_a_baseline_parent_is_shown_with_its_source_and_helpers(portal: Portal) -> None:
    baseline = ArchiveView(
        "cand-0",
        "gated_deltanet",
        "from kernels.baselines import GatedDeltaNet as Mixer\n",
        "baseline",
        0.0,
        {"64x8": 0.9},
        4096,
    )
    user = researcher(FakeChat(), portal).prompt([baseline], [], [])[1].content
    assert "class DeltaNet(nn.Module)" in user and "class GatedDeltaNet(DeltaNet)" in user
    assert "from kernels.layers import" in user and "send a whole module" in user
    assert baseline_source(GOOD) is None


def test_a_diff_against_the_parent_becomes_the_whole_patched_module(portal: Portal) -> None:
    chat = FakeChat()
    chat.script(
        "researcher", {"name": "half sum!", "motivation": "halve", "code": "", "diff": DIFF}
    )
    result = researcher(chat, portal).propose([PARENT], [], [], NOTHING)
    assert result.proposal is not None
    assert "* 0.5), (total,)" in result.proposal.code and "* 0.5)\n" in result.proposal.code
    assert result.proposal.name == "half-sum"
    assert result.proposal.parent_ids == ("cand-1",) and result.proposal.origin == "llm"


def test_a_near_duplicate_is_sent_back_with_the_reason_then_given_up(portal: Portal) -> None:
    chat = FakeChat()
    same = {"name": "again", "motivation": "new words", "code": GOOD, "diff": ""}
    chat.script("researcher", same, same, same)
    known = Known({code_fingerprint(GOOD): "running-sum"}, {})
    result = researcher(chat, portal, duplicate_rounds=2).propose([PARENT], [], [], known)
    assert result.proposal is None and result.failure is FailureClass.DUPLICATE
    assert result.duplicates_sent_back == 2 and len(result.exchanges) == 3
    feedback = chat.calls[1][1][-1].content
    assert "near-duplicate" in feedback and "running-sum" in feedback


def test_a_repeated_motivation_counts_as_a_duplicate(portal: Portal) -> None:
    chat = FakeChat()
    chat.script(
        "researcher",
        {"name": "a", "motivation": "gate the state write per token", "code": GOOD, "diff": ""},
        {"name": "b", "motivation": "a short convolution on keys", "code": GOOD + "\n", "diff": ""},
    )
    known = Known({}, {"older": "Gate the state write, per token."})
    result = researcher(chat, portal).propose([PARENT], [], [], known)
    assert result.proposal is not None and result.proposal.name == "b"
    assert "motivation repeats older" in chat.calls[1][1][-1].content


@pytest.mark.parametrize(
    ("reply", "failure", "reason"),
    [
        ({"name": "n", "motivation": "m", "code": "", "diff": ""}, "llm_response", "no code"),
        ("I cannot help with that.", "llm_response", "neither a JSON object"),
        (
            {"name": "n", "motivation": "m", "code": "", "diff": "@@ -1 +1 @@\n-nope\n+x"},
            "llm_response",
            "diff does not apply",
        ),
        (
            {"name": "n", "motivation": "m", "code": "x = 1\n", "diff": ""},
            "syntax_import",
            "defines no top-level `Mixer`",
        ),
        (
            {"name": "n", "motivation": "m", "code": GOOD + "#" * 500, "diff": ""},
            "forbidden",
            "limit is 600",
        ),
    ],
)
def test_unusable_replies_become_failures_with_reasons(
    portal: Portal, reply: object, failure: str, reason: str
) -> None:
    chat = FakeChat()
    chat.script("researcher", reply)
    result = researcher(chat, portal, max_code_chars=600).propose([PARENT], [], [], NOTHING)
    assert result.proposal is None and str(result.failure) == failure
    assert reason in result.reason and len(result.exchanges) == 1


def test_a_python_block_without_json_is_still_a_proposal(portal: Portal) -> None:
    chat = FakeChat()
    chat.script("researcher", f"Idea: cumulative sum.\n```python\n{GOOD}```\n")
    result = researcher(chat, portal).propose([PARENT], [], [], NOTHING)
    assert result.proposal is not None and result.proposal.code.strip() == GOOD.strip()
    assert result.proposal.motivation == "Idea: cumulative sum."


def test_a_spent_budget_pauses_instead_of_proposing(portal: Portal) -> None:
    ledger = Ledger(Caps(max_calls=0))
    result = researcher(FakeChat(ledger), portal).propose([PARENT], [], [], NOTHING)
    assert result.proposal is None and result.failure is None
    assert result.pause is not None and "LLM calls 0 of 0" in result.pause


def test_a_failed_call_is_a_failure_with_its_exchange(portal: Portal) -> None:
    chat = FakeChat()
    chat.script("researcher", failed_call())
    result = researcher(chat, portal).propose([PARENT], [], [], NOTHING)
    assert result.failure is FailureClass.LLM_RESPONSE and "no answer" in result.reason
    assert result.exchanges[0].status == "timeout"


def test_interface_check_accepts_aliases_and_inherited_methods() -> None:
    assert interface_problem("from kernels.baselines import DeltaNet as Mixer\n") is None
    inherited = GOOD.replace("class Mixer(nn.Module)", "class Base(nn.Module)") + (
        "\n\nclass Mixer(Base):\n    pass\n"
    )
    assert interface_problem(inherited) is None
    assert interface_problem("class Mixer:\n    def forward(self, x): ...\n") == (
        "class Mixer does not define init_state, step (needs forward, init_state, step)"
    )
    assert interface_problem("def (:") is None  # syntax is the screen's to report


def test_diff_hunks_that_do_not_match_are_named() -> None:
    with pytest.raises(DiffError, match="hunk 1 does not match"):
        apply_unified_diff(GOOD, "@@ -1,1 +1,1 @@\n-import numpy\n+import torch\n")
    with pytest.raises(DiffError, match="no hunks"):
        apply_unified_diff(GOOD, "just text")


class StepEngineer:
    """Fails code containing 'BUG' with a SHAPE error, passes the rest."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        self.codes.append(job.code)
        if "BUG" in job.code:
            return EvalResult(FailureClass.SHAPE, "Traceback ...\nRuntimeError: bad view")
        return EvalResult(None, "", metrics={"mean_acc": 0.5})


def job(code: str) -> ExperimentJob:
    return ExperimentJob("exp-1", code, MQARSpec.quick(), TrainConfig.quick(), 0, 1)


def test_repair_sends_failure_and_traceback_and_rescreens_the_patch(portal: Portal) -> None:
    chat = FakeChat()
    chat.script("engineer", {"diagnosis": "fixed the view", "code": GOOD})
    engineer = StepEngineer()
    out = Repairer(chat, portal, max_rounds=2).run(engineer, job(GOOD + "# BUG\n"))
    assert out.first.failure is FailureClass.SHAPE
    assert out.final is not None and out.final.failure is None and out.code == GOOD
    assert engineer.codes == [GOOD + "# BUG\n", GOOD]
    sent = chat.calls[0][1][1].content
    assert "Failure class: shape" in sent and "RuntimeError: bad view" in sent and "# BUG" in sent
    assert [(r.round, r.outcome, r.diagnosis) for r in out.rounds] == [
        (1, "passed", "fixed the view")
    ]


def test_repair_rounds_are_bounded_and_each_is_recorded(portal: Portal) -> None:
    chat = FakeChat()
    chat.script(
        "engineer",
        {"diagnosis": "try 1", "code": GOOD + "# BUG 1\n"},
        {"diagnosis": "no code", "code": ""},
        {"diagnosis": "never asked", "code": GOOD},
    )
    out = Repairer(chat, portal, max_rounds=2).run(StepEngineer(), job(GOOD + "# BUG\n"))
    assert [r.outcome for r in out.rounds] == ["shape", "the reply has no code"]
    assert len(chat.replies["engineer"]) == 1
    assert out.final is not None and out.final.failure is FailureClass.SHAPE


def test_failures_a_patch_cannot_fix_are_not_sent(portal: Portal) -> None:
    class Hopeless(StepEngineer):
        def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
            return EvalResult(FailureClass.HOPELESS, "learning nothing")

    chat = FakeChat()
    out = Repairer(chat, portal).run(Hopeless(), job(GOOD))
    assert out.rounds == () and chat.calls == []


FIT = Fitness("fitness-v1", 0.02, {"gain": 0.02, "state_ratio": 1.0, "state_penalty": 0.0})


def test_analyst_keeps_sections_and_only_insights_in_metric_words(portal: Portal) -> None:
    chat = FakeChat()
    chat.script(
        "analyst",
        {
            "results": "acc_256x64 up 0.05",
            "comparison": "beats parent on 128x32",
            "hypothesis": "gate frees state",
            "next_step": "per-head gates",
            "insights": ["gating lifts acc_256x64 at equal state_size", "looks elegant"],
            "judge": 0.7,
        },
    )
    out = LLMAnalyst(chat, portal).analyse(
        "x", "m", GOOD, {"mean_acc": 0.6}, FIT, Analysis("x: score 0.6", ())
    )
    assert out.text.startswith("Results: acc_256x64 up 0.05 Comparison:")
    assert out.insights == ("gating lifts acc_256x64 at equal state_size",)
    assert out.dropped_insights == 1 and out.judge == 0.7


def test_judge_counts_only_under_its_own_fitness_version() -> None:
    judged = judged_fitness(FIT, 1.7)
    assert judged.version == JUDGE_FITNESS_VERSION != FIT.version
    assert judged.value == pytest.approx(0.02 + 0.02 * 0.5)
    assert judged.components["judge"] == 1.0
    assert judged_fitness(FIT, 0.5).value == pytest.approx(FIT.value)
    lm = Fitness("lm-fitness-v1", 0.03, {"gain": 0.03, "state_ratio": 1.0, "state_penalty": 0.0})
    assert judged_fitness(lm, 1.0).version == "lm-fitness-v1+judge"  # says what it judged
