"""The LLM agents of a campaign are told that campaign's task: MQAR recall, or language
modelling scored on held-out loss (never "the task is MQAR" on an LM campaign)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loop.analyst import Analysis, Fitness
from loop.contract import INTERFACE, METRICS, interface_text, metrics_text
from loop.llm import Ledger
from loop.tasks import LMSpec, MQARSpec
from node.campaign.agents import LLMAgents
from node.campaign.config import CampaignConfig
from node.campaign.llm_setup import LLMSetup
from node.store import Store


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


def agents(store: Store, config: CampaignConfig) -> LLMAgents:
    camp = store.create_campaign(f"c{len(store.list_campaigns())}", config.model_dump(mode="json"))

    def factory(ledger: Ledger) -> object:
        return object()  # never called: only the prompts are read

    return LLMAgents(LLMSetup({}), store, camp, config, chat_factory=factory)  # type: ignore[arg-type]


def test_lm_campaign_agents_are_told_held_out_loss_not_mqar(store: Store) -> None:
    lm = CampaignConfig(task="lm", preset="quick", researcher="llm", baselines=("deltanet",))
    team = agents(store, lm)
    research = team.researcher.prompt([], [], [])[0].content
    analysis = team.analyst.prompt("x", "m", "code", {}, _fitness(), _analysis())[0].content
    for text in (research, analysis):
        assert "heldout_loss" in text and "perplexity" in text
        assert "MQAR" not in text and "acc_64x8" not in text
    assert "context 128" in research and "SwiGLU MLP" in research
    assert "beat its parent on held-out loss" in research


def test_mqar_campaign_agents_keep_the_recall_text(store: Store) -> None:
    team = agents(store, CampaignConfig(preset="quick", researcher="llm"))
    research = team.researcher.prompt([], [], [])[0].content
    assert METRICS in research and INTERFACE in research
    assert "beat its parent on recall" in research


def test_task_texts_follow_the_spec() -> None:
    assert metrics_text(MQARSpec()) == METRICS and interface_text(MQARSpec()) == INTERFACE
    spec = LMSpec(vocab_size=32_000, seq_len=2048, heldout_windows=2048)
    text = metrics_text(spec)
    assert "vocabulary 32,000, context 2,048" in text and "4,194,304 target tokens" in text
    assert "class Mixer" in interface_text(spec) and "SwiGLU" in interface_text(spec)


def _fitness() -> Fitness:
    return Fitness("fitness-v1", 0.0, {"gain": 0.0, "state_ratio": 1.0, "state_penalty": 0.0})


def _analysis() -> Analysis:
    return Analysis("text", ())
