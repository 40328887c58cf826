"""The LLM agents inside the scheduler, with a fake LLM behind the protocol (no HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fakes import FakeEngineer
from test_llm_campaign import ScriptedEngineer, analysis, mixer, proposal

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
from loop.proposal import ArchiveView
from node.campaign.agents import behaviour_notes
from node.campaign.config import Budget, CampaignConfig
from node.campaign.llm_setup import LLMSetup
from node.campaign.scheduler import CampaignRunner
from node.errors import ConfigError
from node.settings import load_settings
from node.store import Store


class EndlessChat:
    """Fresh proposals and analyses for ever; every call charged to the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.prompts: list[tuple[Role, str]] = []

    def model_of(self, role: Role) -> str:
        return "endless"

    async def complete(
        self, role: Role, messages: Sequence[Message], *, purpose: str, schema: Schema | None = None
    ) -> Reply:
        self.ledger.check()
        n = len(self.prompts)
        self.prompts.append((role, messages[-1].content))
        if role == "researcher":
            body: object = proposal(f"p{n}", f"topic {n} words {n * 13} idea", mixer(f"n{n}"))
        elif role == "engineer":
            body = {"diagnosis": "fixed", "code": mixer(f"fix{n}")}
        else:
            body = analysis(0.5)
        text = json.dumps(body)
        exchange = Exchange(role, purpose, "endless", "[]", text, 400, 100, 0.0, 0.0, "ok")
        self.ledger.add(exchange)
        return Reply(text, parse_json_object(text), exchange)


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


def llm_config(**budget: int) -> CampaignConfig:
    return CampaignConfig(
        preset="quick",
        baselines=("deltanet", "linear"),
        researcher="llm",
        budget=Budget(max_candidates=6, max_rerun_candidates=0, **budget),
    )


SETUP = LLMSetup({}, max_code_chars=5000)  # endpoints unused: the chat is a fake


def runner(
    store: Store, cfg: CampaignConfig, engineer: object, chats: list[EndlessChat]
) -> CampaignRunner:
    camp = store.create_campaign("t", cfg.model_dump(mode="json"))

    def factory(ledger: Ledger) -> EndlessChat:
        chats.append(EndlessChat(ledger))
        return chats[-1]

    return CampaignRunner(
        store,
        camp,
        engineer,
        workers=2,
        threads_per_worker=1,  # type: ignore[arg-type]
        node_secret=b"s" * 32,
        llm=SETUP,
        chat_factory=factory,
    )


def test_an_llm_campaign_without_an_endpoint_is_a_config_error(store: Store) -> None:
    camp = store.create_campaign("t", llm_config().model_dump(mode="json"))
    with pytest.raises(ConfigError, match="uses the llm researcher, but no LLM is configured"):
        CampaignRunner(store, camp, FakeEngineer(), 1, 1, b"s" * 32)  # type: ignore[arg-type]


def test_a_token_budget_pauses_the_campaign_with_its_reason(store: Store) -> None:
    chats: list[EndlessChat] = []
    summary = runner(store, llm_config(max_llm_tokens=1500), FakeEngineer(), chats).run()
    assert summary.reason == "paused" and summary.detail == "LLM tokens 1500 of 1500"
    camp = store.list_campaigns()[0]
    assert camp.status == "paused"
    assert store.llm_usage(camp.id).tokens == 1500  # 3 calls of 500: nothing after the cap
    stopped = store.list_events(camp.id, kind="run_stopped")[-1]
    assert stopped.payload["detail"] == "LLM tokens 1500 of 1500"


def test_without_budget_caps_the_campaign_ends_on_its_candidate_budget(store: Store) -> None:
    chats: list[EndlessChat] = []
    summary = runner(store, llm_config(), ScriptedEngineer(), chats).run()
    assert summary.reason == "budget"
    camp = store.list_campaigns()[0]
    gen = [c for c in store.list_candidates(camp.id) if c.origin == "llm"]
    assert len(gen) == 6
    exps = store.list_experiments(camp.id)
    assert all(e.llm for e in exps if e.role == "candidate")
    roles = [r for r, _ in chats[0].prompts]
    assert roles.count("researcher") == 6 and roles.count("analyst") == 6


def test_behaviour_twins_are_told_to_the_researcher() -> None:
    def view(name: str, acc: float) -> ArchiveView:
        return ArchiveView(name, name, "", "", 0.0, {"64x8": acc, "128x16": acc}, 4096)

    notes = behaviour_notes([view("a", 0.5), view("b", 0.8), view("c", 0.505)])
    assert notes == [
        "c behaves like a (within a point on every test set at about the same state_size): "
        "its change did not alter behaviour; do not repeat it."
    ]


def test_setup_takes_each_role_from_its_own_section_or_the_shared_one(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[llm]\nbase_url = "http://a/v1"\nmodel = "big"\nprice_input_per_mtok = 1.0\n'
        '[llm.analyst]\nmodel = "small"\nprice_input_per_mtok = 0.1\n'
    )
    key = tmp_path / "key"
    key.write_text("sekrit\n")
    settings = load_settings(tmp_path, env={"ASI_NODE_LLM__ENGINEER__API_KEY_FILE": str(key)})
    setup = LLMSetup.from_settings(settings)
    ep = setup.endpoints
    assert (ep["researcher"].model, ep["analyst"].model) == ("big", "small")
    assert ep["analyst"].price_input_per_mtok == 0.1 and ep["engineer"].api_key == "sekrit"
    assert ep["researcher"].api_key == ""
    flagged = LLMSetup.from_settings(settings, url="http://b/v1", model="m")
    assert {(e.base_url, e.model) for e in flagged.endpoints.values()} == {("http://b/v1", "m")}
    with pytest.raises(ConfigError, match="no LLM model for the researcher"):
        LLMSetup.from_settings(load_settings(tmp_path / "none", env={}), url="http://c/v1")


class DownChat(EndlessChat):
    """An endpoint that is down: every researcher call fails after the SDK's retries."""

    async def complete(
        self, role: Role, messages: Sequence[Message], *, purpose: str, schema: Schema | None = None
    ) -> Reply:
        self.prompts.append((role, messages[-1].content))
        exchange = Exchange(role, purpose, "down", "[]", "", 0, 0, 0.0, 3.0, "timeout", "no answer")
        raise LLMCallError(f"{role} call failed: no answer within 1s (after retries)", exchange)


def test_a_dead_endpoint_pauses_the_campaign_instead_of_asking_on(store: Store) -> None:
    camp = store.create_campaign("t", llm_config().model_dump(mode="json"))
    chats: list[DownChat] = []

    def factory(ledger: Ledger) -> DownChat:
        chats.append(DownChat(ledger))
        return chats[-1]

    summary = CampaignRunner(
        store,
        camp,
        FakeEngineer(),
        1,
        1,
        b"s" * 32,
        llm=SETUP,
        chat_factory=factory,  # type: ignore[arg-type]
    ).run()
    assert summary.reason == "paused"
    assert "failed 2 times in a row" in summary.detail and "no answer" in summary.detail
    assert len(chats[0].prompts) == 2
    failed = [e for e in store.list_experiments(camp.id) if e.failure_class == "llm_response"]
    assert len(failed) == 2 and all("no answer" in e.analysis for e in failed)
