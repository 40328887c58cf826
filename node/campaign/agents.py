"""The LLM agents inside a campaign run: proposals, repairs, analyses, budget and records.

The scheduler calls in at a few points (propose ahead, collect, execute, record, analyse)
and stays the only writer of the store: the Researcher's and the Analyst's calls run in
background threads (node.campaign.background) and repairs in worker threads, and all of
them hand back values that the scheduler's thread records. Proposals are asked for ahead
of need and queued as they come back, so a worker seldom waits for an LLM. Every call an
agent makes is stored in full (`llm_exchange`); experiments carry counts and digests
(`ExperimentRow.llm`). When the campaign's LLM budget is spent, or the endpoint turns out to be
unusable, `pause` says why and the scheduler pauses the campaign after in-flight work.
A stop cancels the calls in flight: what came back is recorded, the rest is asked again
by the next run (an experiment awaiting its analysis stays unscored until then).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from attestation.schema import CandidateOrigin, ExperimentRole, ExperimentStatus
from loop.analyst import Analysis, Fitness
from loop.analyst_llm import (
    JUDGE_FITNESS_VERSION,
    LM_VOCABULARY,
    VOCABULARY,
    LLMAnalysis,
    LLMAnalyst,
    judged_fitness,
)
from loop.analyst_llm import system_prompt as analyst_prompt
from loop.archive import (
    Behaviour,
    behaviour_twin,
    code_fingerprint,
    sample_parents,
    sample_references,
)
from loop.contract import interface_text, metrics_text
from loop.engineer import EvalResult, ExperimentJob
from loop.llm import (
    CallScope,
    ChatModel,
    Exchange,
    Ledger,
    LLMCancelled,
    OpenAIChat,
    Portal,
    Spent,
)
from loop.outcome import FailureClass
from loop.proposal import ArchiveView, Proposal
from loop.repair import Repaired, Repairer, Runs
from loop.researcher.llm import Known, LLMResearcher, ResearchConfig, ResearchResult
from loop.researcher.llm import system_prompt as research_prompt
from loop.tasks import LMSpec
from node.campaign.background import Calls, Pace, proposals_wanted, timed
from node.campaign.config import CampaignConfig
from node.campaign.llm_setup import LLMSetup, caps_of, load_cognition
from node.campaign.tasks import build_task
from node.store import BUDGET_EXEMPT, CampaignRow, ExperimentRow, Lease, Store

log = logging.getLogger(__name__)

MAX_REJECTIONS = 5  # unusable replies in a row before the step gives up
# Researcher calls that failed in a row (each after the SDK's own retries) before the
# campaign pauses: the endpoint is down, and asking on would only stack retries.
MAX_FAILED_CALLS = 2
INSIGHTS_SHOWN = 8

ChatFactory = Callable[[Ledger], ChatModel]


class CampaignRun(Protocol):
    """What the agents use of the campaign's scheduler (`CampaignRunner`), which hands
    itself to them: its archive and budget, its progress events, and the path a finished
    experiment takes (scoring, records)."""

    workers: int
    lease: Lease  # what the run claims experiments under

    def emit(self, kind: str, data: dict[str, Any]) -> None: ...

    def archive(self) -> list[ArchiveView]: ...

    def budget_spent(self) -> bool: ...

    def describe(self, exp: ExperimentRow) -> dict[str, Any]: ...

    def record_result(self, exp: ExperimentRow, result: EvalResult) -> None: ...


@dataclass(frozen=True)
class Ask:
    """A Researcher call in flight: the parents it was shown (a reply's diff applies to
    the first), and the send-backs already told as events."""

    parents: tuple[ArchiveView, ...]
    sent_back: int = 0


def _counts(result: ResearchResult) -> bool:
    """A call's duration counts toward the pace when it ended in a reply (not a pause)."""
    return result.proposal is not None or result.failure is not None


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
        # The Researcher's and the Analyst's calls run in the background and end at a stop.
        self.scope = CallScope(self.portal)
        # The agents are told the campaign's own task and metrics (MQAR, or LM held-out loss).
        spec = build_task(config)
        lm = isinstance(spec, LMSpec)
        self.researcher = LLMResearcher(
            self.chat,
            self.scope,
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
            self.scope,
            system=analyst_prompt(metrics_text(spec)),
            vocabulary=LM_VOCABULARY if lm else VOCABULARY,
        )
        self._pause: str | None = None
        self._failed_calls = 0
        self._lock = threading.Lock()
        self._repairs: dict[str, Repaired] = {}
        self.pace = Pace()
        threads = max(1, setup.max_parallel_calls)
        self._proposals: Calls[Ask, ResearchResult] = Calls(threads, "llm-researcher")
        self._analyses: Calls[str, LLMAnalysis | None] = Calls(threads, "llm-analyst")
        self._analysed: dict[str, LLMAnalysis] = {}  # back from the Analyst, not scored yet
        self._queued: set[str] = set()  # experiments of proposals waiting for a worker
        self._generated: int | None = None  # candidates the budget counts, once read
        self._proposing = False
        self._rejected = 0  # unusable replies in a row
        self._budget_spent = False
        self._held = False  # an analysis was held back for the LLM budget
        self._fingerprints: dict[str, tuple[str, bool]] = {}  # by code digest
        self._stopped = False

    @property
    def pause(self) -> str | None:
        # The ledger's words first: a call refused while others were in flight names the
        # cap only once they are charged.
        with self._lock:
            return self.ledger.exhausted() or self._pause

    def _set_pause(self, reason: str | None) -> None:
        if reason is not None:
            with self._lock:
                self._pause = self._pause or reason

    def close(self) -> None:
        self._halt()
        if isinstance(self.chat, OpenAIChat):
            self.portal.call(self.chat.close())
        self.portal.close()

    def _halt(self) -> None:
        self._stopped = True
        self.scope.cancel()
        self._proposals.shutdown()
        self._analyses.shutdown()

    def stop(self, runner: CampaignRun) -> bool:
        """The run stops: cancel the calls in flight, join their threads and record what
        came back. True when an analysis did (its experiment can be scored now)."""
        self._halt()
        return self.collect(runner)

    @property
    def busy(self) -> bool:
        """Calls are in flight (the run waits for them before it ends)."""
        return bool(len(self._proposals) or len(self._analyses))

    def pending(self) -> set[Future[Any]]:
        """The calls in flight, for the scheduler to wait on beside its workers."""
        return {*self._proposals.futures(), *self._analyses.futures()}

    def start_proposing(self) -> None:
        """The scheduler wants a proposal (the baselines are scored and the candidate
        budget is not spent): from now on `propose_ahead` keeps proposals coming."""
        self._proposing = True

    def propose_ahead(self, runner: CampaignRun, idle: int) -> None:
        """Ask the Researcher, in the background, until enough proposals are ready or
        coming for the workers (`proposals_wanted`, `idle` of them waiting now), within
        the candidate budget and the LLM budget with the calls in flight counted."""
        if not self._proposing or self._stopped or self._budget_spent or self.pause is not None:
            return
        with self._lock:
            ready = len(self._queued)
        asked = len(self._proposals)
        parallel = self.setup.max_parallel_calls
        wanted = proposals_wanted(
            runner.workers, idle, self.pace.timings, parallel, self.setup.proposals_ahead
        )
        # After a failed call, one at a time: the endpoint may be down.
        n = min(wanted - ready - asked, (1 if self._failed_calls else parallel) - asked)
        if n <= 0 or self._rejected >= MAX_REJECTIONS:
            return
        budget = self.config.budget.max_candidates
        if self._generated is None or (not asked and self._generated >= budget):
            self._generated = self._count_generated()  # counted here, checked with the store
        room = budget - self._generated - asked
        if room <= 0:
            self._budget_spent = not asked  # candidates only grow; a call may bring none
            return
        if self._over_budget():
            return
        if runner.budget_spent():
            self._budget_spent = True  # candidates and experiment time only grow
            return
        n = min(n, room)
        archive = runner.archive()
        insights = [i.text for i in self.store.list_insights(self.campaign_id, INSIGHTS_SHOWN)]
        known = self._known()
        feedback = behaviour_notes(archive)
        for _ in range(n):
            if self._over_budget():
                return
            step = self._generated + len(self._proposals)
            rng = random.Random(f"{self.config.researcher_seed}:{step}")
            parents = sample_parents(archive, rng, k=2)
            references = sample_references(archive, rng, exclude=parents)
            call = functools.partial(
                self.researcher.propose, parents, references, insights, known, feedback
            )
            self._proposals.submit(Ask(tuple(parents)), timed(self.pace, call, _counts))

    def _over_budget(self) -> bool:
        """The calls in flight are expected to spend what is left of the LLM budget (each
        counted at the mean size of those made so far): hold the next call back."""
        ahead = len(self._proposals) + len(self._analyses)
        return self.ledger.exhausted(ahead=ahead) is not None

    def _count_generated(self) -> int:
        """Candidates the budget counts, and the queued proposals (from an earlier run)."""
        cid = self.campaign_id
        queued = {
            e.id
            for e in self.store.list_experiments(cid)
            if e.role is ExperimentRole.CANDIDATE and e.status is ExperimentStatus.QUEUED
        }
        with self._lock:
            self._queued |= queued
        return sum(c.origin not in BUDGET_EXEMPT for c in self.store.list_candidates(cid))

    def _counted(self) -> None:
        if self._generated is not None:
            self._generated += 1

    def collect(self, runner: CampaignRun) -> bool:
        """Record what the background calls handed back: proposals are queued for the
        workers, analyses kept for `analyse`. True when an experiment may now be scored
        (an analysis came back, or one held back for the budget may go now)."""
        scorable = False
        for ask, result in self._proposals.done():
            scorable = scorable or self._held
            if result is not None:
                self._take(runner, ask, result)
        for exp_id, analysis in self._analyses.done():
            scorable = True
            if analysis is not None:
                self._analysed[exp_id] = analysis
        if scorable:
            self._held = False
        return scorable

    def _take(self, runner: CampaignRun, ask: Ask, result: ResearchResult) -> None:
        """One Researcher call's result, recorded: a proposal (queued), a rejection (a
        failed experiment), or the calls of one that paused or was cancelled."""
        cid = self.campaign_id
        self._set_pause(result.pause)
        if result.duplicates_sent_back > ask.sent_back:
            sent = result.duplicates_sent_back - ask.sent_back
            runner.emit("duplicate", {"sent_back": sent, "step": "propose"})
        proposal = result.proposal
        if proposal is not None:
            # Calls made at once do not see each other's proposals: check again now.
            known = self._known()
            duplicate = self.researcher.duplicate_of(proposal.code, proposal.motivation, known)
            if duplicate is not None:
                if self._stopped:
                    self._keep(None, result.exchanges)
                    return
                if result.duplicates_sent_back < self.setup.duplicate_rounds:
                    runner.emit("duplicate", {"sent_back": 1, "step": "record"})
                    call = functools.partial(
                        self.researcher.send_back, result, duplicate, ask.parents, known
                    )
                    again = Ask(ask.parents, result.duplicates_sent_back + 1)
                    self._proposals.submit(again, timed(self.pace, call, _counts))
                    return
                # Sent back as often as allowed: given up, without a call.
                result = self.researcher.send_back(result, duplicate, ask.parents, known)
        if result.proposal is not None:
            self._failed_calls = 0
            self._rejected = 0
            cand = self.store.add_candidate(cid, result.proposal)
            exp = self.store.enqueue_experiment(
                cid, cand.id, ExperimentRole.CANDIDATE, self.config.seed
            )
            self._keep(exp.id, result.exchanges)
            self._counted()
            with self._lock:
                self._queued.add(exp.id)
            runner.emit(
                "proposed", {"candidate": cand.name, "motivation": result.proposal.motivation}
            )
            return
        if result.failure is None:
            self._keep(None, result.exchanges)  # paused or cancelled before any proposal
            return
        if self._record_rejection(runner, result, ask.parents):
            self._counted()
        failed_call = bool(result.exchanges) and result.exchanges[-1].status != "ok"
        self._failed_calls = self._failed_calls + 1 if failed_call else 0
        if self._failed_calls >= MAX_FAILED_CALLS:
            self._set_pause(
                f"the researcher's LLM calls failed {self._failed_calls} times in a row "
                f"({result.reason}); check the endpoint and run the campaign again"
            )
            return
        self._rejected += 1
        if self._rejected == MAX_REJECTIONS:
            # No more proposals until an experiment finishes (`record`): with none
            # running, the run ends.
            runner.emit(
                "no_proposal", {"reason": f"{MAX_REJECTIONS} unusable LLM replies in a row"}
            )

    def _known(self) -> Known:
        fingerprints: dict[str, str] = {}
        motivations: dict[str, str] = {}
        for cand in self.store.list_candidates(self.campaign_id):
            fingerprint, has_code = self._fingerprint(cand.digest)
            fingerprints.setdefault(fingerprint, cand.name)
            if cand.origin is not CandidateOrigin.BASELINE and has_code:
                motivations[cand.name] = cand.motivation
        return Known(fingerprints, motivations)

    def _fingerprint(self, digest: str) -> tuple[str, bool]:
        """A candidate's code fingerprint and whether it has code, read once per digest
        (code under a digest never changes)."""
        if digest not in self._fingerprints:
            code = self.store.get_code(digest)
            self._fingerprints[digest] = (code_fingerprint(code), bool(code.strip()))
        return self._fingerprints[digest]

    def _record_rejection(
        self, runner: CampaignRun, result: ResearchResult, parents: Sequence[ArchiveView]
    ) -> bool:
        """A failed experiment for an unusable reply; True when it made a new candidate
        (rejections with the same code, say none, share one)."""
        assert result.failure is not None
        cid = self.campaign_id
        proposal = Proposal(
            name=result.name or f"rejected-{result.failure}",
            motivation=result.motivation or "(no usable reply)",
            code=result.code,
            parent_ids=tuple(v.candidate_id for v in parents),
            origin="llm",
        )
        existing = {c.digest for c in self.store.list_candidates(cid)}
        if result.failure is FailureClass.DUPLICATE and proposal.digest in existing:
            # The very code of a candidate (proposals made at once): its record would be
            # that candidate's, so only the calls are kept.
            self._keep(None, result.exchanges)
            runner.emit("no_proposal", {"reason": result.reason})
            return False
        cand = self.store.add_candidate(cid, proposal)
        exp = self.store.enqueue_experiment(
            cid, cand.id, ExperimentRole.CANDIDATE, self.config.seed
        )
        self.store.start_experiment(exp.id, runner.lease)
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
        return proposal.digest not in existing

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
        debugger. Runs in a worker thread: what the rounds made is kept for `record`; how
        long it took sets the pace of proposals."""
        with self._lock:
            self._queued.discard(job.experiment_id)
        started = time.monotonic()
        result = self._execute(engineer, job, role, cancel)
        if result.failure is not FailureClass.INTERRUPTED:
            self.pace.note_experiment(time.monotonic() - started)
        return result

    def _execute(
        self, engineer: Runs, job: ExperimentJob, role: ExperimentRole, cancel: threading.Event
    ) -> EvalResult:
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
        self._rejected = 0  # an experiment finished: unusable replies may be asked past
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
        self._counted()
        fixed = self.store.enqueue_experiment(cid, cand.id, exp.role, exp.seed)
        runner.emit("repaired", {"candidate": cand.name, "rounds": rounds})
        if repaired.final.failure is FailureClass.INTERRUPTED:
            return  # stays queued and runs again
        self.store.start_experiment(fixed.id, runner.lease)
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
    ) -> tuple[Fitness, str, tuple[str, ...]] | None:
        """The fitness under the campaign's version, extra analysis text, extra insights;
        None while the Analyst's reply is awaited: its call runs in the background, and
        the scheduler scores the experiment on a pass after `collect` took the reply in.

        Only first-seed runs of generated candidates are sent to the LLM; under
        fitness-v1+judge the others count with a neutral judge (0.5), as do those scored
        while the campaign pauses. At a stop an awaited experiment stays unscored."""
        judge: float | None = None
        text = ""
        insights: tuple[str, ...] = ()
        result = self._analysed.pop(exp.id, None) if analyse_with_llm else None
        if analyse_with_llm and result is None:
            if self._stopped or exp.id in self._analyses:
                return None
            if self.pause is None:
                if self._over_budget():
                    self._held = True  # asked again once a call in flight is back
                    return None
                call = functools.partial(
                    self.analyst.analyse, name, motivation, code, dict(metrics), fit, programmatic
                )
                self._analyses.submit(exp.id, functools.partial(_unless_cancelled, call))
                return None
        if result is not None:
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


def _unless_cancelled(call: Callable[[], LLMAnalysis]) -> LLMAnalysis | None:
    """The Analyst's call, in a background thread; None when it was cancelled."""
    try:
        return call()
    except LLMCancelled:
        return None


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
