"""Runs a campaign: baselines, then propose -> screen -> train -> evaluate -> learn, in parallel.

All state lives in the store, so a crash loses nothing: on restart the experiments that
were running go back to the queue (once), proposals already made are reused, and the
Researcher's step counter is the number of candidates it has proposed so far.
Only this thread writes to the store; workers run experiments, and the LLM agents'
background calls ask the Researcher and the Analyst; both hand back values.

Several processes (nodes) may run one campaign on a shared database. Each claims
experiments under a lease its heartbeat renews (`node.campaign.leases`) and takes back
only those whose lease ran out; a proposal and its experiment are added in one
transaction that counts the budget; an experiment is queued once per seed and scored
once; a run ends only when nothing is queued or running anywhere.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from attestation.schema import (
    PENDING_STATUSES,
    CampaignStatus,
    CandidateOrigin,
    ExperimentRole,
    ExperimentStatus,
)
from loop.analyst import Scores, analyse, fitness, needs_reruns, over_seeds
from loop.archive import (
    Behaviour,
    behaviour_twin,
    code_fingerprint,
    sample_parents,
    sample_references,
)
from loop.engineer import EvalResult
from loop.heartbeat import Progress
from loop.outcome import FailureClass
from loop.probe import Probe
from loop.proposal import ArchiveView, Proposal
from loop.repair import Runs
from loop.researcher import OfflineResearcher
from loop.researcher.describe import describe_changes
from node.campaign.config import CampaignConfig, Verify
from node.campaign.leases import LeaseKeeper, new_lease
from node.campaign.rungs import peer_curves
from node.campaign.tasks import (
    build_backbone,
    experiment_job,
    heldout_seed,
    split_key,
)
from node.campaign.verification import WIDTH_OPTION, at_width, matched_name, matched_width
from node.errors import LeaseLostError
from node.network import replication
from node.store import BUDGET_EXEMPT, CampaignRow, CandidateRow, ExperimentRow, Lease, Store

if TYPE_CHECKING:
    from node.campaign.agents import ChatFactory, LLMAgents
    from node.campaign.llm_setup import LLMSetup

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]
MAX_PROPOSAL_TRIES = 20
# A runner built without a lease (tests, scripts) is node "local": its earlier runs'
# claims are its own, taken back at once, as before leases.
LOCAL_NODE = "local"
DEFAULT_LEASE_S = 120.0
DEFAULT_RENEW_S = 20.0
IDLE_POLL_S = 0.5  # while other processes still run the campaign's last experiments


class RecordSink(Protocol):
    """Where final experiments go to be signed into the log (node.tlog.records.Recorder)."""

    def experiment_final(self, experiment_id: str) -> None: ...


def baseline_code(name: str, width: int | None = None) -> str:
    """Baselines go through the same pipeline as candidates: their code is one import (a
    parameter-matched one names its width first, so its code digest, the record's
    subject, says which it is)."""
    from kernels.baselines import BASELINES

    head = "" if width is None else f"# parameter-matched baseline: d_model {width}\n"
    return head + f"from kernels.baselines import {BASELINES[name].__name__} as Mixer\n"


class RunEnd(StrEnum):
    """Why a `run` call ended."""

    COMPLETE = "complete"  # nothing left to run
    BUDGET = "budget"  # the candidate or time budget is spent
    STOPPED = "stopped"  # told to stop (a directive, a signal); runs again
    PAUSED = "paused"  # the LLM budget is spent or the endpoint stopped answering
    FAILED = "failed"  # the run raised (kept by the governed node)


@dataclass(frozen=True)
class RunSummary:
    """How a `run` call ended."""

    reason: RunEnd
    finished: int
    wall_s: float
    detail: str = ""  # why it paused


class CampaignRunner:
    """Drives one campaign until its budget is spent or `stop` is set."""

    def __init__(
        self,
        store: Store,
        campaign: CampaignRow,
        engineer: Runs,
        workers: int,
        threads_per_worker: int,
        node_secret: bytes,
        on_event: EventSink | None = None,
        stop: threading.Event | None = None,
        llm: LLMSetup | None = None,
        chat_factory: ChatFactory | None = None,
        recorder: RecordSink | None = None,
        lease: Lease | None = None,
        lease_renew_s: float = DEFAULT_RENEW_S,
    ) -> None:
        self.store = store
        self.lease = lease or new_lease(LOCAL_NODE, DEFAULT_LEASE_S)
        self.renew_s = lease_renew_s
        self._keeper = LeaseKeeper(store, self.lease, lease_renew_s)
        self._recovered_at = 0.0
        self.recorder = recorder
        self.campaign = campaign
        self.config = CampaignConfig.model_validate(campaign.config)
        self.engineer = engineer
        self.workers = max(1, workers)
        self.threads = max(1, threads_per_worker)
        self.node_secret = node_secret
        self.emit: EventSink = on_event or (lambda kind, data: None)
        self.stop = stop or threading.Event()
        # Something may need scoring: at start (results from an earlier run, a fork's
        # copies) and after each result. Ticks in between read nothing from the store, so
        # their cost does not grow with the archive.
        self._unscored = True
        self._codes: dict[str, str] = {}  # candidate code by digest (immutable, so kept)
        self.researcher = OfflineResearcher(self.config.researcher_seed)
        self._backbone = build_backbone(self.config)
        self.llm: LLMAgents | None = None
        if self.config.researcher == "llm":
            from node.campaign.agents import LLMAgents
            from node.errors import ConfigError

            if llm is None:
                raise ConfigError(
                    f"campaign {campaign.name} uses the llm researcher, but no LLM is "
                    "configured: set [llm] base_url and model, or pass --llm-url"
                )
            self.llm = LLMAgents(llm, store, campaign, self.config, chat_factory)

    def run(self) -> RunSummary:
        """Run until the campaign is complete, its budget spent, or `stop`; once."""
        try:
            with self._keeper:
                return self._run()
        finally:
            if self.llm is not None:
                self.llm.close()
            close = getattr(self.engineer, "close", None)  # an Engineer's idle standbys
            if close is not None:
                close()

    def _run(self) -> RunSummary:
        started = time.monotonic()
        cid = self.campaign.id
        self._recover()
        self.store.set_campaign_status(cid, CampaignStatus.RUNNING)
        self.store.add_event(cid, "run_started", {"config_hash": self.campaign.config_hash})
        self._ensure_baselines()
        self._enqueue_orphans()
        finished = 0
        reason = RunEnd.COMPLETE
        in_flight: dict[Future[EvalResult], ExperimentRow] = {}
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="experiment") as pool:
            while True:
                self._finalize_scores()
                if self.stop.is_set():
                    reason = RunEnd.STOPPED
                    break
                if time.monotonic() - self._recovered_at >= self.renew_s:
                    self._recover()  # experiments of processes that stopped renewing
                while len(in_flight) < self.workers and not self.stop.is_set():
                    exp = self._next_experiment(busy=bool(in_flight))
                    if exp is None:
                        break
                    self._keeper.hold(exp.id)
                    self.emit("started", self.describe(exp))
                    in_flight[pool.submit(self._execute, exp)] = exp
                if self.llm is not None:
                    self.llm.propose_ahead(self, idle=self.workers - len(in_flight))
                if not in_flight and (self.llm is None or not self.llm.busy):
                    if self._elsewhere():
                        # Another process's experiments may still fail, be requeued or
                        # earn re-runs: wait for them, scoring what they finish.
                        self._unscored = True
                        self.stop.wait(IDLE_POLL_S)
                        continue
                    reason = RunEnd.BUDGET if self.budget_spent() else RunEnd.COMPLETE
                    if self.llm is not None and self.llm.pause is not None:
                        reason = RunEnd.PAUSED
                    break
                calls = self.llm.pending() if self.llm is not None else set()
                done, _ = wait({*in_flight, *calls}, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut not in in_flight:
                        continue  # an LLM call: collected below
                    exp = in_flight.pop(fut)
                    result = fut.result()
                    self.record_result(exp, result)
                    finished += result.failure is not FailureClass.INTERRUPTED
                if self.llm is not None and self.llm.collect(self):
                    self._unscored = True  # an analysis came back: its experiment can be scored
            if reason is RunEnd.STOPPED:
                # Pause point: in-flight sandboxes see `stop` and are killed; their
                # experiments go back to the queue, not counted as attempts.
                for fut, exp in in_flight.items():
                    self.record_result(exp, fut.result())
                if self.llm is not None and self.llm.stop(self):
                    self._unscored = True
        self._finalize_scores()
        detail = (self.llm.pause if self.llm is not None else None) or ""
        paused = reason in (RunEnd.STOPPED, RunEnd.PAUSED)
        status = CampaignStatus.PAUSED if paused else CampaignStatus.DONE
        self.store.set_campaign_status(cid, status)
        self.store.add_event(
            cid, "run_stopped", {"reason": reason, "finished": finished, "detail": detail}
        )
        return RunSummary(reason, finished, time.monotonic() - started, detail)

    def _recover(self) -> None:
        """Take back the campaign's experiments nobody holds: this node's from before a
        restart, and those whose lease ran out. Those given up on are final: recorded."""
        self._recovered_at = time.monotonic()
        recovered = self.store.recover_interrupted(self.campaign.id, lease=self.lease)
        if not recovered:
            return
        self._unscored = True
        self.emit("recovered", {"experiments": recovered})
        if self.recorder is not None:
            for exp_id in recovered:
                self.recorder.experiment_final(exp_id)

    def _elsewhere(self) -> bool:
        """Whether the campaign has work this run does not hold: running under another
        process's lease, or queued meanwhile (not while the LLM budget pauses it)."""
        if self.llm is not None and self.llm.pause is not None:
            return False
        cid = self.campaign.id
        running = self.store.count_experiments(cid, ExperimentStatus.RUNNING)
        return running > 0 or self.store.count_experiments(cid, ExperimentStatus.QUEUED) > 0

    def _next_experiment(self, busy: bool) -> ExperimentRow | None:
        cid = self.campaign.id
        if self.llm is not None and self.llm.pause is not None:
            return None  # pausing: in-flight work finishes, nothing new starts
        for _ in range(MAX_PROPOSAL_TRIES):
            exp = self.store.claim_next_experiment(cid, self.lease)
            if exp is not None:
                return exp
            if self.config.verify is not None:
                return None  # a verification stage proposes nothing: its candidates are chosen
            if busy and not self._baselines_scored():
                return None  # candidates are scored against baselines: let those finish first
            if self.budget_spent() or not self._baselines_scored():
                return None
            if self.llm is not None:
                # The Researcher's calls run in the background (`propose_ahead` in the run
                # loop); its proposals are queued as they come back and claimed above.
                self.llm.start_proposing()
                return None
            proposal = self._propose()
            if proposal is None:
                return None
            added = self.store.add_proposal(
                cid,
                proposal,
                seed=self.config.seed,
                max_generated=self.config.budget.max_candidates,
            )
            if added is not None:
                cand, _ = added
                self.emit("proposed", {"candidate": cand.name, "motivation": proposal.motivation})
            # Else another process proposed this very code, or spent the budget, first:
            # claim what it queued, or propose at the next step.
        return None

    def _ensure_baselines(self) -> None:
        for name in self.config.baselines:
            proposal = Proposal(
                name=name,
                motivation=f"baseline {name}",
                code=baseline_code(name),
                origin="baseline",
            )
            self._enqueue_seeds(self.store.add_candidate(self.campaign.id, proposal))
        if self.config.verify is not None:
            self._ensure_verified(self.config.verify)

    def _seeds_of(self, cand: CandidateRow) -> tuple[int, ...]:
        """The seeds a candidate starts on: a verification stage trains every candidate and
        baseline on all its seeds; otherwise the first seed (re-runs come when earned)."""
        return self.config.seeds if self.config.verify is not None else (self.config.seed,)

    def _enqueue_seeds(self, cand: CandidateRow) -> None:
        have = {e.seed for e in self._experiments_of(cand.id)}
        for seed in self._seeds_of(cand):
            if seed in have:
                continue
            role = ExperimentRole.RERUN
            if cand.origin is CandidateOrigin.BASELINE:
                role = ExperimentRole.BASELINE
            elif seed == self.config.seed:
                role = ExperimentRole.CANDIDATE
            self.store.enqueue_experiment(self.campaign.id, cand.id, role, seed, once=True)

    def _ensure_verified(self, verify: Verify) -> None:
        """A verification stage's candidates: the source campaign's choice, same code and
        options, each naming the record it verifies (`verifies`)."""
        for chosen in verify.selected:
            source = self.store.get_candidate(chosen.candidate_id)
            proposal = Proposal(
                name=source.name,
                motivation=(
                    f"verifying {source.name} of campaign {verify.source} (mean fitness "
                    f"{chosen.mean:+.3f} over {chosen.seeds} seed(s), lower bound "
                    f"{chosen.lower_bound:+.3f}) at this stage's scale"
                ),
                code=self.store.get_code(source.digest),
                origin=source.origin.value,
                options=source.options,
            )
            self._enqueue_seeds(self.store.add_candidate(self.campaign.id, proposal))

    def _width_beside(self, name: str, cand: CandidateRow, exp: ExperimentRow) -> int | None:
        """The width baseline `name` trains at beside a verified candidate, from the
        non-embedding parameters its run `exp` measured: None for the campaign's own (no
        stage, a baseline, no count yet, or within the tolerance). ValueError when no
        width comes within the tolerance."""
        verify = self.config.verify
        target = (exp.metrics or {}).get("params_non_embedding")
        if verify is None or cand.origin is CandidateOrigin.BASELINE or not target:
            return None
        return matched_width(name, int(target), self._backbone, verify.param_tolerance)

    def _ensure_matched(self, cand: CandidateRow, exp: ExperimentRow) -> None:
        """Baselines at the width that matches a verified candidate's non-embedding
        parameter count, where the campaign's width is further off than the tolerance."""
        for name in self.config.baselines:
            try:
                width = self._width_beside(name, cand, exp)
            except ValueError as exc:
                self.emit("unmatched", {"candidate": cand.name, "baseline": name, "why": str(exc)})
                continue
            if width is None:
                continue
            proposal = Proposal(
                name=matched_name(name, width),
                motivation=f"baseline {name} at d_model {width}, parameter-matched to {cand.name}",
                code=baseline_code(name, width),
                origin="baseline",
                options={WIDTH_OPTION: width},
            )
            matched = self.store.add_candidate(self.campaign.id, proposal)
            if not self._experiments_of(matched.id):
                self.emit(
                    "matched",
                    {
                        "candidate": cand.name,
                        "baseline": proposal.name,
                        "params": int((exp.metrics or {})["params_non_embedding"]),
                    },
                )
            self._enqueue_seeds(matched)

    def _reference_of(self, cand: CandidateRow, exp: ExperimentRow) -> str:
        """The baseline a candidate is scored against: the reference, or in a verification
        stage the reference at the width matching the candidate's parameter count."""
        try:
            width = self._width_beside(self.config.reference, cand, exp)
        except ValueError:
            width = None  # no width matches: scored against the plain reference, as noted
        return matched_name(self.config.reference, width)

    def _enqueue_orphans(self) -> None:
        """A crash between adding a candidate and queueing it must not lose the candidate."""
        for cand in self.store.list_candidates(self.campaign.id):
            if not self._experiments_of(cand.id):
                self._enqueue_seeds(cand)

    def _experiments_of(self, candidate_id: str) -> list[ExperimentRow]:
        return [
            e
            for e in self.store.list_experiments(self.campaign.id)
            if e.candidate_id == candidate_id
        ]

    def _generated(self) -> list[CandidateRow]:
        """The candidates proposed here: what the budget counts."""
        return [
            c for c in self.store.list_candidates(self.campaign.id) if c.origin not in BUDGET_EXEMPT
        ]

    def budget_spent(self) -> bool:
        budget = self.config.budget
        if len(self._generated()) >= budget.max_candidates:
            return True
        if budget.max_wall_seconds is not None:
            spent: float = sum(
                float(e.timings.get("total_s", 0.0))
                for e in self.store.list_experiments(self.campaign.id)
                if e.timings
            )
            return spent >= budget.max_wall_seconds
        return False

    def _baselines_scored(self) -> bool:
        return not any(
            e.role is ExperimentRole.BASELINE and e.status in PENDING_STATUSES
            for e in self.store.list_experiments(self.campaign.id)
        )

    def archive(self) -> list[ArchiveView]:
        cid = self.campaign.id
        views = []
        by_candidate: dict[str, list[ExperimentRow]] = {}
        for e in self.store.list_experiments(cid):
            by_candidate.setdefault(e.candidate_id, []).append(e)
        cands = self.store.list_candidates(cid)
        children = Counter(pid for c in cands for pid in c.parent_ids)
        for cand in cands:
            own = by_candidate.get(cand.id, [])
            first = next((e for e in own if e.seed == self.config.seed), None)
            if first is None or first.status is not ExperimentStatus.DONE:
                continue
            scores = Scores.from_metrics(first.metrics or {})
            # Ranked on every seed scored so far, not on the first alone.
            seeds = over_seeds(
                [
                    e.fitness
                    for e in own
                    if e.status is ExperimentStatus.DONE and e.fitness is not None
                ]
            )
            views.append(
                ArchiveView(
                    candidate_id=cand.id,
                    name=cand.name,
                    code=self._code(cand.digest),
                    motivation=cand.motivation,
                    fitness=seeds.mean if seeds else None,
                    accuracies=dict(scores.per_set),
                    state_size=scores.state_size,
                    analysis=first.analysis or "",
                    seeds=seeds.seeds if seeds else 0,
                    fitness_spread=seeds.spread if seeds else 0.0,
                    children=children[cand.id],
                )
            )
        return views

    def _code(self, digest: str) -> str:
        if digest not in self._codes:
            self._codes[digest] = self.store.get_code(digest)
        return self._codes[digest]

    def _propose(self) -> Proposal | None:
        archive = self.archive()
        step = len(self._generated())
        known = {
            code_fingerprint(self.store.get_code(c.digest))
            for c in self.store.list_candidates(self.campaign.id)
        }
        known_digests = {c.digest for c in self.store.list_candidates(self.campaign.id)}
        rng = random.Random(f"{self.config.researcher_seed}:{step}")
        parents = sample_parents(archive, rng, k=2)
        references = sample_references(archive, rng, exclude=parents)
        for attempt in range(MAX_PROPOSAL_TRIES):
            proposal = self.researcher.propose(
                parents,
                references,
                step=step * MAX_PROPOSAL_TRIES + attempt,
                known_digests=known_digests,
            )
            if code_fingerprint(proposal.code) not in known:
                return proposal
        self.emit("no_proposal", {"reason": "every proposal duplicated the archive"})
        return None

    def _split_campaign(self) -> str:
        """The campaign whose held-out split this one uses: the root of its fork lineage,
        so a fork's experiments and those it inherited are scored on the same windows."""
        campaign = self.campaign
        while campaign.parent_campaign_id is not None:
            campaign = self.store.get_campaign(campaign.parent_campaign_id)
        return campaign.id

    def _execute(self, exp: ExperimentRow) -> EvalResult:
        cand = self.store.get_candidate(exp.candidate_id)
        options = dict(cand.options)
        width = options.pop(WIDTH_OPTION, None)
        # One read of the campaign for what a generated candidate's run is checked against.
        proposed = exp.role is ExperimentRole.CANDIDATE and self.config.verify is None
        runs = self.store.list_experiments(self.campaign.id) if proposed else []
        job = experiment_job(
            self.config,
            experiment_id=exp.id,
            code=self.store.get_code(cand.digest),
            origin=cand.origin,
            seed=exp.seed,
            threads=self.threads,
            split=split_key(self.node_secret, self._split_campaign()),
            heldout=heldout_seed(self.node_secret, exp.id),
            options=options,
            backbone=at_width(self._backbone, width),
            twins=self._twins(exp, runs),
            peers=self._peers(exp, runs),
        )
        job = replace(job, on_progress=self._progress(exp))
        if self.llm is not None:
            return self.llm.execute(self.engineer, job, exp.role, self.stop)
        return self.engineer.run(job, cancel=self.stop)

    def _peers(
        self, exp: ExperimentRow, runs: Sequence[ExperimentRow]
    ) -> list[Sequence[Sequence[float]]] | None:
        """With `[rungs]`, the loss curves a generated candidate's first run is held to:
        every other of the campaign's `runs` on its seed (`node.campaign.rungs`); None for
        the runs that always train to the end."""
        first = exp.role is ExperimentRole.CANDIDATE and exp.seed == self.config.seed
        if self.config.rungs is None or not first:
            return None
        return peer_curves(
            ((e.candidate_id, e.seed, e.train) for e in runs), exp.candidate_id, exp.seed
        )

    def _twins(
        self, exp: ExperimentRow, runs: Sequence[ExperimentRow]
    ) -> tuple[tuple[str, Probe], ...]:
        """The probes of the campaign's trained candidates (of its `runs`), for a proposed
        candidate's first run only: baselines, re-runs and a verification stage's chosen
        candidates are never rejected as behaviour twins."""
        if exp.role is not ExperimentRole.CANDIDATE or self.config.verify is not None:
            return ()
        names = {c.id: c.name for c in self.store.list_candidates(self.campaign.id)}
        known: dict[str, tuple[str, Probe]] = {}
        for e in runs:
            probe = Probe.from_json((e.screen or {}).get("probe"))
            done = e.status is ExperimentStatus.DONE and e.candidate_id != exp.candidate_id
            if done and probe is not None and e.candidate_id not in known:
                name = names.get(e.candidate_id, "candidate")
                known[e.candidate_id] = (f"{name} ({e.candidate_id})", probe)
        return tuple(known.values())

    def record_result(self, exp: ExperimentRow, result: EvalResult) -> None:
        """Record a run's result, if this run still holds the experiment's lease (one
        another process took over is its to record: this result is dropped)."""
        self._unscored = True
        try:
            self._record_result(exp, result)
        except LeaseLostError as exc:
            self.emit("lease_lost", self.describe(exp) | {"message": str(exc)})
        finally:
            self._keeper.release(exp.id)

    def _record_result(self, exp: ExperimentRow, result: EvalResult) -> None:
        if result.failure is FailureClass.INTERRUPTED:
            self.store.requeue_experiment(exp.id, self.lease)
            self.emit("interrupted", self.describe(exp))
            return
        status = ExperimentStatus.DONE if result.failure is None else ExperimentStatus.FAILED
        self.store.finish_experiment(
            exp.id,
            status=status,
            failure_class=result.failure.value if result.failure else None,
            screen=result.screen,
            train=result.train,
            metrics=result.metrics,
            fitness=None,
            fitness_version=None,
            timings=result.timings,
            analysis=result.message if result.failure else "",
            lease=self.lease,
        )
        if status is ExperimentStatus.FAILED and self.recorder is not None:
            self.recorder.experiment_final(exp.id)
        if status is ExperimentStatus.DONE and self.config.verify is not None:
            self._ensure_matched(
                self.store.get_candidate(exp.candidate_id), self.store.get_experiment(exp.id)
            )
        data = self.describe(exp) | {"status": status, "message": result.message}
        data["metrics"] = result.metrics
        data["timings"] = result.timings
        self.emit("finished", data)
        if self.llm is not None:
            self.llm.record(self, exp)

    def _finalize_scores(self) -> None:
        """Score what can be scored, if a result came in since the last pass (a pass that
        fails is tried again at the next tick)."""
        if not self._unscored:
            return
        self._unscored = False
        try:
            self._score_finished()
            if self.config.replication is not None:
                replication.judge(self.store, self.campaign)  # peers' records re-run here
        except BaseException:
            self._unscored = True
            raise

    def _score_finished(self) -> None:
        """Score every finished experiment whose reference run on the same seed is done."""
        cid = self.campaign.id
        exps = self.store.list_experiments(cid)
        pending = [e for e in exps if e.status is ExperimentStatus.DONE and e.fitness is None]
        if not pending:
            return
        cands = {c.id: c for c in self.store.list_candidates(cid)}
        by_name_seed = {
            (cands[e.candidate_id].name, e.seed, cands[e.candidate_id].origin): e for e in exps
        }
        archive = self.archive()
        for exp in pending:
            cand = cands[exp.candidate_id]
            reference = self._reference_of(cand, exp)
            ref = by_name_seed.get((reference, exp.seed, CandidateOrigin.BASELINE))
            if ref is None:  # not queued yet (a crash came between), or a new seed
                if reference == self.config.reference:
                    self._enqueue_reference(exp.seed)
                else:
                    self._ensure_matched(cand, exp)
                continue
            if ref.status is not ExperimentStatus.DONE:
                continue
            ref_scores = Scores.from_metrics(ref.metrics or {})
            scores = Scores.from_metrics(exp.metrics or {})
            fit = fitness(scores, ref_scores)
            parent = self._parent_scores(cand, cands, exps)
            changes = describe_changes(
                self.store.get_code(cands[parent[0]].digest) if parent else None,
                self.store.get_code(cand.digest),
            )
            text = analyse(
                cand.name,
                scores,
                ref_scores,
                reference,
                fit,
                parent=parent[1] if parent else None,
                parent_name=cands[parent[0]].name if parent else None,
                changes=changes,
            )
            insights = text.insights
            notes = [text.text]
            if self.llm is not None:
                analysed = self.llm.analyse(
                    exp,
                    cand.name,
                    cand.motivation,
                    self.store.get_code(cand.digest),
                    exp.metrics or {},
                    fit,
                    text,
                    analyse_with_llm=cand.origin is not CandidateOrigin.BASELINE
                    and exp.seed == self.config.seed,
                )
                if analysed is None:
                    continue  # the Analyst's reply is awaited: scored once it is back
                fit, extra, more = analysed
                notes += [extra] if extra else []
                insights = insights + more
            if "recheck_mean_acc" in (exp.metrics or {}):
                notes.append("Scored high enough to be re-evaluated on a second held-out draw.")
            twin = behaviour_twin(
                Behaviour.of(scores.per_set, scores.state_size),
                [a for a in archive if a.candidate_id != cand.id],
            )
            if twin is not None and exp.seed == self.config.seed:
                notes.append(f"Behaves like {twin.name} within a point on every test set.")
            if self.store.score_once(exp.id, fit.value, fit.version, " ".join(notes)) is None:
                continue  # another process sharing the campaign scored it first
            if self.recorder is not None:
                self.recorder.experiment_final(exp.id)
            for insight in insights:
                self.store.add_insight(cid, insight, exp.id)
            self.emit("scored", {"candidate": cand.name, "seed": exp.seed, "fitness": fit.value})
            if (
                cand.origin is not CandidateOrigin.BASELINE
                and self.config.verify is None
                and exp.seed == self.config.seed
                and needs_reruns(fit, self.config.promote_margin)
            ):
                self._enqueue_reruns(cand)

    def _parent_scores(
        self, cand: CandidateRow, cands: dict[str, CandidateRow], exps: list[ExperimentRow]
    ) -> tuple[str, Scores] | None:
        for pid in cand.parent_ids:
            first = next(
                (
                    e
                    for e in exps
                    if e.candidate_id == pid
                    and e.seed == self.config.seed
                    and e.status is ExperimentStatus.DONE
                ),
                None,
            )
            if first is not None and pid in cands:
                return pid, Scores.from_metrics(first.metrics or {})
        return None

    def _enqueue_reruns(self, cand: CandidateRow) -> None:
        have = {e.seed for e in self._experiments_of(cand.id)}
        limit = self.config.budget.max_rerun_candidates
        if limit is not None:
            rerun = {
                e.candidate_id
                for e in self.store.list_experiments(self.campaign.id)
                if e.role is ExperimentRole.RERUN
            }
            if cand.id not in rerun and len(rerun) >= limit:
                self.emit("rerun_skipped", {"candidate": cand.name, "limit": limit})
                return
        for seed in self.config.rerun_seeds:
            self._enqueue_reference(seed)
            if seed not in have:
                self.store.enqueue_experiment(
                    self.campaign.id, cand.id, ExperimentRole.RERUN, seed, once=True
                )
                self.emit("rerun", {"candidate": cand.name, "seed": seed})

    def _enqueue_reference(self, seed: int) -> None:
        cid = self.campaign.id
        ref = next(
            c
            for c in self.store.list_candidates(cid)
            if c.origin is CandidateOrigin.BASELINE and c.name == self.config.reference
        )
        if not any(e.seed == seed for e in self._experiments_of(ref.id)):
            self.store.enqueue_experiment(cid, ref.id, ExperimentRole.BASELINE, seed, once=True)

    def _progress(self, exp: ExperimentRow) -> Callable[[Progress], None]:
        """Training heartbeats as "progress" events; emitted only, never stored (they
        come every few seconds)."""
        described = self.describe(exp)

        def emit(p: Progress) -> None:
            self.emit(
                "progress",
                described
                | {
                    "step": p.step,
                    "steps": p.steps,
                    "loss": p.loss,
                    "tok_s": p.tok_s,
                    "eta_s": p.eta_s,
                },
            )

        return emit

    def describe(self, exp: ExperimentRow) -> dict[str, Any]:
        cand = self.store.get_candidate(exp.candidate_id)
        return {
            "experiment": exp.id,
            "seq": exp.seq,
            "candidate": cand.name,
            "role": exp.role,
            "seed": exp.seed,
        }
