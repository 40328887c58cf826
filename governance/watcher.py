"""The directive watcher: polls every source, decides what each campaign may do.

Rules (DESIGN.md section 6):
- the most restrictive signal wins, across sources and between a source's directives and
  the status snapshot it reports (`effectiveStatus` on the EVM);
- pause and stop apply from the first sighting; resume and fork only once their block has
  `confirmations` blocks on top (a source without blocks gives final answers);
- one source's directives for one campaign apply in epoch order; one at or below the
  last applied epoch is stale and ignored (logged), and a restrictive directive
  supersedes the unconfirmed ones before it (they are reported as `superseded`, so the
  node records every epoch and acknowledges them in order);
- a stop holds the campaign at once, as a pause, and is final (the campaign stopped for
  good) only once its block has `confirmations` on top: a stop that a reorganisation
  removes, or an endpoint invents, cannot end a campaign;
- a source that says this node may not act (revoked, or suspended with its TEE
  measurement) pauses every campaign until it is approved again;
- a campaign a source holds for another reason (not registered on the controller, or
  registered with another config) is paused, the reason kept (`held`);
- when a source has given no fresh reading for `stale_after_s`, every campaign pauses
  until it answers again.

With no source at all nothing directs: every campaign may run (an ungoverned node).

The watcher only decides; `node.governed.obey` makes the node obey. It is not thread-safe:
one thread polls it and reads its answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from governance.directives import (
    ALL_CAMPAIGNS,
    IMMEDIATE,
    CampaignState,
    Directive,
    DirectiveKind,
    DirectiveSource,
    Reading,
    strictest,
)
from governance.errors import SourceError

log = logging.getLogger(__name__)
PAUSED = CampaignState.PAUSED


@dataclass(frozen=True)
class Applied:
    """A directive the watcher applied: when it was first seen and when it took effect."""

    directive: Directive
    observed_at: float
    applied_at: float
    confirmations: int | None  # None for a source without blocks


@dataclass(frozen=True)
class Ignored:
    directive: Directive
    reason: str


@dataclass(frozen=True)
class Standing:
    """This node's standing on a source changed: it may act (`active`) or not (revoked,
    or suspended with its TEE measurement), by transaction `ref` seen at `height`."""

    source: str
    active: bool
    ref: str
    height: int | None


@dataclass(frozen=True)
class Superseded:
    """An unconfirmed directive a later, restrictive one overtook: never in effect, but
    an epoch of its campaign all the same (recorded and acknowledged in order)."""

    directive: Directive
    by: Directive


@dataclass(frozen=True)
class PollResult:
    """What one poll changed."""

    applied: tuple[Applied, ...] = ()
    ignored: tuple[Ignored, ...] = ()
    superseded: tuple[Superseded, ...] = ()  # each before the directive that superseded it
    undone: tuple[Directive, ...] = ()  # stops that left their source before they were final
    standing: tuple[Standing, ...] = ()  # this node's standing, where it changed
    failed_sources: tuple[str, ...] = ()
    stale: bool = False
    revoked: bool = False


@dataclass
class _Pending:
    directive: Directive
    observed_at: float


@dataclass
class _SourceView:
    fresh_at: float
    head: int | None = None
    revoked: bool = False
    pending: list[_Pending] = field(default_factory=list)
    snapshot: dict[str, CampaignState] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)
    unfinal_stops: list[Directive] = field(default_factory=list)
    finalized: int | None = None


class Watcher:
    """Decides each campaign's state from its sources. `poll()` once per interval.

    `applied_epochs` and `states` restore what was applied before a restart (keyed by
    (source, campaign)); `resolve` maps a directive's campaign name to the node's
    campaign id (unknown names are kept as given); `clock` is monotonic seconds.
    """

    def __init__(
        self,
        sources: Sequence[DirectiveSource],
        *,
        confirmations: int = 2,
        stale_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        resolve: Callable[[str], str] | None = None,
        applied_epochs: Mapping[tuple[str, str], int] | None = None,
        states: Mapping[tuple[str, str], CampaignState] | None = None,
        revoked: Mapping[str, bool] | None = None,
    ) -> None:
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"directive source names must be unique, got {names}")
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        self.sources = list(sources)
        self.confirmations = confirmations
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.resolve = resolve or (lambda name: name)
        now = clock()
        was = revoked or {}
        self._views = {
            s.name: _SourceView(fresh_at=now, revoked=was.get(s.name, False)) for s in sources
        }
        self._epochs: dict[tuple[str, str], int] = dict(applied_epochs or {})
        self._states: dict[tuple[str, str], CampaignState] = dict(states or {})
        # (source, campaign, epoch) already applied or ignored: a source that re-reads
        # recent blocks (reorg safety) hands them in again, and they pass silently.
        self._settled: set[tuple[str, str, int]] = set()

    @property
    def revoked(self) -> bool:
        return any(v.revoked for v in self._views.values())

    @property
    def stale(self) -> bool:
        """True while some source has given no fresh reading for `stale_after_s`."""
        now = self.clock()
        return any(now - v.fresh_at > self.stale_after_s for v in self._views.values())

    def ages(self) -> dict[str, float]:
        """Seconds since each source last gave a fresh reading."""
        now = self.clock()
        return {name: now - view.fresh_at for name, view in self._views.items()}

    def directed_state(self, campaign_id: str) -> CampaignState:
        """The most restrictive state the sources direct for the campaign (a stop not yet
        final holds it as a pause)."""
        found = []
        for name, view in self._views.items():
            for key in (campaign_id, ALL_CAMPAIGNS):
                if (name, key) in self._states:
                    found.append(self._states[(name, key)])
                if key in view.snapshot:
                    found.append(view.snapshot[key])
            if campaign_id in view.held:
                found.append(PAUSED)
            if any(d.campaign_id in (campaign_id, ALL_CAMPAIGNS) for d in view.unfinal_stops):
                found.append(PAUSED)
        return strictest(found)

    def held(self, campaign_id: str) -> list[str]:
        """Why sources hold the campaign beyond their directives, one line per source."""
        return [
            f"{name}: {view.held[campaign_id]}"
            for name, view in self._views.items()
            if campaign_id in view.held
        ]

    def state(self, campaign_id: str) -> CampaignState:
        """What the node must do with the campaign now: directed state, revocation and
        staleness together (revoked or stale: at least paused)."""
        directed = self.directed_state(campaign_id)
        if self.revoked or self.stale:
            return strictest([directed, CampaignState.PAUSED])
        return directed

    def allows(self, campaign_id: str) -> bool:
        """May experiments of this campaign start now?"""
        return self.state(campaign_id) is CampaignState.RUNNING

    def rename(self, name: str, campaign_id: str) -> None:
        """What was applied to `name` (a fork's child, before the node created it) now
        belongs to the node's id for it, where every later directive resolves to."""
        for source, key in [k for k in self._states if k[1] == name]:
            self._states[(source, campaign_id)] = self._states.pop((source, key))
        for source, key in [k for k in self._epochs if k[1] == name]:
            self._epochs[(source, campaign_id)] = self._epochs.pop((source, key))
        self._settled = {(s, campaign_id if c == name else c, e) for s, c, e in self._settled}

    def last_epoch(self, source: str, campaign_id: str) -> int:
        return self._epochs.get((source, campaign_id), 0)

    def poll(self) -> PollResult:
        """Read every source once and apply what is ready."""
        applied: list[Applied] = []
        ignored: list[Ignored] = []
        superseded: list[Superseded] = []
        undone: list[Directive] = []
        standing: list[Standing] = []
        failed: list[str] = []
        for source in self.sources:
            view = self._views[source.name]
            try:
                reading = source.read()
            except SourceError as exc:
                failed.append(source.name)
                log.warning(
                    "directive source unreadable",
                    extra={"source": source.name, "error": str(exc)},
                )
                continue
            now = self.clock()
            view.fresh_at = now
            if reading.revoked != view.revoked:
                standing.append(
                    Standing(source.name, not reading.revoked, reading.standing_ref, reading.head)
                )
            self._take(source.name, view, reading, now, ignored)
            try:
                undone += self._finalise_stops(source, view)
            except SourceError as exc:  # judged again at the next poll
                log.warning("stops not finalised", extra={"source": source.name, "error": str(exc)})
            self._apply_ready(source.name, view, now, applied, ignored, superseded)
        for item in ignored:
            log.warning(
                "directive ignored",
                extra={
                    "source": item.directive.source,
                    "campaign": item.directive.campaign_id,
                    "epoch": item.directive.epoch,
                    "reason": item.reason,
                },
            )
        for done in applied:
            log.info(
                "directive applied",
                extra={
                    "source": done.directive.source,
                    "campaign": done.directive.campaign_id,
                    "kind": done.directive.kind.value,
                    "epoch": done.directive.epoch,
                },
            )
        return PollResult(
            tuple(applied),
            tuple(ignored),
            tuple(superseded),
            tuple(undone),
            tuple(standing),
            tuple(failed),
            self.stale,
            self.revoked,
        )

    def _take(
        self, name: str, view: _SourceView, reading: Reading, now: float, ignored: list[Ignored]
    ) -> None:
        if reading.head is not None:
            view.head = reading.head
        if reading.finalized is not None:
            view.finalized = reading.finalized
        if reading.revoked and not view.revoked:
            log.error("this node was revoked", extra={"source": name})
        view.revoked = reading.revoked
        view.snapshot.update({self.resolve(k): v for k, v in reading.states.items()})
        view.held = {self.resolve(k): why for k, why in reading.held.items()}
        known = {(p.directive.campaign_id, p.directive.epoch) for p in view.pending}
        for d in reading.directives:
            if d.source != name:
                ignored.append(Ignored(d, f"delivered by source {name}, claims {d.source}"))
                continue
            cid = self.resolve(d.campaign_id)
            if cid != d.campaign_id:
                d = _with_campaign(d, cid)
            if (name, cid, d.epoch) in self._settled:
                continue
            if d.epoch <= self.last_epoch(name, cid):
                self._settled.add((name, cid, d.epoch))
                ignored.append(Ignored(d, f"stale: epoch {d.epoch} is not after the applied one"))
                continue
            if (cid, d.epoch) in known:
                continue  # seen again before it was applied
            known.add((cid, d.epoch))
            view.pending.append(_Pending(d, now))

    def _confirmations(self, view: _SourceView, d: Directive) -> int | None:
        if d.height is None:
            return None
        if view.head is None:
            return 0
        return max(0, view.head - d.height + 1)

    def _final(self, view: _SourceView, d: Directive) -> bool:
        """Deep enough: `confirmations` blocks on top and, where the source names its
        final block (the `finalized` tag), at or below it."""
        confs = self._confirmations(view, d)
        if confs is None:
            return True
        deep = confs >= self.confirmations
        return deep and (view.finalized is None or d.height is None or d.height <= view.finalized)

    def _apply_ready(
        self,
        name: str,
        view: _SourceView,
        now: float,
        applied: list[Applied],
        ignored: list[Ignored],
        superseded: list[Superseded],
    ) -> None:
        by_campaign: dict[str, list[_Pending]] = {}
        for p in sorted(view.pending, key=lambda p: p.directive.epoch):
            by_campaign.setdefault(p.directive.campaign_id, []).append(p)
        keep: list[_Pending] = []
        for cid, items in by_campaign.items():
            waiting: list[_Pending] = []
            for p in items:
                d = p.directive
                confs = self._confirmations(view, d)
                confirmed = self._final(view, d)
                if self._states.get((name, cid)) is CampaignState.STOPPED:
                    self._settled.add((name, cid, d.epoch))
                    ignored.append(Ignored(d, "the campaign is stopped; a stop is final"))
                    continue
                if d.kind in IMMEDIATE or (confirmed and not waiting):
                    for w in waiting:
                        self._settled.add((name, cid, w.directive.epoch))
                        superseded.append(Superseded(w.directive, d))
                    waiting = []
                    self._settled.add((name, cid, d.epoch))
                    self._epochs[(name, cid)] = d.epoch
                    if d.kind is DirectiveKind.STOP and not confirmed:
                        view.unfinal_stops.append(d)  # held as a pause until final
                    else:
                        self._states[(name, cid)] = d.state
                    if d.pause_parent and d.parent_id is not None:
                        parent = self.resolve(d.parent_id)
                        self._states[(name, parent)] = strictest(
                            [self._states.get((name, parent), CampaignState.RUNNING), PAUSED]
                        )
                    applied.append(Applied(d, p.observed_at, now, confs))
                else:
                    waiting.append(p)
            keep.extend(waiting)
        view.pending = keep

    def _finalise_stops(self, source: DirectiveSource, view: _SourceView) -> list[Directive]:
        """Stops whose block now has enough confirmations become final, if the source
        still holds them; one a reorganisation removed is dropped (its hold lifts) and
        returned."""
        waiting = []
        gone = []
        for d in view.unfinal_stops:
            if not self._final(view, d):
                waiting.append(d)
            elif source.still_issued(d):
                self._states[(source.name, d.campaign_id)] = CampaignState.STOPPED
                log.info("stop final", extra={"source": source.name, "campaign": d.campaign_id})
            else:
                gone.append(d)
                log.error(
                    "a stop left the chain before it was final; its hold lifts",
                    extra={"source": source.name, "campaign": d.campaign_id, "ref": d.ref},
                )
        view.unfinal_stops = waiting
        return gone

    def final_stop(self, campaign_id: str) -> bool:
        """Whether a source's stop of the campaign is final (the campaign is over)."""
        return any(
            self._states.get((name, key)) is CampaignState.STOPPED
            for name in self._views
            for key in (campaign_id, ALL_CAMPAIGNS)
        )


def _with_campaign(d: Directive, campaign_id: str) -> Directive:
    return replace(d, campaign_id=campaign_id)
