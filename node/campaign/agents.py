"""The LLM agents inside a campaign run: proposals, repairs, analyses, budget and records.

The scheduler calls in at four points (propose, execute, record, analyse) and stays the
only writer of the store: repairs run in worker threads and hand back values. Every call
an agent makes is stored in full (`llm_exchange`); experiments carry counts and digests
(`ExperimentRow.llm`). When the campaign's LLM budget is spent, or the endpoint turns out to be
unusable, `pause` says why and the scheduler pauses the campaign after in-flight work.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from attestation.schema import CandidateOrigin, ExperimentRole, ExperimentStatus
from loop.analyst import Analysis, Fitness
from loop.analyst_llm import (
    JUDGE_FITNESS_VERSION,
    LM_VOCABULARY,
    VOCABULARY,
    LLMAnalyst,
    judged_fitness,
)
from loop.analyst_llm import system_prompt as analyst_prompt
from loop.archive import Behaviour, behaviour_twin, code_fingerprint
from loop.cognition import CognitionBase, CognitionError
from loop.contract import interface_text, metrics_text
from loop.engineer import EvalResult, ExperimentJob
from loop.llm import (
    ROLES,
    Caps,
    ChatModel,
    Endpoint,
    Exchange,
    Ledger,
    OpenAIChat,
    Portal,
    Role,
    Spent,
)
from loop.outcome import FailureClass
from loop.proposal import ArchiveView, Proposal
from loop.repair import Repaired, Repairer, Runs
from loop.researcher.llm import Known, LLMResearcher, ResearchConfig, ResearchResult
from loop.researcher.llm import system_prompt as research_prompt
from loop.tasks import LMSpec
from node.campaign.config import CampaignConfig
from node.campaign.tasks import build_task
from node.errors import ConfigError
from node.settings import Settings
from node.store import CampaignRow, ExperimentRow, Store

log = logging.getLogger(__name__)

MAX_REJECTIONS = 5  # unusable replies in a row before the step gives up
# Researcher calls that failed in a row (each after the SDK's own retries) before the
# campaign pauses: the endpoint is down, and asking on would only stack retries.
MAX_FAILED_CALLS = 2
INSIGHTS_SHOWN = 8
COGNITION_FILE = "cognition.jsonl"

ChatFactory = Callable[[Ledger], ChatModel]


class CampaignRun(Protocol):
    """What the agents use of the campaign's scheduler (`CampaignRunner`), which hands
    itself to them: its archive and budget, its progress events, and the path a finished
    experiment takes (scoring, records)."""

    def emit(self, kind: str, data: dict[str, Any]) -> None: ...

    def archive(self) -> list[ArchiveView]: ...

    def budget_spent(self) -> bool: ...

    def describe(self, exp: ExperimentRow) -> dict[str, Any]: ...

    def record_result(self, exp: ExperimentRow, result: EvalResult) -> None: ...


@dataclass(frozen=True)
class LLMSetup:
    """The node's LLM configuration, resolved per role (secrets as plain strings here:
    this object is never logged or stored)."""

    endpoints: Mapping[Role, Endpoint]
    max_code_chars: int = 20_000
    repair_rounds: int = 2
    duplicate_rounds: int = 2
    cognition_file: Path | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, url: str | None = None, model: str | None = None
    ) -> LLMSetup:
        """Endpoints per role from [llm] (a role's own keys win); `url` and `model` (the
        demo's --llm-url and --model) replace them for every role. Raises ConfigError when a
        role ends up without a base URL or a model."""
        llm = settings.llm
        endpoints: dict[Role, Endpoint] = {}
        for role in ROLES:
            own = getattr(llm, role)
            base_url = url or own.base_url or llm.base_url
            name = model or own.model or llm.model
            if not base_url:
                raise ConfigError(
                    f"no LLM endpoint for the {role}: set [llm] base_url in config.toml "
                    "(or ASI_NODE_LLM__BASE_URL), or pass --llm-url"
                )
            if not name:
                raise ConfigError(
                    f"no LLM model for the {role}: set [llm] model (or ASI_NODE_LLM__MODEL), "
                    "or pass --model"
                )
            key = own.api_key or llm.api_key
            endpoints[role] = Endpoint(
                base_url=base_url,
                model=name,
                api_key=key.get_secret_value() if key is not None else "",
                timeout_s=llm.timeout_seconds,
                max_retries=llm.max_retries,
                structured=llm.structured_outputs,
                max_output_tokens=llm.max_output_tokens,
                temperature=llm.temperature,
                price_input_per_mtok=(
                    own.price_input_per_mtok
                    if own.price_input_per_mtok is not None
                    else llm.price_input_per_mtok
                ),
                price_output_per_mtok=(
                    own.price_output_per_mtok
                    if own.price_output_per_mtok is not None
                    else llm.price_output_per_mtok
                ),
            )
        return cls(
            endpoints,
            max_code_chars=llm.max_code_chars,
            repair_rounds=llm.repair_rounds,
            duplicate_rounds=llm.duplicate_rounds,
            cognition_file=settings.home / COGNITION_FILE,
        )


def check_endpoints(setup: LLMSetup) -> list[str]:
    """Probe every distinct endpoint and model before a run: one line per endpoint found
    working. Raises ConfigError saying what is wrong (unreachable, key, model)."""
    from loop.llm import LLMConfigError

    portal = Portal()
    chat = OpenAIChat(setup.endpoints, Ledger(Caps()))
    seen: dict[tuple[str, str], str] = {}
    try:
        for role in ROLES:
            ep = setup.endpoints[role]
            if (ep.base_url, ep.model) not in seen:
                seen[(ep.base_url, ep.model)] = portal.call(chat.probe(role))
    except LLMConfigError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        portal.call(chat.close())
        portal.close()
    return list(seen.values())


def first_model(url: str, api_key: str = "") -> str | None:
    """The first model an endpoint lists: the demo's model when none is named."""
    endpoint = Endpoint(base_url=url, model="", api_key=api_key, timeout_s=10, max_retries=0)
    portal = Portal()
    chat = OpenAIChat(dict.fromkeys(ROLES, endpoint), Ledger(Caps()))
    try:
        return portal.call(chat.first_model("researcher"))
    finally:
        portal.call(chat.close())
        portal.close()


def load_cognition(path: Path | None) -> CognitionBase:
    try:
        return CognitionBase.load(path)
    except CognitionError as exc:
        raise ConfigError(f"cognition base: {exc}") from None


def caps_of(config: CampaignConfig) -> Caps:
    b = config.budget
    return Caps(b.max_llm_calls, b.max_llm_tokens, b.max_llm_cost_usd)


class LLMAgents:
    """The Researcher, the Engineer's debugger and the Analyst of one campaign run."""

    def __init__(
        self,
        setup: LLMSetup,
        store: Store,
        campaign: CampaignRow,
        config: CampaignConfig,
        chat_factory: ChatFactory | None = None,
    ) -> None:
        self.setup = setup
        self.store = store
        self.campaign_id = campaign.id
        self.config = config
        used = store.llm_usage(campaign.id)
        self.ledger = Ledger(caps_of(config), Spent(used.calls, used.tokens, used.cost_usd))
        factory = chat_factory or (lambda ledger: OpenAIChat(setup.endpoints, ledger))
        self.chat = factory(self.ledger)
        self.portal = Portal()
        # The agents are told the campaign's own task and metrics (MQAR, or LM held-out loss).
        spec = build_task(config)
        lm = isinstance(spec, LMSpec)
        self.researcher = LLMResearcher(
            self.chat,
            self.portal,
            load_cognition(setup.cognition_file),
            ResearchConfig(
                max_code_chars=setup.max_code_chars, duplicate_rounds=setup.duplicate_rounds
            ),
            system=research_prompt(
                interface_text(spec), metrics_text(spec), "held-out loss" if lm else "recall"
            ),
        )
        self.repairer = Repairer(self.chat, self.portal, setup.repair_rounds, setup.max_code_chars)
        self.analyst = LLMAnalyst(
            self.chat,
            self.portal,
            system=analyst_prompt(metrics_text(spec)),
            vocabulary=LM_VOCABULARY if lm else VOCABULARY,
        )
        self._pause: str | None = None
        self._failed_calls = 0
        self._lock = threading.Lock()
        self._repairs: dict[str, Repaired] = {}

    @property
    def pause(self) -> str | None:
        with self._lock:
            return self._pause or self.ledger.exhausted()

    def _set_pause(self, reason: str | None) -> None:
        if reason is not None:
            with self._lock:
                self._pause = self._pause or reason

    def close(self) -> None:
        if isinstance(self.chat, OpenAIChat):
            self.portal.call(self.chat.close())
        self.portal.close()

    def next_experiment(
        self,
        runner: CampaignRun,
        parents: Sequence[ArchiveView],
        references: Sequence[ArchiveView],
    ) -> ExperimentRow | None:
        """Propose until a proposal is queued (and claimed), the budget is spent, the
        campaign must pause, or MAX_REJECTIONS unusable replies came in a row."""
        cid = self.campaign_id
        feedback = behaviour_notes(runner.archive())
        for _ in range(MAX_REJECTIONS):
            if self.pause is not None or runner.budget_spent():
                return None
            result = self.researcher.propose(
                parents,
                references,
                [i.text for i in self.store.list_insights(cid, INSIGHTS_SHOWN)],
                self._known(),
                feedback,
            )
            self._set_pause(result.pause)
            if result.duplicates_sent_back:
                runner.emit(
                    "duplicate", {"sent_back": result.duplicates_sent_back, "step": "propose"}
                )
            if result.proposal is not None:
                self._failed_calls = 0
                cand = self.store.add_candidate(cid, result.proposal)
                exp = self.store.enqueue_experiment(
                    cid, cand.id, ExperimentRole.CANDIDATE, self.config.seed
                )
                self._keep(exp.id, result.exchanges)
                runner.emit(
                    "proposed",
                    {"candidate": cand.name, "motivation": result.proposal.motivation},
                )
                claimed = self.store.start_experiment(exp.id)
                return claimed
            if result.failure is None:
                self._keep(None, result.exchanges)  # paused before any proposal
                return None
            self._record_rejection(runner, result, parents)
            failed_call = bool(result.exchanges) and result.exchanges[-1].status != "ok"
            self._failed_calls = self._failed_calls + 1 if failed_call else 0
            if self._failed_calls >= MAX_FAILED_CALLS:
                self._set_pause(
                    f"the researcher's LLM calls failed {self._failed_calls} times in a row "
                    f"({result.reason}); check the endpoint and run the campaign again"
                )
                return None
        runner.emit("no_proposal", {"reason": f"{MAX_REJECTIONS} unusable LLM replies in a row"})
        return None

    def _known(self) -> Known:
        fingerprints: dict[str, str] = {}
        motivations: dict[str, str] = {}
        for cand in self.store.list_candidates(self.campaign_id):
            code = self.store.get_code(cand.digest)
            fingerprints.setdefault(code_fingerprint(code), cand.name)
            if cand.origin is not CandidateOrigin.BASELINE and code.strip():
                motivations[cand.name] = cand.motivation
        return Known(fingerprints, motivations)

    def _record_rejection(
        self, runner: CampaignRun, result: ResearchResult, parents: Sequence[ArchiveView]
    ) -> None:
        assert result.failure is not None
        cid = self.campaign_id
        proposal = Proposal(
            name=result.name or f"rejected-{result.failure}",
            motivation=result.motivation or "(no usable reply)",
            code=result.code,
            parent_ids=tuple(v.candidate_id for v in parents),
            origin="llm",
        )
        cand = self.store.add_candidate(cid, proposal)
        exp = self.store.enqueue_experiment(
            cid, cand.id, ExperimentRole.CANDIDATE, self.config.seed
        )
        self.store.start_experiment(exp.id)
        screen = {
            "checks": [{"name": "llm_proposal", "passed": False, "detail": result.reason}],
            "failure": str(result.failure),
            "message": result.reason,
            "duplicates_sent_back": result.duplicates_sent_back,
        }
        self.store.finish_experiment(
            exp.id,
            ExperimentStatus.FAILED,
            failure_class=result.failure.value,
            screen=screen,
            analysis=result.reason,
        )
        self._keep(exp.id, result.exchanges)
        runner.emit(
            "finished",
            runner.describe(exp) | {"status": ExperimentStatus.FAILED, "message": result.reason},
        )

    def _keep(self, experiment_id: str | None, exchanges: Sequence[Exchange]) -> None:
        if exchanges:
            self.store.add_llm_exchanges(
                self.campaign_id, experiment_id, [dataclasses.asdict(x) for x in exchanges]
            )
        if experiment_id is not None:
            self.store.refresh_experiment_llm(experiment_id)

    def execute(
        self, engineer: Runs, job: ExperimentJob, role: ExperimentRole, cancel: threading.Event
    ) -> EvalResult:
        """Run the experiment; a repairable failure of a generated candidate goes to the
        debugger. Runs in a worker thread: what the rounds made is kept for `record`."""
        if role is not ExperimentRole.CANDIDATE or self.pause is not None:
            return engineer.run(job, cancel)  # baselines and re-runs are not patched
        repaired = self.repairer.run(engineer, job, cancel)
        self._set_pause(repaired.pause)
        if not repaired.rounds:
            return repaired.first
        with self._lock:
            self._repairs[job.experiment_id] = repaired
        screen = dict(repaired.first.screen) | {"repair": [r.as_json() for r in repaired.rounds]}
        return dataclasses.replace(repaired.first, screen=screen)

    def record(self, runner: CampaignRun, exp: ExperimentRow) -> None:
        """After the scheduler recorded `exp`: keep the debugger's calls and code, and
        record the repaired code as a candidate of its own with its result."""
        with self._lock:
            repaired = self._repairs.pop(exp.id, None)
        if repaired is None:
            if exp.role is not ExperimentRole.BASELINE:
                self.store.refresh_experiment_llm(exp.id)
            return
        for code in repaired.codes:
            self.store.put_code(code)
        self._keep(exp.id, repaired.exchanges)
        if repaired.code is None or repaired.final is None:
            return
        cid = self.campaign_id
        original = self.store.get_candidate(exp.candidate_id)
        rounds = len(repaired.rounds)
        proposal = Proposal(
            name=f"{original.name}+fix{rounds}"[:80],
            motivation=(
                f"{original.motivation} [repaired by the Engineer's debugger in {rounds} "
                f"round(s) after {repaired.first.failure}]"
            ),
            code=repaired.code,
            parent_ids=(original.id,),
            origin="llm",
            options=original.options,
        )
        cand = self.store.add_candidate(cid, proposal)
        fixed = self.store.enqueue_experiment(cid, cand.id, exp.role, exp.seed)
        runner.emit("repaired", {"candidate": cand.name, "rounds": rounds})
        if repaired.final.failure is FailureClass.INTERRUPTED:
            return  # stays queued and runs again
        self.store.start_experiment(fixed.id)
        runner.record_result(self.store.get_experiment(fixed.id), repaired.final)

    def analyse(
        self,
        exp: ExperimentRow,
        name: str,
        motivation: str,
        code: str,
        metrics: Mapping[str, float],
        fit: Fitness,
        programmatic: Analysis,
        analyse_with_llm: bool,
    ) -> tuple[Fitness, str, tuple[str, ...]]:
        """The fitness under the campaign's version, extra analysis text, extra insights.

        Only first-seed runs of generated candidates are sent to the LLM; under
        fitness-v1+judge the others count with a neutral judge (0.5)."""
        judge: float | None = None
        text = ""
        insights: tuple[str, ...] = ()
        if analyse_with_llm and self.pause is None:
            result = self.analyst.analyse(name, motivation, code, metrics, fit, programmatic)
            self._set_pause(result.pause)
            self._keep(exp.id, result.exchanges)
            judge = result.judge
            if result.text:
                text = f"LLM analysis: {result.text}"
            elif result.error:
                text = f"(LLM analysis unavailable: {result.error})"
            insights = result.insights
        if self.config.fitness == JUDGE_FITNESS_VERSION:
            fit = judged_fitness(fit, 0.5 if judge is None else judge)
        return fit, text, insights


def behaviour_notes(archive: Sequence[ArchiveView], limit: int = 4) -> list[str]:
    """Behaviour-fingerprint duplicates among the scored candidates, newest first: the
    Researcher is told which designs turned out to behave like earlier ones."""
    notes: list[str] = []
    for i in range(len(archive) - 1, 0, -1):
        entry = archive[i]
        if not entry.accuracies:
            continue
        twin = behaviour_twin(Behaviour.of(entry.accuracies, entry.state_size), archive[:i])
        if twin is not None:
            notes.append(
                f"{entry.name} behaves like {twin.name} (within a point on every test set at "
                "about the same state_size): its change did not alter behaviour; do not "
                "repeat it."
            )
        if len(notes) >= limit:
            break
    return notes
