"""The Store: every read and write of the node's records, one transaction per call."""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, col, select

from attestation.canonical import canonical_json
from attestation.errors import FormatError
from attestation.schema import (
    FINISHED_STATUSES,
    CampaignStatus,
    CandidateOrigin,
    ExperimentRole,
    ExperimentStatus,
)
from loop.outcome import FailureClass
from loop.proposal import Proposal, code_digest
from node.errors import ConflictError, CorruptStoreError, LeaseLostError, NotFoundError
from node.store.database import create_engine, is_in_memory, parse_url, safe_url, translate
from node.store.migrations import WRITE_OPTION, Revision, SchemaState, schema_state, upgrade
from node.store.rows import (
    CampaignRow,
    CandidateRow,
    EventRow,
    ExperimentRow,
    InsightRow,
    Lease,
    LLMExchangeRow,
    LLMUsage,
    campaign_row,
    candidate_row,
    event_row,
    experiment_row,
    insight_row,
    llm_exchange_row,
)
from node.store.tables import (
    Campaign,
    Candidate,
    CodeBlob,
    Event,
    Experiment,
    Insight,
    LLMExchange,
    Metric,
)

log = logging.getLogger(__name__)

CAMPAIGN_STATUSES = tuple(CampaignStatus)
EXPERIMENT_STATUSES = tuple(ExperimentStatus)
ROLES = tuple(ExperimentRole)
# A stopped campaign stays stopped (a DAO stop is final); "done" may run again when its
# budget is raised.
TERMINAL_CAMPAIGN_STATUSES = (CampaignStatus.STOPPED,)
DEFAULT_MAX_ATTEMPTS = 2
# Candidates a campaign's budget (`max_candidates`) does not count: only what this node
# proposed does, not its baselines nor the peers' records it imported.
BUDGET_EXEMPT = (CandidateOrigin.BASELINE, CandidateOrigin.PEER)
DEFAULT_BUSY_TIMEOUT_S = 30.0


class Store:
    """The node's database, by SQLAlchemy URL. Use `Store.open(url)`, which migrates.

    `sqlite:///path` (WAL, foreign keys on, busy timeout), `sqlite://` (in memory, for
    tests; one connection shared under a lock) or `postgresql+psycopg://...`
    (`postgresql://` means the same). `connect_args` go to the driver (for PostgreSQL,
    e.g. `{"options": "-c search_path=myschema"}`); `now` is the clock. One Store may be
    shared by threads; worker processes each open their own on the same database.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_args: Mapping[str, Any] | None = None,
        now: Callable[[], datetime] | None = None,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self._url = parse_url(url)
        self.url = safe_url(self._url)
        self._now = now or (lambda: datetime.now(UTC))
        # One in-memory database lives in one connection: share it, one user at a time.
        self._lock: AbstractContextManager[Any] = (
            threading.RLock() if is_in_memory(self._url) else nullcontext()
        )
        self._engine = create_engine(self._url, dict(connect_args or {}), busy_timeout_s)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        connect_args: Mapping[str, Any] | None = None,
        now: Callable[[], datetime] | None = None,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> Self:
        """Connect and bring the schema up to date (refusing a newer one)."""
        store = cls(url, connect_args=connect_args, now=now, busy_timeout_s=busy_timeout_s)
        try:
            store.upgrade_schema()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def schema_version(self) -> int:
        """The database's schema version: `len(MIGRATIONS)` once `open` has run."""
        return self.schema().version

    def schema(self) -> SchemaState:
        """Where the database's schema stands, read without changing anything (a Store
        made without `open` can ask). SchemaVersionError for a newer database."""
        try:
            with self._lock:
                return schema_state(self._engine)
        except SQLAlchemyError as exc:
            raise translate(exc, self._url) from exc

    def upgrade_schema(self) -> tuple[Revision, ...]:
        """Apply the revisions the database lacks, as `open` does; return them, oldest
        first. SchemaVersionError for a newer database, which is left untouched."""
        try:
            with self._lock:
                return upgrade(self._engine)
        except SQLAlchemyError as exc:
            raise translate(exc, self._url) from exc

    def create_campaign(
        self,
        name: str,
        config: Mapping[str, Any],
        *,
        parent_campaign_id: str | None = None,
        fork_tree_size: int | None = None,
        campaign_id: str | None = None,
    ) -> CampaignRow:
        """A new campaign in status 'created', with a new id, or `campaign_id` (another
        node's, for a campaign many nodes run). Raises ConflictError if the name or the
        id is taken."""
        name = name.strip()
        if not name:
            raise ValueError("a campaign needs a name")
        if _looks_like_campaign_id(name):
            raise ValueError(f"campaign name {name!r} looks like a campaign id; choose another")
        if campaign_id is not None and not _looks_like_campaign_id(campaign_id):
            raise ValueError(f"{campaign_id!r} is not a campaign id (c- and 8 hex digits)")
        config_json = _canonical_json(config, "config")
        now = self._now()
        with self._session(write=True) as s:
            if s.exec(select(Campaign.id).where(col(Campaign.name) == name)).first():
                raise ConflictError(f"a campaign named {name!r} already exists; pick another name")
            if parent_campaign_id is not None and s.get(Campaign, parent_campaign_id) is None:
                raise NotFoundError(f"parent campaign {parent_campaign_id} not found")
            if campaign_id is not None and s.get(Campaign, campaign_id) is not None:
                raise ConflictError(f"campaign {campaign_id} is here already")
            row = Campaign(
                id=campaign_id or _new_id("c-", 4),
                name=name,
                config_json=config_json,
                config_hash="sha256:" + hashlib.sha256(config_json.encode()).hexdigest(),
                status=CampaignStatus.CREATED,
                created_at=now,
                updated_at=now,
                parent_campaign_id=parent_campaign_id,
                fork_tree_size=fork_tree_size,
            )
            s.add(row)
            s.flush()
            self._event(
                s, row.id, "campaign_created", {"name": name, "config_hash": row.config_hash}
            )
            return campaign_row(row)

    def get_campaign(self, id_or_name: str) -> CampaignRow:
        """A campaign by id (`c-…`) or by name. Raises NotFoundError."""
        with self._session() as s:
            row = (
                s.get(Campaign, id_or_name)
                or s.exec(select(Campaign).where(col(Campaign.name) == id_or_name)).first()
            )
            if row is None:
                raise NotFoundError(f"no campaign with id or name {id_or_name!r}")
            return campaign_row(row)

    def list_campaigns(self) -> list[CampaignRow]:
        """All campaigns, oldest first."""
        with self._session() as s:
            rows = s.exec(select(Campaign).order_by(col(Campaign.created_at), col(Campaign.id)))
            return [campaign_row(r) for r in rows]

    def set_campaign_status(self, campaign_id: str, status: str) -> CampaignRow:
        """Move a campaign to `status`, recording the change as an event.

        Raises ConflictError when the campaign is stopped: a stop is final.
        """
        _check(status, CAMPAIGN_STATUSES, "campaign status")
        with self._session(write=True) as s:
            row = s.get(Campaign, campaign_id)
            if row is None:
                raise NotFoundError(f"campaign {campaign_id} not found")
            if row.status == status:
                return campaign_row(row)
            if row.status in TERMINAL_CAMPAIGN_STATUSES:
                raise ConflictError(
                    f"campaign {campaign_id} is {row.status}; it cannot become {status}"
                )
            previous = row.status
            row.status = status
            row.updated_at = self._now()
            s.add(row)
            s.flush()
            self._event(s, campaign_id, "campaign_status", {"from": previous, "to": status})
            return campaign_row(row)

    def put_code(self, code: str) -> str:
        """Store code under its content address ("sha256:<hex>") and return the address."""
        with self._session(write=True) as s:
            return self._put_code(s, code)

    def get_code(self, digest: str) -> str:
        """The code stored under `digest`, checked against it. Raises NotFoundError, or
        CorruptStoreError when the stored text no longer hashes to its address."""
        with self._session() as s:
            blob = s.get(CodeBlob, digest)
            if blob is None:
                raise NotFoundError(f"no code stored under {digest}")
            return _verified(blob)

    def add_candidate(self, campaign_id: str, proposal: Proposal) -> CandidateRow:
        """Record a proposal as a candidate of the campaign, with its code.

        Idempotent on (campaign, code digest): proposing the same code again returns the
        candidate already stored, whatever the new name or motivation.
        """
        digest = proposal.digest
        values = {
            "id": _new_id("cand-", 6),
            "campaign_id": campaign_id,
            "digest": digest,
            "name": proposal.name,
            "motivation": proposal.motivation,
            "origin": proposal.origin,
            "parent_ids_json": _canonical_json(list(proposal.parent_ids), "parent_ids"),
            "options_json": _canonical_json(proposal.options, "options"),
            "created_at": self._now(),
        }
        with self._session(write=True) as s:
            if s.get(Campaign, campaign_id) is None:
                raise NotFoundError(f"campaign {campaign_id} not found")
            self._put_code(s, proposal.code)
            self._insert_ignoring_conflict(s, Candidate, values, ("campaign_id", "digest"))
            row = s.exec(
                select(Candidate).where(
                    col(Candidate.campaign_id) == campaign_id, col(Candidate.digest) == digest
                )
            ).one()
            return candidate_row(row)

    def get_candidate(self, candidate_id: str) -> CandidateRow:
        with self._session() as s:
            row = s.get(Candidate, candidate_id)
            if row is None:
                raise NotFoundError(f"candidate {candidate_id} not found")
            return candidate_row(row)

    def list_candidates(self, campaign_id: str) -> list[CandidateRow]:
        """The campaign's candidates in the order they were added."""
        with self._session() as s:
            rows = s.exec(
                select(Candidate)
                .where(col(Candidate.campaign_id) == campaign_id)
                .order_by(col(Candidate.created_at), col(Candidate.id))
            )
            return [candidate_row(r) for r in rows]

    def enqueue_experiment(
        self, campaign_id: str, candidate_id: str, role: str, seed: int, *, once: bool = False
    ) -> ExperimentRow:
        """Queue a run of a candidate of this campaign; it gets the campaign's next `seq`.

        With `once`, a candidate that already has an experiment on `seed` keeps it: that
        one is returned and nothing is queued, even when several processes ask at once
        (they take turns on the campaign's row)."""
        _check(role, ROLES, "experiment role")
        with self._session(write=True) as s:
            candidate = s.get(Candidate, candidate_id)
            if candidate is None or candidate.campaign_id != campaign_id:
                raise NotFoundError(f"candidate {candidate_id} not found in campaign {campaign_id}")
            self._lock_campaign(s, campaign_id)
            if once:
                found = s.exec(
                    select(Experiment).where(
                        col(Experiment.candidate_id) == candidate_id, col(Experiment.seed) == seed
                    )
                ).first()
                if found is not None:
                    return experiment_row(found)
            return experiment_row(self._enqueue(s, campaign_id, candidate_id, role, seed))

    def add_proposal(
        self, campaign_id: str, proposal: Proposal, *, seed: int, max_generated: int
    ) -> tuple[CandidateRow, ExperimentRow] | None:
        """A proposed candidate and its first experiment (role 'candidate' on `seed`), in
        one transaction, if the campaign still has room: fewer than `max_generated`
        candidates proposed here (baselines and peers' imports do not count), none with
        this code. None otherwise (the budget
        is spent, or another process proposed the same code first: propose again).

        Processes sharing the campaign take turns on its row, so together they never go
        over the budget nor queue one proposal twice."""
        digest = proposal.digest
        with self._session(write=True) as s:
            self._lock_campaign(s, campaign_id)
            generated = s.exec(
                select(sa.func.count())
                .select_from(Candidate)
                .where(
                    col(Candidate.campaign_id) == campaign_id,
                    col(Candidate.origin).not_in(BUDGET_EXEMPT),
                )
            ).one()
            taken = s.exec(
                select(Candidate.id).where(
                    col(Candidate.campaign_id) == campaign_id, col(Candidate.digest) == digest
                )
            ).first()
            if int(generated) >= max_generated or taken is not None:
                return None
            self._put_code(s, proposal.code)
            cand = Candidate(
                id=_new_id("cand-", 6),
                campaign_id=campaign_id,
                digest=digest,
                name=proposal.name,
                motivation=proposal.motivation,
                origin=proposal.origin,
                parent_ids_json=_canonical_json(list(proposal.parent_ids), "parent_ids"),
                options_json=_canonical_json(proposal.options, "options"),
                created_at=self._now(),
            )
            s.add(cand)
            s.flush()
            exp = self._enqueue(s, campaign_id, cand.id, ExperimentRole.CANDIDATE, seed)
            return candidate_row(cand), experiment_row(exp)

    def _lock_campaign(self, s: Session, campaign_id: str) -> None:
        """Hold the campaign's row until commit: the processes that queue work for one
        campaign take turns (PostgreSQL's row lock; SQLite's write transaction already
        holds the whole database)."""
        locked = s.exec(
            select(Campaign.id).where(col(Campaign.id) == campaign_id).with_for_update()
        ).first()
        if locked is None:
            raise NotFoundError(f"campaign {campaign_id} not found")

    def _enqueue(
        self, s: Session, campaign_id: str, candidate_id: str, role: str, seed: int
    ) -> Experiment:
        # One UPDATE hands out the number: it holds the campaign row's lock until commit,
        # so concurrent enqueuers get consecutive numbers, never the same one.
        s.exec(
            sa.update(Campaign)
            .where(col(Campaign.id) == campaign_id)
            .values(last_seq=col(Campaign.last_seq) + 1)
            .execution_options(synchronize_session=False)
        )
        seq = s.exec(select(Campaign.last_seq).where(col(Campaign.id) == campaign_id)).one()
        row = Experiment(
            id=_new_id("exp-", 6),
            campaign_id=campaign_id,
            candidate_id=candidate_id,
            seq=seq,
            role=role,
            seed=seed,
            status=ExperimentStatus.QUEUED,
            created_at=self._now(),
        )
        s.add(row)
        s.flush()
        return row

    def claim_next_experiment(
        self, campaign_id: str, lease: Lease | None = None
    ) -> ExperimentRow | None:
        """Take the campaign's oldest queued experiment: it becomes 'running', its attempts
        go up by one, and with a `lease` it is held by that lease for `lease.seconds`
        (`renew_leases` keeps it). None when nothing is queued. Safe across threads and
        processes: the flip is an UPDATE conditional on the row still being queued."""
        with self._session(write=True) as s:
            while True:
                found = s.exec(
                    select(Experiment.id)
                    .where(
                        col(Experiment.campaign_id) == campaign_id,
                        col(Experiment.status) == ExperimentStatus.QUEUED,
                    )
                    .order_by(col(Experiment.seq))
                    .limit(1)
                ).first()
                if found is None:
                    return None
                if self._claim(s, found, lease):
                    return experiment_row(self._experiment(s, found))
                # Another worker took it between our SELECT and UPDATE: try the next one.

    def start_experiment(self, experiment_id: str, lease: Lease | None = None) -> ExperimentRow:
        """Claim one named queued experiment (as `claim_next_experiment` does for the
        oldest). Raises ConflictError if it is not queued."""
        with self._session(write=True) as s:
            if not self._claim(s, experiment_id, lease):
                current = self._experiment(s, experiment_id)
                raise ConflictError(f"experiment {experiment_id} is {current.status}, not queued")
            return experiment_row(self._experiment(s, experiment_id))

    def _claim(self, s: Session, experiment_id: str, lease: Lease | None) -> bool:
        """queued -> running in one conditional UPDATE; False if it was not queued."""
        now = self._now()
        claimed = s.exec(
            sa.update(Experiment)
            .where(
                col(Experiment.id) == experiment_id,
                col(Experiment.status) == ExperimentStatus.QUEUED,
            )
            .values(
                status=ExperimentStatus.RUNNING,
                attempts=col(Experiment.attempts) + 1,
                started_at=now,
                finished_at=None,
                lease_owner=lease.owner if lease is not None else None,
                lease_expires_at=_expiry(now, lease),
            )
            .execution_options(synchronize_session=False)
        )
        return bool(claimed.rowcount == 1)

    def renew_leases(self, lease: Lease, experiment_ids: Collection[str]) -> set[str]:
        """Extend `lease` on these experiments by `lease.seconds` from now; return those it
        still holds (the rest were taken over after it ran out, or finished)."""
        if not experiment_ids:
            return set()
        now = self._now()
        held = (
            col(Experiment.id).in_(list(experiment_ids)),
            col(Experiment.status) == ExperimentStatus.RUNNING,
            col(Experiment.lease_owner) == lease.owner,
        )
        with self._session(write=True) as s:
            s.exec(
                sa.update(Experiment)
                .where(*held)
                .values(lease_expires_at=_expiry(now, lease))
                .execution_options(synchronize_session=False)
            )
            return set(s.exec(select(Experiment.id).where(*held)).all())

    def finish_experiment(
        self,
        experiment_id: str,
        status: str,
        *,
        failure_class: str | None = None,
        screen: Mapping[str, Any] | None = None,
        train: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        fitness: float | None = None,
        fitness_version: str | None = None,
        timings: Mapping[str, Any] | None = None,
        analysis: str = "",
        lease: Lease | None = None,
    ) -> ExperimentRow:
        """Record a running experiment's outcome: 'done', 'failed' (with a FailureClass
        value) or 'interrupted'. Raises ConflictError if the experiment is not running
        (LeaseLostError when `lease` no longer holds it), ValueError for a non-finite
        metric or a status/failure_class mismatch."""
        _check(status, FINISHED_STATUSES, "finished status")
        failure = FailureClass(failure_class) if failure_class is not None else None
        if status == ExperimentStatus.DONE and failure is not None:
            raise ValueError(f"a done experiment has no failure class (got {failure})")
        if status == ExperimentStatus.FAILED and failure is None:
            raise ValueError("a failed experiment needs a failure_class")
        if status == ExperimentStatus.INTERRUPTED and failure is None:
            failure = FailureClass.INTERRUPTED
        values = dict(metrics or {})
        for name, value in values.items():
            _check_finite(value, f"metric {name!r}")
        if fitness is not None:
            _check_finite(fitness, "fitness")
        with self._session(write=True) as s:
            changed = s.exec(
                sa.update(Experiment)
                .where(*_running(experiment_id, lease))
                .values(
                    status=status,
                    failure_class=failure.value if failure is not None else None,
                    screen_json=_optional_json(screen, "screen"),
                    train_json=_optional_json(train, "train"),
                    metrics_json=_optional_json(metrics and values, "metrics"),
                    fitness=fitness,
                    fitness_version=fitness_version,
                    timings_json=_optional_json(timings, "timings"),
                    analysis=analysis,
                    finished_at=self._now(),
                    lease_expires_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount != 1:
                current = self._experiment(s, experiment_id)
                _lease_lost(current, lease)
                raise ConflictError(
                    f"experiment {experiment_id} is {current.status}, not running; "
                    "only a running experiment can be finished"
                )
            s.exec(sa.delete(Metric).where(col(Metric.experiment_id) == experiment_id))
            for name, value in values.items():
                s.add(Metric(experiment_id=experiment_id, name=name, value=float(value)))
            s.flush()
            return experiment_row(self._experiment(s, experiment_id))

    def set_experiment_score(
        self,
        experiment_id: str,
        fitness: float,
        fitness_version: str,
        analysis: str | None = None,
    ) -> ExperimentRow:
        """Score a done experiment (again, if a new fitness version is applied); `analysis`
        None keeps the text it has. Raises ConflictError unless the experiment is done."""
        scored = self._score(experiment_id, fitness, fitness_version, analysis, once=False)
        if scored is None:
            raise ConflictError(f"experiment {experiment_id} was not scored")
        return scored

    def score_once(
        self,
        experiment_id: str,
        fitness: float,
        fitness_version: str,
        analysis: str | None = None,
    ) -> ExperimentRow | None:
        """Score a done experiment that has no fitness yet, as `set_experiment_score`
        does; None when it has one already (another process scored it first: its
        insights, re-runs and record are that process's)."""
        return self._score(experiment_id, fitness, fitness_version, analysis, once=True)

    def _score(
        self,
        experiment_id: str,
        fitness: float,
        fitness_version: str,
        analysis: str | None,
        *,
        once: bool,
    ) -> ExperimentRow | None:
        _check_finite(fitness, "fitness")
        values: dict[str, Any] = {"fitness": fitness, "fitness_version": fitness_version}
        if analysis is not None:
            values["analysis"] = analysis
        done = [
            col(Experiment.id) == experiment_id,
            col(Experiment.status) == ExperimentStatus.DONE,
        ]
        with self._session(write=True) as s:
            changed = s.exec(
                sa.update(Experiment)
                .where(*done, *([col(Experiment.fitness).is_(None)] if once else []))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount != 1:
                current = self._experiment(s, experiment_id)
                if once and current.status == ExperimentStatus.DONE:
                    return None
                raise ConflictError(
                    f"experiment {experiment_id} is {current.status}; only a done one is scored"
                )
            return experiment_row(self._experiment(s, experiment_id))

    def claim_record(self, experiment_id: str, node: str) -> bool:
        """Make `node` the one whose log records this experiment, unless another node is
        already: True when it is `node`'s to record (now or from before)."""
        with self._session(write=True) as s:
            changed = s.exec(
                sa.update(Experiment)
                .where(
                    col(Experiment.id) == experiment_id,
                    sa.or_(
                        col(Experiment.recorded_by).is_(None),
                        col(Experiment.recorded_by) == node,
                    ),
                )
                .values(recorded_by=node)
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount == 1:
                return True
            self._experiment(s, experiment_id)  # NotFoundError for an unknown id
            return False

    def requeue_experiment(self, experiment_id: str, lease: Lease | None = None) -> ExperimentRow:
        """Put a running experiment back in the queue because it was stopped from outside
        (pause, shutdown). That run does not count as an attempt. Raises ConflictError if
        the experiment is not running (LeaseLostError when `lease` no longer holds it)."""
        with self._session(write=True) as s:
            changed = s.exec(
                sa.update(Experiment)
                .where(*_running(experiment_id, lease))
                .values(
                    status=ExperimentStatus.QUEUED,
                    attempts=sa.case(
                        (col(Experiment.attempts) > 0, col(Experiment.attempts) - 1), else_=0
                    ),
                    started_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount != 1:
                current = self._experiment(s, experiment_id)
                _lease_lost(current, lease)
                raise ConflictError(
                    f"experiment {experiment_id} is {current.status}; "
                    "only a running one can be requeued"
                )
            row = self._experiment(s, experiment_id)
            self._event(s, row.campaign_id, "experiment_requeued", {"experiment": experiment_id})
            return experiment_row(row)

    def recover_interrupted(
        self,
        campaign_id: str,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        *,
        lease: Lease | None = None,
    ) -> list[str]:
        """After a crash: put the campaign's 'interrupted' experiments and the 'running'
        ones nobody holds back in the queue, and return their ids in sequence order.

        A running experiment is nobody's when it has no lease, when its lease ran out
        (its runner stopped renewing it: crashed, killed, cut off), or when an earlier
        run of `lease`'s node held it (one process per node: that run is gone). Those of
        live leases, this one's and other processes', are left running, so processes
        sharing a campaign can each call this, at start and from time to time.

        One that has already been started `max_attempts` times is marked 'failed' with
        failure class 'interrupted' instead (and its id returned too), so a candidate that
        kills the node cannot do so forever. Records a 'crash_recovery' event.
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        now = self._now()
        owner = col(Experiment.lease_owner)
        nobodys = [
            owner.is_(None),
            col(Experiment.lease_expires_at).is_(None),
            col(Experiment.lease_expires_at) <= now,
        ]
        if lease is not None:
            earlier_run = sa.and_(
                owner.startswith(f"{lease.node}/", autoescape=True), owner != lease.owner
            )
            nobodys.append(earlier_run)
        with self._session(write=True) as s:
            # Locked as read: a runner renewing or finishing one of them waits, and one
            # that got there first takes it out of this set (PostgreSQL re-checks the
            # condition on the locked rows; SQLite's writers take turns anyway).
            stale = s.exec(
                select(Experiment)
                .where(
                    col(Experiment.campaign_id) == campaign_id,
                    sa.or_(
                        col(Experiment.status) == ExperimentStatus.INTERRUPTED,
                        sa.and_(
                            col(Experiment.status) == ExperimentStatus.RUNNING, sa.or_(*nobodys)
                        ),
                    ),
                )
                .order_by(col(Experiment.seq))
                .with_for_update()
            ).all()
            requeued: list[str] = []
            failed: list[str] = []
            for exp in stale:
                if exp.attempts >= max_attempts:
                    exp.status = ExperimentStatus.FAILED
                    exp.failure_class = FailureClass.INTERRUPTED.value
                    exp.finished_at = now
                    exp.analysis = (
                        f"interrupted {exp.attempts} times by a node crash or shutdown; "
                        "not retried again"
                    )
                    failed.append(exp.id)
                else:
                    exp.status = ExperimentStatus.QUEUED
                    exp.failure_class = None
                    exp.started_at = None
                    requeued.append(exp.id)
                exp.lease_expires_at = None
                s.add(exp)
            s.flush()
            if stale:
                self._event(
                    s, campaign_id, "crash_recovery", {"requeued": requeued, "failed": failed}
                )
                log.warning(
                    "interrupted experiments recovered",
                    extra={"campaign": campaign_id, "requeued": requeued, "failed": failed},
                )
            return [exp.id for exp in stale]

    def get_experiment(self, experiment_id: str) -> ExperimentRow:
        with self._session() as s:
            return experiment_row(self._experiment(s, experiment_id))

    def list_experiments(self, campaign_id: str, status: str | None = None) -> list[ExperimentRow]:
        """The campaign's experiments in sequence order, optionally of one status."""
        query = select(Experiment).where(col(Experiment.campaign_id) == campaign_id)
        if status is not None:
            _check(status, EXPERIMENT_STATUSES, "experiment status")
            query = query.where(col(Experiment.status) == status)
        with self._session() as s:
            return [experiment_row(r) for r in s.exec(query.order_by(col(Experiment.seq)))]

    def count_experiments(self, campaign_id: str, status: str | None = None) -> int:
        query = (
            select(sa.func.count())
            .select_from(Experiment)
            .where(col(Experiment.campaign_id) == campaign_id)
        )
        if status is not None:
            _check(status, EXPERIMENT_STATUSES, "experiment status")
            query = query.where(col(Experiment.status) == status)
        with self._session() as s:
            return int(s.exec(query).one())

    def experiment_stats(self) -> list[tuple[str, str, int, float | None]]:
        """(campaign id, status, experiments, highest fitness) for every pair that has
        experiments: one grouped query, for the metrics endpoint."""
        query = select(
            Experiment.campaign_id,
            Experiment.status,
            sa.func.count(),
            sa.func.max(Experiment.fitness),
        ).group_by(col(Experiment.campaign_id), col(Experiment.status))
        with self._session() as s:
            return [
                (cid, status, int(n), None if best is None else float(best))
                for cid, status, n, best in s.exec(query)
            ]

    def best_by_metric(
        self, campaign_id: str, metric: str, *, limit: int = 10, highest: bool = True
    ) -> list[tuple[ExperimentRow, float]]:
        """The campaign's finished experiments ranked by one metric, with its value."""
        order = col(Metric.value).desc() if highest else col(Metric.value).asc()
        query = (
            select(Experiment, Metric.value)
            .join(Metric, col(Metric.experiment_id) == col(Experiment.id))
            .where(col(Experiment.campaign_id) == campaign_id, col(Metric.name) == metric)
            .order_by(order, col(Experiment.seq))
            .limit(limit)
        )
        with self._session() as s:
            return [(experiment_row(e), float(v)) for e, v in s.exec(query)]

    def add_insight(
        self, campaign_id: str, text: str, experiment_id: str | None = None
    ) -> InsightRow:
        with self._session(write=True) as s:
            if s.get(Campaign, campaign_id) is None:
                raise NotFoundError(f"campaign {campaign_id} not found")
            if experiment_id is not None:
                self._experiment(s, experiment_id)
            row = Insight(
                id=_new_id("ins-", 6),
                campaign_id=campaign_id,
                experiment_id=experiment_id,
                text=text,
                created_at=self._now(),
            )
            s.add(row)
            s.flush()
            return insight_row(row)

    def list_insights(self, campaign_id: str, limit: int | None = None) -> list[InsightRow]:
        """The campaign's most recent `limit` insights (all when None), oldest first."""
        query = (
            select(Insight)
            .where(col(Insight.campaign_id) == campaign_id)
            .order_by(col(Insight.created_at).desc(), col(Insight.id).desc())
        )
        if limit is not None:
            query = query.limit(limit)
        with self._session() as s:
            return [insight_row(r) for r in reversed(s.exec(query).all())]

    def add_event(
        self, campaign_id: str | None, kind: str, payload: Mapping[str, Any] | None = None
    ) -> EventRow:
        """Append to the audit trail; `campaign_id` None for node-wide events."""
        with self._session(write=True) as s:
            if campaign_id is not None and s.get(Campaign, campaign_id) is None:
                raise NotFoundError(f"campaign {campaign_id} not found")
            return self._event(s, campaign_id, kind, payload or {})

    def list_events(
        self,
        campaign_id: str | None = None,
        *,
        kind: str | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[EventRow]:
        """Events in the order they happened; all campaigns' and node-wide ones when
        `campaign_id` is None. `after_id` pages on from the last id seen."""
        query = select(Event).where(col(Event.id) > after_id)
        if campaign_id is not None:
            query = query.where(col(Event.campaign_id) == campaign_id)
        if kind is not None:
            query = query.where(col(Event.kind) == kind)
        query = query.order_by(col(Event.id))
        if limit is not None:
            query = query.limit(limit)
        with self._session() as s:
            return [event_row(r) for r in s.exec(query)]

    def add_llm_exchanges(
        self,
        campaign_id: str,
        experiment_id: str | None,
        exchanges: Sequence[Mapping[str, Any]],
    ) -> list[LLMExchangeRow]:
        """Keep what an agent sent and got back (fields of `loop.llm.Exchange`)."""
        with self._session(write=True) as s:
            if s.get(Campaign, campaign_id) is None:
                raise NotFoundError(f"campaign {campaign_id} not found")
            if experiment_id is not None:
                self._experiment(s, experiment_id)
            rows = []
            for x in exchanges:
                row = LLMExchange(
                    campaign_id=campaign_id,
                    experiment_id=experiment_id,
                    role=str(x["role"]),
                    purpose=str(x["purpose"]),
                    model=str(x["model"]),
                    status=str(x["status"]),
                    error=str(x.get("error", "")),
                    prompt=str(x["prompt"]),
                    completion=str(x["completion"]),
                    prompt_sha256=_sha256(str(x["prompt"])),
                    completion_sha256=_sha256(str(x["completion"])),
                    prompt_tokens=int(x["prompt_tokens"]),
                    completion_tokens=int(x["completion_tokens"]),
                    cost_usd=float(x["cost_usd"]),
                    latency_s=float(x["latency_s"]),
                    structured=bool(x.get("structured", False)),
                    created_at=self._now(),
                )
                s.add(row)
                rows.append(row)
            s.flush()
            return [llm_exchange_row(r) for r in rows]

    def list_llm_exchanges(
        self, campaign_id: str, experiment_id: str | None = None
    ) -> list[LLMExchangeRow]:
        """A campaign's LLM exchanges (one experiment's when given), in call order."""
        query = select(LLMExchange).where(col(LLMExchange.campaign_id) == campaign_id)
        if experiment_id is not None:
            query = query.where(col(LLMExchange.experiment_id) == experiment_id)
        with self._session() as s:
            return [llm_exchange_row(r) for r in s.exec(query.order_by(col(LLMExchange.id)))]

    def llm_usage(self, campaign_id: str, experiment_id: str | None = None) -> LLMUsage:
        """Calls, tokens, seconds and cost spent by a campaign (or one experiment): one
        aggregate query, which reads none of the prompts and completions."""
        failed = sa.case((col(LLMExchange.status) != "ok", 1), else_=0)
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(failed), 0),
            sa.func.coalesce(sa.func.sum(LLMExchange.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(LLMExchange.completion_tokens), 0),
            sa.func.coalesce(sa.func.sum(LLMExchange.cost_usd), 0.0),
            sa.func.coalesce(sa.func.sum(LLMExchange.latency_s), 0.0),
        ).where(col(LLMExchange.campaign_id) == campaign_id)
        if experiment_id is not None:
            query = query.where(col(LLMExchange.experiment_id) == experiment_id)
        with self._session() as s:
            calls, bad, prompt, completion, cost, seconds = s.connection().execute(query).one()
        return LLMUsage(
            calls=int(calls),
            failed=int(bad),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            cost_usd=float(cost),
            seconds=float(seconds),
        )

    def refresh_experiment_llm(self, experiment_id: str) -> ExperimentRow:
        """Write the experiment's LLM summary (counts and digests, no text) into llm_json."""
        exp = self.get_experiment(experiment_id)
        rows = self.list_llm_exchanges(exp.campaign_id, experiment_id)
        usage = self.llm_usage(exp.campaign_id, experiment_id)
        summary = {
            "calls": usage.calls,
            "failed": usage.failed,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": usage.cost_usd,
            "seconds": usage.seconds,
            "models": sorted({r.model for r in rows}),
            "exchanges": [
                {
                    "role": r.role,
                    "purpose": r.purpose,
                    "status": r.status,
                    "prompt": r.prompt_sha256,
                    "completion": r.completion_sha256,
                    "tokens": r.prompt_tokens + r.completion_tokens,
                }
                for r in rows
            ],
        }
        with self._session(write=True) as s:
            s.exec(
                sa.update(Experiment)
                .where(col(Experiment.id) == experiment_id)
                .values(llm_json=_canonical_json(summary, "llm summary"))
                .execution_options(synchronize_session=False)
            )
            return experiment_row(self._experiment(s, experiment_id))

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction. On SQLite a writing one takes the write lock when it begins."""
        try:
            with self._lock, self._engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: write})
                with conn.begin(), Session(bind=conn) as session:
                    yield session
                    session.flush()
        except SQLAlchemyError as exc:
            raise translate(exc, self._url) from exc

    def _put_code(self, s: Session, code: str) -> str:
        digest = code_digest(code)
        self._insert_ignoring_conflict(s, CodeBlob, {"digest": digest, "code": code}, ("digest",))
        stored = s.get(CodeBlob, digest)
        if stored is None or stored.code != code:
            raise CorruptStoreError(
                f"the code stored under {digest} does not match that digest: the database "
                "was changed outside asi-node. Restore it from a backup."
            )
        return digest

    def _insert_ignoring_conflict(
        self,
        s: Session,
        model: type[SQLModel],
        values: Mapping[str, Any],
        conflict: Sequence[str],
    ) -> None:
        # INSERT ... ON CONFLICT DO NOTHING: a concurrent writer of the same row is not an
        # error, and PostgreSQL's transaction is not aborted by a unique violation.
        table = model.__table__  # type: ignore[attr-defined]
        insert = (
            postgresql.insert if self._url.get_backend_name() == "postgresql" else sqlite.insert
        )
        s.exec(insert(table).values(**values).on_conflict_do_nothing(index_elements=list(conflict)))

    def _experiment(self, s: Session, experiment_id: str) -> Experiment:
        row = s.get(Experiment, experiment_id, populate_existing=True)
        if row is None:
            raise NotFoundError(f"experiment {experiment_id} not found")
        return row

    def _event(
        self, s: Session, campaign_id: str | None, kind: str, payload: Mapping[str, Any]
    ) -> EventRow:
        row = Event(
            campaign_id=campaign_id,
            kind=kind,
            payload_json=_canonical_json(payload, "event payload"),
            created_at=self._now(),
        )
        s.add(row)
        s.flush()
        return event_row(row)


def _expiry(now: datetime, lease: Lease | None) -> datetime | None:
    return now + timedelta(seconds=lease.seconds) if lease is not None else None


def _running(experiment_id: str, lease: Lease | None) -> tuple[Any, ...]:
    """The condition on an experiment that is running (and held by `lease`, if given)."""
    running = (
        col(Experiment.id) == experiment_id,
        col(Experiment.status) == ExperimentStatus.RUNNING,
    )
    return (*running, col(Experiment.lease_owner) == lease.owner) if lease else running


def _lease_lost(current: Experiment, lease: Lease | None) -> None:
    """Raise LeaseLostError when `lease` no longer holds `current` (a running experiment
    someone else took over, or one that left 'running' while the lease was out)."""
    if lease is not None and current.lease_owner != lease.owner:
        raise LeaseLostError(
            f"experiment {current.id} is no longer held by this runner ({lease.owner}): it "
            f"is {current.status}, held by {current.lease_owner or 'nobody'}; its lease ran "
            "out before it was renewed. The result is dropped; its new runner records it."
        )


def _verified(blob: CodeBlob) -> str:
    if code_digest(blob.code) != blob.digest:
        raise CorruptStoreError(
            f"the code stored under {blob.digest} does not match that digest: the database "
            "was changed outside asi-node. Restore it from a backup."
        )
    return blob.code


def _canonical_json(value: Any, what: str) -> str:
    """RFC 8785 text: a campaign's config hash is the SHA-256 of its config stored so, and
    so reproducible from the config (`CampaignConfig.config_hash`)."""
    try:
        return canonical_json(value).decode()
    except FormatError as exc:
        raise ValueError(f"{what} is not plain JSON data: {exc}") from None


def _optional_json(value: Mapping[str, Any] | None, what: str) -> str | None:
    return None if value is None else _canonical_json(value, what)


def _check(value: str, allowed: Collection[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(sorted(allowed))}")


def _check_finite(value: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _new_id(prefix: str, nbytes: int) -> str:
    return prefix + secrets.token_hex(nbytes)


def _looks_like_campaign_id(name: str) -> bool:
    tail = name.removeprefix("c-")
    return tail != name and len(tail) == 8 and all(ch in "0123456789abcdef" for ch in tail)
