"""Governance in the store: the directives a node applied, and forks of campaigns.

`DirectiveLedger` works on a `Store`'s database in the Store's own transactions. Each
applied directive is one row (unique per source, campaign and epoch, so applying it
twice is a no-op) that waits for its on-chain acknowledgement (`unacknowledged` /
`mark_acknowledged`: the chain client sends `acknowledge(campaign, epoch, entryHash)`).
A node with a transparency log also logs each one; the row's detail then holds the
entry's `log_index`. Forks copy a parent's finished experiments into a child campaign.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from attestation.schema import DirectiveKind, ExperimentStatus
from node.errors import ConflictError, NotFoundError
from node.store.rows import CampaignRow, campaign_row
from node.store.store import Store, _canonical_json, _new_id
from node.store.tables import Campaign, Candidate, Event, Experiment, Insight, Metric

_Tz = sa.DateTime(timezone=True)
COPIED_STATUSES = (ExperimentStatus.DONE, ExperimentStatus.FAILED)


class GovernanceDirective(SQLModel, table=True):
    __tablename__ = "governance_directive"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(sa_type=sa.String(32))
    campaign_id: str = Field(sa_type=sa.String(64))
    epoch: int = Field(sa_type=sa.BigInteger)
    kind: str = Field(sa_type=sa.String(16))
    ref: str = Field(sa_type=sa.Text)
    height: int | None = Field(default=None, sa_type=sa.BigInteger)
    config_hash: str | None = Field(default=None, sa_type=sa.String(80))
    detail_json: str = Field(sa_type=sa.Text)
    applied_at: datetime = Field(sa_type=_Tz)
    acknowledged_at: datetime | None = Field(default=None, sa_type=_Tz)
    ack_ref: str | None = Field(default=None, sa_type=sa.Text)


@dataclass(frozen=True)
class DirectiveRow:
    """A directive this node applied. `campaign_id` is the node's id, or "*" for all."""

    id: int
    source: str
    campaign_id: str
    epoch: int
    kind: DirectiveKind
    ref: str
    height: int | None
    config_hash: str | None
    detail: dict[str, Any]
    applied_at: datetime
    acknowledged_at: datetime | None
    ack_ref: str | None

    def as_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["applied_at"] = self.applied_at.isoformat()
        data["acknowledged_at"] = self.acknowledged_at.isoformat() if self.acknowledged_at else None
        return data


def _row(r: GovernanceDirective) -> DirectiveRow:
    from node.store.rows import _utc, _utc_or_none

    assert r.id is not None
    return DirectiveRow(
        id=r.id,
        source=r.source,
        campaign_id=r.campaign_id,
        epoch=r.epoch,
        kind=DirectiveKind(r.kind),
        ref=r.ref,
        height=r.height,
        config_hash=r.config_hash,
        detail=json.loads(r.detail_json),
        applied_at=_utc(r.applied_at),
        acknowledged_at=_utc_or_none(r.acknowledged_at),
        ack_ref=r.ack_ref,
    )


class DirectiveLedger:
    """Applied directives and forks, on `store`'s database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def now(self) -> datetime:
        """The store's clock: what `applied_at` is measured by (as experiments' starts are)."""
        return self.store._now()

    def record(
        self,
        *,
        source: str,
        campaign_id: str,
        epoch: int,
        kind: str,
        ref: str = "",
        height: int | None = None,
        config_hash: str | None = None,
        detail: Mapping[str, Any] | None = None,
        applied_at: datetime | None = None,
    ) -> DirectiveRow:
        """Record an applied directive (and an event in its campaign); idempotent.

        `applied_at` is when the node put it into effect (default: now)."""
        s_ = self.store
        with s_._session(write=True) as s:
            found = s.exec(
                select(GovernanceDirective).where(
                    col(GovernanceDirective.source) == source,
                    col(GovernanceDirective.campaign_id) == campaign_id,
                    col(GovernanceDirective.epoch) == epoch,
                )
            ).first()
            if found is not None:
                return _row(found)
            row = GovernanceDirective(
                source=source,
                campaign_id=campaign_id,
                epoch=epoch,
                kind=kind,
                ref=ref,
                height=height,
                config_hash=config_hash,
                detail_json=_canonical_json(dict(detail or {}), "directive detail"),
                applied_at=applied_at or s_._now(),
            )
            s.add(row)
            s.flush()
            known = s.get(Campaign, campaign_id) is not None
            s_._event(
                s,
                campaign_id if known else None,
                "directive_applied",
                {"source": source, "campaign": campaign_id, "epoch": epoch, "kind": kind},
            )
            return _row(row)

    def update_detail(self, directive_id: int, extra: Mapping[str, Any]) -> DirectiveRow:
        """Add facts learnt after applying (how long the stop took)."""
        with self.store._session(write=True) as s:
            row = s.get(GovernanceDirective, directive_id)
            if row is None:
                raise NotFoundError(f"no applied directive {directive_id}")
            row.detail_json = _canonical_json(
                json.loads(row.detail_json) | dict(extra), "directive detail"
            )
            s.add(row)
            s.flush()
            return _row(row)

    def list_applied(self, campaign_id: str | None = None) -> list[DirectiveRow]:
        """Applied directives in the order applied; one campaign's (with the global ones)."""
        query = select(GovernanceDirective).order_by(col(GovernanceDirective.id))
        if campaign_id is not None:
            query = query.where(col(GovernanceDirective.campaign_id).in_((campaign_id, "*")))
        with self.store._session() as s:
            return [_row(r) for r in s.exec(query)]

    def unacknowledged(self, source: str | None = None) -> list[DirectiveRow]:
        """Applied directives not yet acknowledged on their source, oldest first."""
        query = (
            select(GovernanceDirective)
            .where(col(GovernanceDirective.acknowledged_at).is_(None))
            .order_by(col(GovernanceDirective.id))
        )
        if source is not None:
            query = query.where(col(GovernanceDirective.source) == source)
        with self.store._session() as s:
            return [_row(r) for r in s.exec(query)]

    def mark_acknowledged(
        self, directive_id: int, ack_ref: str, detail: Mapping[str, Any] | None = None
    ) -> DirectiveRow:
        """Note the acknowledgement (e.g. its transaction hash) and, in `detail`, what it
        committed to. ConflictError if already acknowledged."""
        with self.store._session(write=True) as s:
            row = s.get(GovernanceDirective, directive_id)
            if row is None:
                raise NotFoundError(f"no applied directive {directive_id}")
            if row.acknowledged_at is not None:
                raise ConflictError(f"directive {directive_id} was acknowledged as {row.ack_ref}")
            row.acknowledged_at = self.store._now()
            row.ack_ref = ack_ref
            if detail:
                row.detail_json = _canonical_json(
                    json.loads(row.detail_json) | dict(detail), "directive detail"
                )
            s.add(row)
            s.flush()
            return _row(row)

    def applied_epochs(self) -> dict[tuple[str, str], int]:
        """The highest applied epoch per (source, campaign): what a restarted watcher skips."""
        query = select(
            GovernanceDirective.source,
            GovernanceDirective.campaign_id,
            sa.func.max(GovernanceDirective.epoch),
        ).group_by(col(GovernanceDirective.source), col(GovernanceDirective.campaign_id))
        with self.store._session() as s:
            return {(src, cid): int(epoch) for src, cid, epoch in s.exec(query)}

    def fork(
        self,
        parent_id: str,
        child_name: str,
        config: Mapping[str, Any],
        *,
        experiments: Collection[str] | None = None,
        tree_size: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> CampaignRow:
        """A child campaign holding the parent's archive and memory as of a log position.

        `experiments` are the parent's experiment ids the child inherits (the caller reads
        them from its log below `tree_size`; None: every finished one); each must be a
        finished (done or failed) experiment of the parent, else ConflictError. The child
        gets copies of them (with their candidates, code, metrics and scores) and their
        insights, so its Researcher continues from that state with the new `config`.
        `tree_size` is kept as the child's fork position. Both campaigns get a lineage
        event. One transaction: a failed fork leaves nothing behind.
        """
        child = self.store.create_campaign(child_name, config, parent_campaign_id=parent_id)
        wanted = None if experiments is None else set(experiments)
        try:
            return self._fill(parent_id, child, wanted, tree_size, dict(detail or {}))
        except BaseException:
            self._drop(child.id)
            raise

    def _fill(
        self,
        parent_id: str,
        child: CampaignRow,
        wanted: set[str] | None,
        tree_size: int | None,
        detail: dict[str, Any],
    ) -> CampaignRow:
        s_ = self.store
        with s_._session(write=True) as s:
            if s.get(Campaign, parent_id) is None:
                raise NotFoundError(f"parent campaign {parent_id} not found")
            query = select(Experiment).where(col(Experiment.campaign_id) == parent_id)
            if wanted is None:
                query = query.where(col(Experiment.status).in_(COPIED_STATUSES))
            else:
                query = query.where(col(Experiment.id).in_(wanted))
            exps = s.exec(query.order_by(col(Experiment.seq))).all()
            _check_inherited(parent_id, wanted, exps)
            new_cand = self._copy_candidates(s, parent_id, child.id, {e.candidate_id for e in exps})
            new_exp: dict[str, str] = {}
            for e in exps:
                new_exp[e.id] = _new_id("exp-", 6)
                data = e.model_dump()
                data |= {"id": new_exp[e.id], "campaign_id": child.id}
                data["candidate_id"] = new_cand[e.candidate_id]
                s.add(Experiment(**data))
            s.flush()
            for old, new in new_exp.items():
                for m in s.exec(select(Metric).where(col(Metric.experiment_id) == old)).all():
                    s.add(Metric(experiment_id=new, name=m.name, value=m.value))
            self._copy_insights(s, parent_id, child.id, new_exp)
            row = s.get(Campaign, child.id)
            assert row is not None
            row.fork_tree_size = tree_size
            row.last_seq = max((e.seq for e in exps), default=0)
            s.add(row)
            s.flush()
            lineage = detail | {"parent": parent_id, "child": child.id, "position": tree_size}
            lineage["experiments"] = len(exps)
            s_._event(s, child.id, "forked_from", lineage)
            s_._event(s, parent_id, "forked_to", lineage)
            return campaign_row(row)

    @staticmethod
    def _copy_candidates(
        s: Session, parent_id: str, child_id: str, wanted: set[str]
    ) -> dict[str, str]:
        """Copy the parent's candidates in `wanted` to the child; old id -> new id."""
        cands = s.exec(
            select(Candidate)
            .where(col(Candidate.campaign_id) == parent_id)
            .order_by(col(Candidate.created_at), col(Candidate.id))
        ).all()
        new_cand = {c.id: _new_id("cand-", 6) for c in cands if c.id in wanted}
        for c in cands:
            if c.id not in new_cand:
                continue
            parents = [new_cand.get(p, p) for p in json.loads(c.parent_ids_json or "[]")]
            s.add(
                Candidate(
                    id=new_cand[c.id],
                    campaign_id=child_id,
                    digest=c.digest,
                    name=c.name,
                    motivation=c.motivation,
                    origin=c.origin,
                    parent_ids_json=_canonical_json(parents, "parent_ids"),
                    options_json=c.options_json,
                    created_at=c.created_at,
                )
            )
        s.flush()
        return new_cand

    @staticmethod
    def _copy_insights(s: Session, parent_id: str, child_id: str, new_exp: dict[str, str]) -> None:
        """The parent's insights about inherited experiments (and campaign-wide ones)."""
        insights = s.exec(
            select(Insight)
            .where(col(Insight.campaign_id) == parent_id)
            .order_by(col(Insight.created_at), col(Insight.id))
        ).all()
        for i in insights:
            if i.experiment_id is not None and i.experiment_id not in new_exp:
                continue
            s.add(
                Insight(
                    id=_new_id("ins-", 6),
                    campaign_id=child_id,
                    experiment_id=new_exp.get(i.experiment_id or ""),
                    text=i.text,
                    created_at=i.created_at,
                )
            )

    def _drop(self, campaign_id: str) -> None:
        with self.store._session(write=True) as s:
            s.exec(sa.delete(Insight).where(col(Insight.campaign_id) == campaign_id))
            s.exec(sa.delete(Candidate).where(col(Candidate.campaign_id) == campaign_id))
            s.exec(sa.delete(Event).where(col(Event.campaign_id) == campaign_id))
            s.exec(sa.delete(Campaign).where(col(Campaign.id) == campaign_id))

    def children(self, campaign_id: str) -> list[CampaignRow]:
        """Campaigns forked from this one."""
        with self.store._session() as s:
            rows = s.exec(
                select(Campaign)
                .where(col(Campaign.parent_campaign_id) == campaign_id)
                .order_by(col(Campaign.created_at))
            )
            return [campaign_row(r) for r in rows]


def _check_inherited(
    parent_id: str, wanted: set[str] | None, found: Collection[Experiment]
) -> None:
    """Every experiment a fork names is a finished experiment of its parent."""
    if wanted is None:
        return
    missing = sorted(wanted - {e.id for e in found})
    if missing:
        raise ConflictError(
            f"campaign {parent_id} has no experiment {missing[0]}: a fork inherits only "
            "the parent's own experiments"
        )
    unfinished = [e for e in found if e.status not in COPIED_STATUSES]
    if unfinished:
        e = unfinished[0]
        raise ConflictError(
            f"experiment {e.id} of {parent_id} is {e.status}: a fork inherits only finished "
            "(done or failed) experiments"
        )
