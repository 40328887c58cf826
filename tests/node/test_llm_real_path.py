"""The LLM loop on the real path: sandboxed screening, training and evaluation.

A scripted server proposes a mixer with a real bug (a hard-coded head width that breaks
at d_model 70); the real screen fails it, the debugger's patch is screened again in the
sandbox, trains for 40 steps and is evaluated and analysed. About a minute on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_server import ScriptedServer, reply
from test_llm_campaign import analysis, proposal, setup_for

from node.campaign.config import Budget, CampaignConfig
from node.runtime import open_node
from node.settings import init_home

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CODE = '''"""Running sum of the input, projected: causal, with a fixed-size state."""
import torch
from torch import nn


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, **options):
        super().__init__()
        self.d = d_model
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        b, t, d = x.shape
        h = x.reshape(b, t, WIDTH)
        return self.proj(torch.cumsum(h.reshape(b, t, d), dim=1) * 0.1)

    def init_state(self, batch):
        return (torch.zeros(batch, self.d),)

    def step(self, x_t, state):
        total = state[0] + x_t
        return self.proj(total * 0.1), (total,)
'''


def test_a_real_screen_failure_is_repaired_trained_and_analysed(tmp_path: Path) -> None:
    init_home(tmp_path, env={})
    node = open_node(tmp_path)
    cfg = CampaignConfig(
        preset="quick",
        train_steps=40,
        baselines=("deltanet",),
        rerun_seeds=(),
        researcher="llm",
        budget=Budget(max_candidates=2, max_rerun_candidates=0),
    )
    camp = node.store.create_campaign("real", cfg.model_dump(mode="json"))
    buggy = CODE.replace("WIDTH", "2, 32")  # fine at d_model 64, a crash at 70
    fixed = CODE.replace("WIDTH", "2, d // 2")
    with ScriptedServer() as server:
        server.script("researcher", reply(proposal("sum", "A running sum.", buggy)))
        server.script("engineer", reply({"diagnosis": "width from d", "code": fixed}))
        server.script("analyst", reply(analysis(0.5)))
        summary = node.run_campaign(camp.id, llm=setup_for(server.url))
    assert summary.reason == "budget"
    cands = {c.id: c.name for c in node.store.list_candidates(camp.id)}
    exps = {cands[e.candidate_id]: e for e in node.store.list_experiments(camp.id)}
    first = exps["sum"]
    assert first.status == "failed" and first.failure_class == "shape"
    screen = first.screen or {}
    assert screen["repair"][0]["outcome"] == "passed"
    repaired = exps["sum+fix1"]
    assert repaired.status == "done", repaired.analysis
    # Two blocks, each: the mixer's 64 numbers plus the short convolution's 2 x 64.
    assert (repaired.metrics or {})["state_size"] == 2 * (64 + 2 * 64)
    assert "LLM analysis: Results:" in repaired.analysis
    node.store.close()
