"""Node obedience: campaigns run only while governance allows, and stop when it says so.

`GovernedNode.step()` polls the watcher once, records every applied directive as a
signed entry of the node's transparency log (with a `Recorder`) and in the store
(`DirectiveLedger`, which the chain client later acknowledges on-chain, committing to
that entry), carries out forks, and then makes each campaign's run match what the
watcher allows: a campaign that may no longer run has its run's stop event set, which
kills its sandboxed training within about 0.1 s (`loop.sandbox`), and the scheduler's
stop path puts the interrupted experiments back in the queue (never lost, not counted as
attempts); a campaign that may run again is started again (the scheduler resumes from
the store). Nothing of a campaign starts while it is paused, because no run of it exists
then. A directive's `applied_at`
is read from the store's clock right after the poll that applied it, before any run is
stopped or started, so the audit's replay of the log (`attestation.records`) compares
experiment starts against the moment the node acted.

A fork starts at a size of this node's log: its checkpoint root must be the log's root
at that size, and the child inherits the parent's finished experiments whose records lie
in the log below it (with their candidates and insights). Anything else is refused, the
reason kept in the directive's detail and log entry.

Each run is a thread that calls `run(campaign_id, stop_event)`; `serve` steps every poll
interval until told to stop. `governed_node` wires one from a node's settings; what the
store keeps of it is read back in `node.governed.records`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from attestation.canonical import hash_rule, json_sha256
from attestation.schema import CampaignStatus, ExperimentStatus
from governance.directives import (
    ALL_CAMPAIGNS,
    CampaignState,
    Directive,
    DirectiveKind,
    DirectiveSource,
)
from governance.errors import ForkConfigError
from governance.watcher import Applied, Standing, Watcher
from node.campaign.scheduler import RunEnd, RunSummary
from node.errors import AsiNodeError, ConfigError, ConflictError, NotFoundError, StoreError
from node.store import DirectiveLedger, DirectiveRow, Store
from node.tlog.records import Recorder, logged_experiments

if TYPE_CHECKING:
    from node.runtime import Node
    from node.settings import Settings

log = logging.getLogger(__name__)

RunFn = Callable[[str, threading.Event], RunSummary]
# What a fork keeps in its directive's detail and log entry.
FORK_FACTS = (
    "parent",
    "child",
    "position",
    "checkpoint_root",
    "experiments",
    "pause_parent",
    "child_paused",
)
INHERITED_STATUSES = (ExperimentStatus.DONE, ExperimentStatus.FAILED)


class ForkRefused(AsiNodeError):
    """A fork names a log position this node cannot start a child from (beyond its log,
    or with another root). Nothing was created; the reason is in the directive's detail.
    A new proposal must name a size of this node's log and its root there."""


class ForkConfigs(Protocol):
    """Finds the config a fork names (by its SHA-256 and URI), as a mapping."""

    def __call__(self, config_hash: bytes, uri: str) -> Mapping[str, Any]: ...


def config_sha256(config: Mapping[str, Any]) -> bytes:
    """The hash a fork's config is named by: SHA-256 of its RFC 8785 JSON, as stored."""
    return json_sha256(dict(config))


@dataclass
class _Run:
    campaign_id: str
    stop: threading.Event
    thread: threading.Thread
    summary: RunSummary | None = None
    error: BaseException | None = None
    stop_requested_at: float | None = None
    stop_cause: DirectiveRow | None = None
    cause_observed_at: float | None = None
    ended_at: float | None = None
    late: bool = False  # missed its stop deadline (logged once)
    directed: bool = False  # stopped by a directive (not staleness or revocation)


@dataclass(frozen=True)
class Stopped:
    """A run that ended because governance stopped it, and how fast."""

    campaign_id: str
    latency_s: float  # directive observed -> run ended (training killed, work requeued)
    within_deadline: bool
    summary: RunSummary | None


@dataclass
class StepReport:
    applied: list[DirectiveRow] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    stopping: list[str] = field(default_factory=list)
    stopped: list[Stopped] = field(default_factory=list)
    forked: list[str] = field(default_factory=list)


class GovernedNode:
    """Drives `campaigns` (ids) under `watcher`; see the module docstring."""

    def __init__(
        self,
        store: Store,
        watcher: Watcher,
        run: RunFn,
        campaigns: Iterable[str],
        *,
        stop_deadline_s: float = 30.0,
        configs: ForkConfigs | None = None,
        clock: Callable[[], float] = time.monotonic,
        recorder: Recorder | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder  # None: directives only in the store; forks at "latest"
        self.ledger = DirectiveLedger(store)
        self.watcher = watcher
        self.run = run
        self.campaigns = [store.get_campaign(c).id for c in campaigns]
        self.stop_deadline_s = stop_deadline_s
        self.configs = configs
        self.clock = clock
        self.runs: dict[str, _Run] = {}
        self.finished: dict[str, RunSummary] = {}
        self._unrecorded: list[tuple[Applied, datetime, int | None]] = []
        self._unlinked: dict[str, Stopped] = {}  # stops whose directive is not recorded yet
        self._backlog = recorder is not None  # rows applied before the log was wired
        self._status: dict[str, Any] = {}  # the last step's snapshot (`status`)

    def step(self) -> StepReport:
        """Poll once; obey first, then record (a store that fails cannot delay a stop:
        unrecorded directives are retried on the next step)."""
        report = StepReport()
        result = self.watcher.poll()
        applied_at = self.ledger.now()  # the directives take effect from here on
        for applied in result.applied:
            self._note(applied)
        self._reap(report)
        self._enforce(report)
        self._log_backlog()
        # A superseded directive was never in effect, but its epoch is recorded (and
        # acknowledged) just before the one that overtook it: epochs stay sequential.
        overtaken: dict[tuple[str, str, int], list[Applied]] = {}
        for item in result.superseded:
            by = item.by
            now = self.clock()
            overtaken.setdefault((by.source, by.campaign_id, by.epoch), []).append(
                Applied(item.directive, now, now, None)
            )
        fresh: list[tuple[Applied, datetime, int | None]] = []
        for applied in result.applied:
            d = applied.directive
            for old in overtaken.get((d.source, d.campaign_id, d.epoch), []):
                fresh.append((old, applied_at, d.epoch))
            fresh.append((applied, applied_at, None))
        for d in result.undone:
            self._record_undone(d, applied_at)
        for change in result.standing:
            self._record_standing(change, applied_at)
        todo, self._unrecorded = [*self._unrecorded, *fresh], []
        for i, (applied, at, superseded_by) in enumerate(todo):
            try:
                row = self._apply(applied, at, report, superseded_by)
            except (StoreError, ConflictError) as exc:
                log.error(
                    "applied directive not recorded; retried on the next poll",
                    extra={"epoch": applied.directive.epoch, "error": str(exc)},
                )
                self._unrecorded = todo[i:]
                break
            report.applied.append(row)
        if report.forked:
            self._enforce(report)  # start the children
        self._status = self._snapshot()
        return report

    def status(self) -> dict[str, Any]:
        """What the node did at its last step, for `/health` (safe from other threads:
        the polling thread replaces the snapshot whole): each campaign's governed state
        and whether it runs, each source's age, staleness and revocation."""
        return dict(self._status)

    def _snapshot(self) -> dict[str, Any]:
        watcher = self.watcher
        return {
            "polled_at": self.ledger.now().isoformat(),
            "campaigns": {
                cid: {"state": watcher.state(cid).value, "running": cid in self.runs}
                | ({"held": held} if (held := watcher.held(cid)) else {})
                for cid in self.campaigns
            },
            "sources": {name: {"age_s": round(age, 3)} for name, age in watcher.ages().items()},
            "stale": watcher.stale,
            "revoked": watcher.revoked,
        }

    def adopt(self, campaign_id: str) -> bool:
        """Drive one more campaign from the next step on; False if it is driven already."""
        if campaign_id in self.campaigns:
            return False
        self.campaigns.append(campaign_id)
        return True

    def serve(
        self,
        stop: threading.Event,
        poll_interval_s: float,
        after_step: Callable[[StepReport], None] | None = None,
    ) -> None:
        """Step every `poll_interval_s` until `stop`; then stop every run and wait.
        `after_step` (e.g. on-chain acknowledgements) gets each step's report; it must
        not raise, nor block for long: the next poll waits for it."""
        try:
            while not stop.is_set():
                report = self.step()
                if after_step is not None:
                    after_step(report)
                stop.wait(poll_interval_s)
        finally:
            self.shutdown()

    def shutdown(self, timeout_s: float | None = None) -> None:
        for run in self.runs.values():
            run.stop.set()
        for run in list(self.runs.values()):
            run.thread.join(timeout_s if timeout_s is not None else self.stop_deadline_s)
        self._reap(StepReport())

    def wait_stopped(self, campaign_id: str, timeout_s: float) -> StepReport:
        """Step until the campaign's run has ended (or `timeout_s`); for tests and benches."""
        deadline = self.clock() + timeout_s
        report = StepReport()
        while campaign_id in self.runs and self.clock() < deadline:
            run = self.runs[campaign_id]
            run.thread.join(0.02)
            self._reap(report)
        return report

    def _apply(
        self,
        applied: Applied,
        applied_at: datetime,
        report: StepReport,
        superseded_by: int | None = None,
    ) -> DirectiveRow:
        """Carry out a fork, log the directive, record it; link stops to it. A superseded
        directive is only recorded: it never took effect."""
        d = applied.directive
        detail: dict[str, Any] = {
            "observed_to_applied_s": round(applied.applied_at - applied.observed_at, 6),
            "confirmations": applied.confirmations,
        }
        if superseded_by is not None:
            detail["superseded_by"] = superseded_by
        elif d.kind is DirectiveKind.FORK:
            detail |= self._fork(applied, report)
        campaign = d.campaign_id
        if campaign != ALL_CAMPAIGNS:
            try:
                campaign = self.store.get_campaign(campaign).id
            except NotFoundError:
                detail["unknown_campaign"] = True
        config_hash = ("sha256:" + d.config_hash.hex()) if d.config_hash else None
        if self.recorder is not None:
            facts = _facts(d.source, campaign, d.epoch, d.kind.value, d.ref, d.height)
            facts |= _detail_facts(config_hash, applied_at, detail)
            index, logged = self.recorder.directive(facts)
            detail["log_index"] = index
            applied_at = datetime.fromisoformat(logged["applied_at"])  # the earlier, if any
        row = self.ledger.record(
            source=d.source,
            campaign_id=campaign,
            epoch=d.epoch,
            kind=d.kind.value,
            ref=d.ref,
            height=d.height,
            config_hash=config_hash,
            detail=detail,
            applied_at=applied_at,
        )
        if "log_index" in detail and "log_index" not in row.detail:
            row = self.ledger.update_detail(row.id, {"log_index": detail["log_index"]})
        if superseded_by is None and d.kind in (DirectiveKind.PAUSE, DirectiveKind.STOP):
            for cid in self._targets(campaign):
                run = self.runs.get(cid)
                if run is not None and run.stop_cause is None:
                    run.stop_cause = row
                stopped = self._unlinked.pop(cid, None)  # ended before this record existed
                if stopped is not None:
                    self.ledger.update_detail(row.id, _stop_facts(stopped))
        return row

    def _record_standing(self, change: Standing, at: datetime) -> None:
        """Log that this node's standing on a source changed, as a pause (revoked or
        suspended) or resume (approved again) of every campaign from the source's
        `<name>:standing` scope, numbered in order: the log's replay then holds every
        campaign while the node may not act, and an auditor finds the change by its
        transaction. Also a row in the store (`gov directives`); never acknowledged."""
        source = standing_source(change.source)
        kind = DirectiveKind.RESUME if change.active else DirectiveKind.PAUSE
        epoch = 1 + max(
            (r.epoch for r in self.ledger.list_applied(ALL_CAMPAIGNS) if r.source == source),
            default=0,
        )
        detail: dict[str, Any] = {"standing": "active" if change.active else "revoked or suspended"}
        try:
            if self.recorder is not None:
                facts = _facts(source, ALL_CAMPAIGNS, epoch, kind.value, change.ref, change.height)
                facts |= _detail_facts(None, at, detail)
                index, _ = self.recorder.directive(facts)
                detail["log_index"] = index
            self.ledger.record(
                source=source,
                campaign_id=ALL_CAMPAIGNS,
                epoch=epoch,
                kind=kind.value,
                ref=change.ref,
                height=change.height,
                detail=detail,
                applied_at=at,
            )
        except (StoreError, ConflictError) as exc:
            log.error("a change of this node's standing not recorded", extra={"error": str(exc)})

    def _record_undone(self, d: Directive, at: datetime) -> None:
        """Log that a stop left its source before it was final (the campaign runs again),
        so the log's replay lifts its hold from here on; kept in the store's events too."""
        try:
            campaign = self.store.get_campaign(d.campaign_id).id
        except NotFoundError:
            campaign = d.campaign_id
        try:
            if self.recorder is not None:
                facts = _facts(d.source, campaign, d.epoch, d.kind.value, d.ref, d.height)
                facts |= {"config_hash": None, "applied_at": at.isoformat(), "undone": True}
                self.recorder.directive(facts)
            for row in self.ledger.list_applied(campaign):
                if (row.source, row.epoch) == (d.source, d.epoch):
                    self.ledger.update_detail(row.id, {"undone_at": at.isoformat()})
        except (StoreError, ConflictError) as exc:
            log.error("an undone stop not recorded", extra={"error": str(exc)})

    def _log_backlog(self) -> None:
        """Once per session: log the applied directives the store holds without a log
        entry (applied before this node logged directives); retried on a store error."""
        if not self._backlog or self.recorder is None:
            return
        try:
            for row in self.ledger.list_applied():
                if "log_index" in row.detail:
                    continue
                facts = _facts(
                    row.source, row.campaign_id, row.epoch, row.kind, row.ref, row.height
                )
                facts |= _detail_facts(row.config_hash, row.applied_at, row.detail)
                index, _ = self.recorder.directive(facts)
                self.ledger.update_detail(row.id, {"log_index": index})
        except (StoreError, ConflictError) as exc:
            log.error("directive backlog not logged; retried", extra={"error": str(exc)})
            return
        self._backlog = False

    def _targets(self, campaign: str) -> list[str]:
        if campaign == ALL_CAMPAIGNS:
            return list(self.campaigns)
        try:
            return [self.store.get_campaign(campaign).id]
        except (NotFoundError, StoreError):
            return [campaign]

    def _note(self, applied: Applied) -> None:
        """What a directive changes before anything is written: when a stop's cause was
        seen, and that a DAO resume retries a campaign that paused itself."""
        d = applied.directive
        for cid in self._targets(d.campaign_id):
            if d.kind is DirectiveKind.RESUME:
                if cid in self.finished and self.finished[cid].reason is RunEnd.PAUSED:
                    del self.finished[cid]
            elif d.kind in (DirectiveKind.PAUSE, DirectiveKind.STOP):
                run = self.runs.get(cid)
                if run is not None and run.cause_observed_at is None:
                    run.cause_observed_at = applied.observed_at
                    run.directed = True

    def _fork(self, applied: Applied, report: StepReport) -> dict[str, Any]:
        d = applied.directive
        assert d.parent_id is not None and d.config_hash is not None
        asked: dict[str, Any] = {
            "parent": d.parent_id,
            "position": d.from_position,
            "checkpoint_root": "0x" + d.checkpoint_root.hex() if d.checkpoint_root else None,
            "pause_parent": d.pause_parent,
        }
        try:
            done = self._already_forked(d)
            if done is not None:
                return done
            if self.configs is None:
                raise ForkConfigError("this node has no source of fork configs configured")
            config = dict(self.configs(d.config_hash, d.config_uri))
            if hash_rule(config, d.config_hash) is None:  # hashes named before RFC 8785 too
                raise ForkConfigError(
                    f"the fork names config sha256:{d.config_hash.hex()}, but the config "
                    f"found at {d.config_uri or 'its hash'} hashes to "
                    f"sha256:{config_sha256(config).hex()}"
                )
            parent = self.store.get_campaign(d.parent_id)
            asked["parent"] = parent.id
            size, inherited = self._fork_point(d, parent.id)
            child = self.ledger.fork(
                parent.id,
                d.campaign_id,
                config,
                experiments=inherited,
                tree_size=size,
                detail={"source": d.source, "epoch": d.epoch, "ref": d.ref},
            )
        except StoreError:
            raise  # transient: the whole directive is retried on the next step
        except (ForkConfigError, AsiNodeError, ValueError) as exc:
            log.error(
                "fork refused",
                extra={"child": d.campaign_id, "parent": d.parent_id, "error": str(exc)},
            )
            return asked | {"refused": str(exc)}
        self.watcher.rename(d.campaign_id, child.id)
        self.adopt(child.id)
        report.forked.append(child.id)
        n = len(self.store.list_experiments(child.id))
        # The child waits for a resume (the controller starts it paused too).
        return asked | {"child": child.id, "position": size, "experiments": n, "child_paused": True}

    def _fork_point(self, d: Directive, parent_id: str) -> tuple[int | None, list[str] | None]:
        """The log size a fork starts at and the parent's experiments recorded below it.

        Without a log (no recorder) only a fork at "latest" can be honoured: the child
        then inherits every finished experiment and has no log position."""
        if self.recorder is None:
            if d.from_position is not None:
                raise ForkRefused(
                    f"the fork starts at log size {d.from_position}, but this node keeps no "
                    "transparency log to check that position against"
                )
            return None, None
        tlog = self.recorder.log
        current = tlog.size
        size = current if d.from_position is None else d.from_position
        if size > current:
            raise ForkRefused(
                f"the fork starts at log size {size}, beyond this node's log (size "
                f"{current}): it names another node's log or a position not reached yet"
            )
        root = tlog.root(size)
        if d.checkpoint_root is None:
            if d.from_position is not None:
                raise ForkRefused(
                    f"the fork names log size {size} but no checkpoint root to check it by"
                )
        elif d.checkpoint_root != root:
            raise ForkRefused(
                f"the fork's checkpoint root 0x{d.checkpoint_root.hex()} is not this node's "
                f"log root at size {size} (0x{root.hex()}): it names another log or history"
            )
        records = logged_experiments(tlog, size)
        inherited = [
            exp_id
            for exp_id, record in records.items()
            if record.get("campaign_id") == parent_id and record.get("status") in INHERITED_STATUSES
        ]
        return size, inherited

    def _already_forked(self, d: Directive) -> dict[str, Any] | None:
        """The facts of this very fork if it was carried out before its record was
        written (a store error or a crash in between): applying it again is a no-op."""
        try:
            child = self.store.get_campaign(d.campaign_id)
        except NotFoundError:
            return None
        for event in self.store.list_events(child.id, kind="forked_from"):
            lineage = event.payload
            if lineage.get("source") == d.source and lineage.get("epoch") == d.epoch:
                self.adopt(child.id)
                return {
                    "parent": lineage.get("parent"),
                    "child": child.id,
                    "position": lineage.get("position"),
                    "checkpoint_root": (
                        "0x" + d.checkpoint_root.hex() if d.checkpoint_root else None
                    ),
                    "experiments": lineage.get("experiments"),
                    "pause_parent": d.pause_parent,
                    "child_paused": True,
                }
        return None

    def _enforce(self, report: StepReport) -> None:
        now = self.clock()
        for cid in self.campaigns:
            state = self.watcher.state(cid)
            run = self.runs.get(cid)
            if state is CampaignState.RUNNING:
                if run is None and self._startable(cid):
                    self._start(cid)
                    report.started.append(cid)
                continue
            if run is not None and not run.stop.is_set():
                run.stop.set()
                run.stop_requested_at = now
                if run.cause_observed_at is None:
                    run.cause_observed_at = now  # staleness or revocation: seen now
                report.stopping.append(cid)
            elif run is None:
                try:
                    self._mark(cid, state)
                except StoreError as exc:
                    log.error("status not recorded", extra={"campaign": cid, "error": str(exc)})
            if run is not None and not run.late and self._overdue(run, now):
                run.late = True
                log.error(
                    "run missed its stop deadline",
                    extra={"campaign": cid, "deadline_s": self.stop_deadline_s},
                )

    def _overdue(self, run: _Run, now: float) -> bool:
        asked = run.stop_requested_at
        return asked is not None and now - asked > self.stop_deadline_s

    def _startable(self, cid: str) -> bool:
        """Whether a run of `cid` starts now: one not run yet in this session whose
        campaign is not stopped, or done with queued experiments (a peer's imports, which
        come after it completed); a run that ended any other way (paused itself, failed)
        waits for a resume."""
        ended = self.finished.get(cid)
        if ended is not None and ended.reason not in (RunEnd.COMPLETE, RunEnd.BUDGET):
            return False
        status = self.store.get_campaign(cid).status
        if status is CampaignStatus.STOPPED:
            return False
        if ended is None and status is not CampaignStatus.DONE:
            return True
        if self.store.count_experiments(cid, ExperimentStatus.QUEUED) == 0:
            return False
        self.finished.pop(cid, None)
        return True

    def _mark(self, cid: str, state: CampaignState) -> None:
        if state is CampaignState.RUNNING:
            return
        status = self.store.get_campaign(cid).status
        want = CampaignStatus.STOPPED if state is CampaignState.STOPPED else CampaignStatus.PAUSED
        if status in (want, CampaignStatus.STOPPED) or (
            status is CampaignStatus.DONE and want is CampaignStatus.PAUSED
        ):
            return
        self.store.set_campaign_status(cid, want)

    def _start(self, cid: str) -> None:
        stop = threading.Event()
        holder = _Run(cid, stop, threading.Thread())

        def body() -> None:
            try:
                holder.summary = self.run(cid, stop)
            except BaseException as exc:  # reported by _reap; the thread must not die silently
                holder.error = exc
            finally:
                holder.ended_at = self.clock()

        holder.thread = threading.Thread(target=body, name=f"campaign-{cid}", daemon=True)
        self.runs[cid] = holder
        holder.thread.start()

    def _reap(self, report: StepReport) -> None:
        for cid, run in list(self.runs.items()):
            if run.thread.is_alive():
                continue
            del self.runs[cid]
            if run.error is not None:
                log.error("campaign run failed", extra={"campaign": cid, "error": str(run.error)})
                self.store.add_event(cid, "governed_run_failed", {"error": str(run.error)})
                self.finished[cid] = RunSummary(RunEnd.FAILED, 0, 0.0, str(run.error))
                continue
            if not run.stop.is_set():
                # Ended on its own (complete, budget spent, or the LLM loop paused it):
                # not restarted in this session unless a resume directive applies.
                if run.summary is not None:
                    self.finished[cid] = run.summary
                continue
            ended = run.ended_at if run.ended_at is not None else self.clock()
            seen = run.cause_observed_at if run.cause_observed_at is not None else ended
            latency = max(0.0, ended - seen)
            stopped = Stopped(cid, latency, latency <= self.stop_deadline_s, run.summary)
            report.stopped.append(stopped)
            try:
                if run.stop_cause is not None:
                    self.ledger.update_detail(run.stop_cause.id, _stop_facts(stopped))
                elif run.directed:
                    self._unlinked[cid] = stopped
                self.store.add_event(cid, "governed_stop", _stop_facts(stopped))
                self._mark(cid, self.watcher.state(cid))
            except StoreError as exc:
                log.error("stop not recorded", extra={"campaign": cid, "error": str(exc)})


class DirectoryConfigs:
    """Fork configs from a directory: `<sha256 hex>.json`, checked by the caller's hash."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, config_hash: bytes, uri: str) -> Mapping[str, Any]:
        path = self.directory / f"{config_hash.hex()}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            origin = uri or "its author"
            raise ForkConfigError(
                f"no fork config {path}: put the config the proposal names (from {origin}) "
                "there as JSON"
            ) from None
        except (OSError, ValueError) as exc:
            raise ForkConfigError(f"fork config {path} is unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise ForkConfigError(f"fork config {path} is not a JSON object")
        return data


def sources_from_settings(settings: Settings, store: Store | None = None) -> list[DirectiveSource]:
    """The directive sources the settings configure: the SNS when [icp] names one, and
    the EVM CampaignController when `chain.rpc_url` is set (addresses from chain.json).
    The controller's source checks every open campaign of `store` each poll
    (`chain_campaigns`): its status, and that it is registered with this config.
    """
    sources: list[DirectiveSource] = []
    if settings.chain.rpc_url:
        from governance.chain import Chain, Controller, ControllerReader, address_of
        from governance.evm_source import ControllerReader as ControllerReaderProtocol
        from governance.evm_source import CrossCheckedReader, EvmSource
        from node.anchoring.chain_home import connect_deployed, load_key

        home = Path(settings.home)
        gs = settings.governance
        chain, deployment = connect_deployed(settings.chain, home)
        address = deployment.addresses["CampaignController"]
        age = gs.max_head_age_seconds
        reader: ControllerReaderProtocol = ControllerReader(
            Controller(chain, address), max_head_age_s=age
        )
        if gs.cross_check_rpc_urls:
            readers = [reader]
            for url in gs.cross_check_rpc_urls:
                other = Chain.connect(url, expected_chain_id=chain.chain_id)
                readers.append(ControllerReader(Controller(other, address), max_head_age_s=age))
            names = [settings.chain.rpc_url, *gs.cross_check_rpc_urls]
            reader = CrossCheckedReader(readers, names)
        sources.append(
            EvmSource(
                reader,
                start_block=deployment.block_number,
                node_address=address_of(load_key(home)),
                campaigns=(lambda: chain_campaigns(store)) if store is not None else dict,
            )
        )
    icp = settings.icp
    if icp.url and icp.sns_governance_canister:
        from attestation.icp.principal import from_text
        from governance.icp.sns import SnsGovernance
        from governance.sns import SnsDirectiveSource, SnsSource
        from node.anchoring.icp import icp_client

        kinds = {
            icp.sns_pause_function: DirectiveKind.PAUSE,
            icp.sns_resume_function: DirectiveKind.RESUME,
            icp.sns_stop_function: DirectiveKind.STOP,
            icp.sns_fork_function: DirectiveKind.FORK,
        }
        functions = {fid: kind for fid, kind in kinds.items() if fid is not None}
        if not functions:
            raise ConfigError("[icp] sns_governance_canister is set but no sns_*_function ids")
        sns = SnsGovernance(
            icp_client(icp, Path(settings.home)), from_text(icp.sns_governance_canister)
        )
        sources.append(SnsSource(SnsDirectiveSource(sns, functions)))
    return sources


def governed_node(
    node: Node,
    campaigns: Iterable[str],
    sources: Iterable[DirectiveSource],
    on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> GovernedNode:
    """A GovernedNode over `node`'s store, settings and engineer, resuming applied state;
    `on_event(campaign_id, kind, data)` gets each run's progress events."""
    gs = node.settings.governance
    store = node.store
    ledger = DirectiveLedger(store)
    states: dict[tuple[str, str], CampaignState] = {}
    revoked: dict[str, bool] = {}  # the standing last recorded on each source
    for row in ledger.list_applied():
        if row.detail.get("superseded_by") is not None:
            continue  # never in effect
        if row.source.endswith(":standing"):
            revoked[row.source.removesuffix(":standing")] = row.kind is DirectiveKind.PAUSE
            continue
        states[(row.source, row.campaign_id)] = _restored_state(store, row)

    def resolve(name: str) -> str:
        try:
            return store.get_campaign(name).id
        except NotFoundError:
            return name

    watcher = Watcher(
        list(sources),
        confirmations=gs.confirmations,
        stale_after_s=gs.stale_after_seconds,
        resolve=resolve,
        applied_epochs=ledger.applied_epochs(),
        states=states,
        revoked=revoked,
    )
    return GovernedNode(
        store,
        watcher,
        lambda cid, stop: node.run_campaign(
            cid, stop=stop, on_event=None if on_event is None else partial(on_event, cid)
        ),
        campaigns,
        stop_deadline_s=gs.stop_deadline_seconds,
        configs=DirectoryConfigs(Path(node.settings.home) / gs.fork_configs),
        recorder=Recorder(node.log(), store),
    )


def standing_source(source: str) -> str:
    """The scope under which a node records its standing on `source` (revoked, suspended,
    approved again): a source of its own, so its numbers never meet the source's."""
    return f"{source}:standing"


def chain_campaigns(store: Store) -> dict[str, dict[str, Any]]:
    """The open campaigns (created, running, paused) by the name the controller knows them
    by, with their configs: a fork's child by the name its proposal gave it (which the
    node keeps as the child's name), any other campaign by its id."""
    return {
        (c.name if c.parent_campaign_id is not None else c.id): c.config
        for c in store.list_campaigns()
        if c.status in (CampaignStatus.CREATED, CampaignStatus.RUNNING, CampaignStatus.PAUSED)
    }


def _restored_state(store: Store, row: DirectiveRow) -> CampaignState:
    """What an applied directive left its campaign in, for a restarted watcher: a stop
    is final only if the campaign was marked stopped (its stop had become final); a fork
    whose child started paused holds the child until a resume."""
    if row.kind is DirectiveKind.STOP:
        try:
            final = store.get_campaign(row.campaign_id).status is CampaignStatus.STOPPED
        except NotFoundError:
            final = True
        return CampaignState.STOPPED if final else CampaignState.PAUSED
    if row.kind is DirectiveKind.PAUSE or (
        row.kind is DirectiveKind.FORK and row.detail.get("child_paused")
    ):
        return CampaignState.PAUSED
    return CampaignState.RUNNING


def _facts(
    source: str, campaign: str, epoch: int, kind: str, ref: str, height: int | None
) -> dict[str, Any]:
    return {
        "source": source,
        "campaign_id": campaign,
        "epoch": epoch,
        "kind": kind,
        "ref": ref,
        "height": height,
    }


def _detail_facts(
    config_hash: str | None, applied_at: datetime, detail: Mapping[str, Any]
) -> dict[str, Any]:
    """The rest of a directive's log statement: config hash, time, and what a fork did."""
    facts: dict[str, Any] = {"config_hash": config_hash, "applied_at": applied_at.isoformat()}
    if detail.get("unknown_campaign"):
        facts["unknown_campaign"] = True
    if detail.get("superseded_by") is not None:
        facts["superseded_by"] = detail["superseded_by"]
    fork = {k: detail[k] for k in (*FORK_FACTS, "refused") if k in detail}
    if fork:
        facts["fork"] = fork
    return facts


def _stop_facts(stopped: Stopped) -> dict[str, Any]:
    return {
        "stop_latency_s": round(stopped.latency_s, 6),
        "within_deadline": stopped.within_deadline,
    }
