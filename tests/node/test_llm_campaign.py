"""A short llm-mode campaign against a scripted OpenAI-compatible server on loopback.

The client is the real one (openai's AsyncOpenAI over HTTP); the Engineer runs the real
static check and scores like the fake one, so no training runs. The script covers a
proposal that fails screening and is repaired, proposals that train and are analysed, a
duplicate sent back, malformed JSON, a 429 with Retry-After, a stalled reply that hits
the timeout, unusable replies (no code, no interface, too long) and a budget that runs
out and pauses the campaign.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from pathlib import Path

import pytest
from fakes import FakeEngineer
from llm_server import MODELS, ScriptedServer, reply, stall, status

from loop.engineer import EvalResult, ExperimentJob, _screen_json
from loop.llm import ROLES, Endpoint
from loop.outcome import FailureClass
from loop.screen import check_source
from node.campaign.config import Budget, CampaignConfig
from node.campaign.llm_setup import LLMSetup
from node.campaign.scheduler import CampaignRunner
from node.cli.main import main
from node.runtime import open_node
from node.settings import init_home
from node.store import ExperimentRow
from node.tlog.records import Recorder

pytestmark = pytest.mark.integration

MAX_CODE = 3000


def mixer(tag: str, bug: bool = False, methods: tuple[str, ...] = ("forward", "step")) -> str:
    """A small, statically valid mixer module; `bug` marks one the engineer fails."""
    reshape = "x.reshape(b, t, 2, -1)  # BUG: hard-codes 2 heads" if bug else "x"
    body = {
        "forward": f"""
    def forward(self, x):
        b, t, d = x.shape
        h = {reshape}
        return self.proj(torch.cumsum(h.reshape(b, t, d), dim=1) * self.scale)
""",
        "step": """
    def init_state(self, batch):
        return (torch.zeros(batch, self.d),)

    def step(self, x_t, state):
        total = state[0] + x_t
        return self.proj(total * self.scale), (total,)
""",
    }
    return (
        f'"""{tag}: a running-sum mixer."""\nimport torch\nfrom torch import nn\n\n\n'
        "class Mixer(nn.Module):\n"
        "    def __init__(self, d_model, n_heads, **options):\n"
        "        super().__init__()\n"
        "        self.d = d_model\n"
        f"        self.scale = {0.5 + sum(map(ord, tag)) / 1000}\n"
        "        self.proj = nn.Linear(d_model, d_model)\n" + "".join(body[m] for m in methods)
    )


class ScriptedEngineer(FakeEngineer):
    """The real static check, a SHAPE failure with a traceback for code marked BUG, and
    the fake's digest-based scores for the rest."""

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        static = check_source(job.code)
        if not static.passed:
            assert static.failure is not None
            return EvalResult(
                static.failure,
                static.message,
                screen=_screen_json(static.checks, static.failure, static.message),
            )
        if "BUG" in job.code:
            trace = (
                'Traceback (most recent call last):\n  File "candidate.py", line 14, in '
                "forward\nRuntimeError: shape '[3, 7, 2, -1]' is invalid for input of size "
                "1470 (d_model 70)"
            )
            screen = {
                "checks": [{"name": "shapes", "passed": False, "detail": "crash at d_model 70"}]
            }
            return EvalResult(FailureClass.SHAPE, trace, screen=screen)
        return super().run(job, cancel)


def setup_for(url: str, key: str = "test-key") -> LLMSetup:
    """Every role on the server; the analyst without retries, so a stall fails its call."""
    endpoint = Endpoint(
        base_url=url,
        model=MODELS[0],
        api_key=key,
        timeout_s=1.0,
        max_retries=2,
        price_input_per_mtok=1.0,
        price_output_per_mtok=4.0,
    )
    endpoints = dict.fromkeys(ROLES, endpoint)
    endpoints["analyst"] = dataclasses.replace(endpoint, max_retries=0)
    return LLMSetup(endpoints, max_code_chars=MAX_CODE)


def proposal(name: str, motivation: str, code: str, diff: str = "") -> dict[str, str]:
    return {"name": name, "motivation": motivation, "code": code, "diff": diff}


def analysis(judge: float) -> dict[str, object]:
    return {
        "results": "acc_256x64 rises to the reference's level at equal state_size.",
        "comparison": "Above its parent on acc_128x32.",
        "hypothesis": "The gate frees state for later pairs.",
        "next_step": "Try a per-head gate.",
        "insights": [
            "Gating the write lifts acc_256x64 at equal state_size.",
            "This is a nice design.",  # no metric words: dropped
        ],
        "judge": judge,
    }


MOTIVATION_B = "Short causal convolution on keys binds each key to its neighbour for acc_64x8."


def script(server: ScriptedServer) -> None:
    malformed = json.dumps(proposal("short-conv-keys", MOTIVATION_B, mixer("b")))
    malformed = "Here is my design.\n```json\n" + malformed[:-1] + ",}\n```\nThanks."
    server.script(
        "researcher",
        status(429, {"Retry-After": "1"}),
        reply(
            proposal(
                "gated-sum",
                "Gate the running sum per token to lift acc_256x64 at equal state_size.",
                mixer("a", bug=True),
            )
        ),
        reply(malformed),
        reply(proposal("short-conv-keys-2", MOTIVATION_B, mixer("c"))),  # a duplicate
        reply(
            proposal(
                "decayed-sum",
                "A fixed per-head decay forgets stale pairs, aimed at acc_128x32.",
                mixer("d"),
            )
        ),
        reply(proposal("empty", "Nothing to see.", "")),
        reply(proposal("half", "Forward only.", mixer("e", methods=("forward",)))),
        reply(proposal("huge", "Too long.", mixer("f") + "#" * (MAX_CODE + 10) + "\n")),
        reply(proposal("never", "Must not be asked for: the budget is spent.", mixer("g"))),
    )
    server.script(
        "engineer",
        stall(3.0),
        reply({"diagnosis": "hard-coded head count", "code": mixer("a")}),
    )
    server.script("analyst", stall(2.5), reply(analysis(0.8)), reply(analysis(0.4)))


def test_llm_campaign_repairs_analyses_rejects_and_pauses_on_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_home(tmp_path, env={})
    node = open_node(tmp_path)
    cfg = CampaignConfig(
        preset="quick",
        baselines=("deltanet", "linear"),
        researcher="llm",
        fitness="fitness-v1+judge",
        budget=Budget(max_candidates=10, max_rerun_candidates=0, max_llm_calls=11),
    )
    camp = node.store.create_campaign("llm", cfg.model_dump(mode="json"))
    events: list[tuple[str, dict[str, object]]] = []
    with ScriptedServer(refuse_structured=frozenset({"analyst"})) as server:
        script(server)
        runner = CampaignRunner(
            node.store,
            camp,
            ScriptedEngineer(best=0.9),
            workers=1,
            threads_per_worker=1,
            node_secret=b"s" * 32,
            on_event=lambda k, d: events.append((k, d)),
            # The script is one sequence of replies, so proposals are asked for one at a
            # time when the worker is idle (asked ahead, their order would vary).
            llm=dataclasses.replace(setup_for(server.url), proposals_ahead=0),
            recorder=Recorder(node.log(), node.store),
        )
        summary = runner.run()
        seen = list(server.seen)
        assert server.left("researcher") == 1  # "never" was not asked for

    # The budget ran out: the campaign paused with the reason, and stays paused.
    assert summary.reason == "paused"
    assert "LLM calls 11 of 11" in summary.detail
    assert node.store.get_campaign(camp.id).status == "paused"
    usage = node.store.llm_usage(camp.id)
    assert usage.calls == 11 and usage.failed == 1  # the analyst's stalled call

    # The 429 was retried by the SDK after its Retry-After; the stall hit the timeout.
    research = [s for s in seen if s.role == "researcher"]
    assert research[0].action == "status"
    assert research[1].at - research[0].at >= 0.9
    repair = [s for s in seen if s.role == "engineer"]
    assert [s.action for s in repair] == ["stall", "reply"]
    assert 0.9 <= repair[1].at - repair[0].at < 3.0
    # The analyst's server refused structured outputs once; the client asked without.
    # Its stalled reply hit the 1 s timeout (no retries for the analyst): the call failed.
    analyst = [s for s in seen if s.role == "analyst"]
    assert [s.action for s in analyst] == ["refused_format", "stall", "reply", "reply"]
    assert "response_format" not in analyst[1].body

    cands = {c.id: c for c in node.store.list_candidates(camp.id)}
    exps = node.store.list_experiments(camp.id)
    by_name = {cands[e.candidate_id].name: e for e in exps}

    # The failing proposal: recorded failed with its repair round; the fix trained.
    broken = by_name["gated-sum"]
    assert broken.status == "failed" and broken.failure_class == "shape"
    rounds = (broken.screen or {})["repair"]
    assert len(rounds) == 1 and rounds[0]["failure"] == "shape"
    assert rounds[0]["outcome"] == "passed"
    fixed = by_name["gated-sum+fix1"]
    assert fixed.status == "done" and fixed.fitness_version == "fitness-v1+judge"
    assert cands[fixed.candidate_id].parent_ids == (broken.candidate_id,)
    assert "LLM analysis unavailable: analyst call failed: no answer within 1s" in fixed.analysis
    failed = [x for x in node.store.list_llm_exchanges(camp.id, fixed.id) if x.status != "ok"]
    assert [(x.role, x.status) for x in failed] == [("analyst", "timeout")]
    llm = broken.llm or {}
    assert [x["purpose"] for x in llm["exchanges"]] == ["propose", "repair"]
    assert all(x["prompt"].startswith("sha256:") for x in llm["exchanges"])
    assert "Mixer" not in json.dumps(broken.llm)  # hashes and counts, not the text

    # Malformed JSON was read; the duplicate was sent back once, then a new design came.
    assert by_name["short-conv-keys"].status == "done"
    assert "LLM analysis: Results: acc_256x64" in by_name["short-conv-keys"].analysis
    assert "short-conv-keys-2" not in by_name
    decayed = by_name["decayed-sum"]
    assert decayed.status == "done"
    assert [x["purpose"] for x in (decayed.llm or {})["exchanges"]] == [
        "propose",
        "propose",
        "analyse",
    ]
    resent = node.store.list_llm_exchanges(camp.id, decayed.id)[1]
    assert "near-duplicate" in resent.prompt and "short-conv-keys" in resent.prompt
    assert ("duplicate", {"sent_back": 1, "step": "propose"}) in events

    # Unusable replies are failure records with reasons; the loop went on past them.
    assert by_name["empty"].failure_class == "llm_response"
    assert "no code" in by_name["empty"].analysis
    assert by_name["half"].failure_class == "syntax_import"
    assert "init_state" in by_name["half"].analysis
    assert by_name["huge"].failure_class == "forbidden"
    assert "limit is 3000" in by_name["huge"].analysis

    # Analyst insights in the metric vocabulary were kept; the one without was dropped.
    insights = [i.text for i in node.store.list_insights(camp.id)]
    assert insights.count("Gating the write lifts acc_256x64 at equal state_size.") == 2
    assert "This is a nice design." not in insights
    # fitness-v1+judge: fitness-v1 plus 0.02 * (judge - 0.5): judge 0.8 for the first
    # analysed design, neutral (0.5) for the fix whose analysis failed.
    ref = by_name["deltanet"]

    def gain(exp: ExperimentRow) -> float:
        mine = (exp.metrics or {})["mean_acc"]
        return float(mine - (ref.metrics or {})["mean_acc"])

    assert fixed.fitness == pytest.approx(gain(fixed))
    conv = by_name["short-conv-keys"]
    assert conv.fitness == pytest.approx(gain(conv) + 0.02 * 0.3)
    assert ref.fitness == pytest.approx(0.0) and ref.fitness_version == "fitness-v1+judge"

    # The signed record carries the LLM use as counts and digests, never the text.
    log = node.log()
    records = [json.loads(e.envelope) for e in log.db.entries(0, log.size) if e.subject]
    statements = [json.loads(base64.b64decode(r["payload"])) for r in records]
    record = next(
        s["predicate"] for s in statements if s["predicate"]["experiment_id"] == decayed.id
    )
    assert record["researcher"]["mode"] == "llm" and record["researcher"]["models"] == [MODELS[0]]
    assert record["researcher"]["llm"]["calls"] == 3
    assert "Mixer" not in json.dumps(record["researcher"])

    # What the agents saw and said is kept in full, locally.
    kept = node.store.list_llm_exchanges(camp.id)
    assert len(kept) == 11 and all(x.completion for x in kept if x.status == "ok")
    assert all(x.prompt.startswith('[{"role": "system"') for x in kept)
    assert any("Design knowledge (cognition base)" in x.prompt for x in kept)

    # The CLI shows the LLM cost per experiment and for the campaign.
    capsys.readouterr()
    assert main(["--home", str(tmp_path), "experiments", "show", decayed.id]) == 0
    shown = capsys.readouterr().out
    assert "llm: 3 call(s) (0 failed)" in shown and f"models {MODELS[0]}" in shown
    assert "--- researcher propose" not in shown
    assert main(["--home", str(tmp_path), "experiments", "show", decayed.id, "--transcript"]) == 0
    transcript = capsys.readouterr().out
    assert transcript.count("--- researcher propose") == 2 and "[system]" in transcript
    assert "Rejected as a near-duplicate" in transcript and "[reply]" in transcript
    assert main(["--home", str(tmp_path), "campaign", "show", camp.id]) == 0
    shown = capsys.readouterr().out
    assert "LLM: 11 call(s) (1 failed)" in shown and "paused: LLM calls 11 of 11" in shown

    # And so does the HTTP API, as counts and digests.
    from fastapi.testclient import TestClient

    from node.api.app import create_app

    shown_api = TestClient(create_app(node.store)).get(f"/experiments/{decayed.id}").json()
    assert shown_api["llm"]["calls"] == 3
    assert all(x["prompt"].startswith("sha256:") for x in shown_api["llm"]["exchanges"])

    # Running again pauses at once: the budget is still spent.
    with ScriptedServer() as server:
        again = CampaignRunner(
            node.store,
            node.store.get_campaign(camp.id),
            ScriptedEngineer(),
            workers=1,
            threads_per_worker=1,
            node_secret=b"s" * 32,
            llm=setup_for(server.url),
        ).run()
        assert server.seen == []
    assert again.reason == "paused" and again.finished == 0
    node.store.close()
