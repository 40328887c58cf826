"""One sync of a followed peer: its log audited from the kept state on, as `asi-node
audit URL --state` does, then its new finished experiments of the campaigns this node
also runs imported as `peer` candidates.

With anchors to check (`node.network.anchors`: a chain is configured), a sync reads the
peer's log only up to its newest checkpoint anchored there, within
`max_entries_per_sync`, and that checkpoint's root must be the anchored one; a peer
nothing is anchored for yet is read once something is. A first sync reads the bundle
only up to that checkpoint too.

Fails closed: a peer whose log fails a check is quarantined with the step and detail,
and nothing of that sync is imported nor kept; one whose signed history contradicts the
kept checkpoint (another root at a size it extends, or a log shorter than the kept one)
is flagged, and refused until an operator forgets it; one that cannot be reached is
retried after a doubling wait. An imported candidate is queued like any proposal: its
code runs here through the screen and the sandbox, and the peer's fitness is kept as
its provenance, never as this node's result. With a campaign's `replication` section,
the best share of each sync's imports run on its replication seeds instead
(`node.network.replication` judges them once scored). A peer's record that `replicates`
an entry of this node's own log (its leaf hash checked here) is kept as a claim, a
`replicated_by` event of the campaign that ran the entry's experiment; one that replicates
a third node's record is kept too, and counts once that record is imported here.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from attestation.audit import (
    ANCHOR_STEP,
    AuditReport,
    LogState,
    StatementSink,
    StepResult,
    VerifiedLog,
    audit_with,
)
from attestation.audit import verify_entries as verify_log
from attestation.bundle import BundleHead, ConsistencyItem, EntryText, read_bundle
from attestation.errors import FormatError, VerificationError
from attestation.merkle import leaf_hash
from attestation.note import Checkpoint, split_note
from attestation.schema import (
    CampaignStatus,
    CandidateOrigin,
    ExperimentRole,
    ExperimentStatement,
    ExperimentStatus,
    Replicates,
    Statement,
)
from loop.proposal import Proposal, code_digest
from node.errors import AsiNodeError, NotFoundError
from node.network.anchors import AnchorReadError, PeerAnchors
from node.network.peers import PeerBook, PeerState, PeerStatus, PendingImport, peer_url
from node.network.provenance import CLAIM_EVENT, IMPORT_EVENT
from node.settings import NetworkSettings
from node.store import CampaignRow, ExperimentRow, Store
from node.tlog.audit_source import (
    AuditSourceError,
    HttpLog,
    increment_from,
    latest_origin,
    open_source,
)
from node.tlog.log import LogView, SignedCheckpoint, log_id, origin_for

log = logging.getLogger(__name__)

# With a kept state, these failures are the peer's key contradicting what it signed
# before: its entries and checkpoints are signed (steps 3 and 5 passed), yet the roots
# do not extend the kept checkpoint, or its log is shorter than the kept one.
REWRITE_STEP = "checkpoint roots"
ROLLBACK_STEP, ROLLBACK_DETAIL = "checkpoint signatures", "truncated or rolled back"
ANSWER_SLACK = 64 * 1024  # an experiment's answer holds more than its code


class _Refused(AsiNodeError):
    """A peer's answer failed a check after its log passed (its code, its shape, its key).

    `Follower.sync` quarantines the peer with this reason; nothing else should see it.
    """


@dataclass(frozen=True)
class SyncResult:
    url: str
    state: PeerState
    new_entries: int = 0
    size: int = 0
    imported: int = 0
    pending: int = 0
    reason: str = ""
    retry_in_s: float | None = None

    def line(self) -> str:
        if self.state is PeerState.OK and self.reason:
            return f"{self.url}: {self.reason}"
        if self.state is PeerState.OK:
            more = f", {self.pending} pending" if self.pending else ""
            return (
                f"{self.url}: verified {self.new_entries} new entries (size {self.size}); "
                f"imported {self.imported}{more}"
            )
        if self.state is PeerState.UNREACHABLE and self.retry_in_s is None:
            return f"{self.url}: not synced: {self.reason}"
        if self.state is PeerState.UNREACHABLE:
            wait = self.retry_in_s or 0.0
            return f"{self.url}: unreachable ({self.reason}), retry in {wait:.0f} s"
        if self.state is PeerState.FLAGGED:
            return (
                f"{self.url}: flagged: {self.reason} (refused until "
                f"`asi-node network forget {self.url}`)"
            )
        return f"{self.url}: {self.state}: {self.reason}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LogPin:
    """The log a peer must serve, as the controller's directory lists it: the node's
    address and `chain_log_id(node, log name)`, so the peer's key is the one the node
    anchors under, not merely the first one seen."""

    node: str
    chain_log_id: bytes

    def matches(self, origin: str) -> bool:
        from governance.chain import chain_log_id  # web3: only for directory peers

        return chain_log_id(self.node, log_id(origin)) == self.chain_log_id


class Follower:
    """Syncs the peers of `settings` into `store`, keeping their state in `book`."""

    def __init__(
        self,
        store: Store,
        book: PeerBook,
        settings: NetworkSettings,
        now: Callable[[], datetime] = _utcnow,
        log_store: Store | None = None,
        anchors: PeerAnchors | None = None,
    ) -> None:
        self.store = store
        self.book = book
        self.settings = settings
        self.now = now
        self.own = LogView(log_store or store)  # this node's log, where claims must point
        self.anchors = anchors  # None: peers' chain anchors are not checked

    def sync_all(self, force: bool = False) -> list[SyncResult]:
        """One sync of every configured peer, in turn."""
        return [self.sync(url, force=force) for url in self.settings.peers]

    def sync(self, url: str, force: bool = False, pin: LogPin | None = None) -> SyncResult:
        """One sync of the peer at `url`; with `force`, an unreachable peer is tried
        before its retry time; with `pin`, a peer serving another log than the pinned
        one is quarantined. A flagged peer is refused."""
        url = peer_url(url)
        status = self.book.status(url)
        now = self.now()
        if status.state is PeerState.FLAGGED:
            return SyncResult(url, status.state, size=status.size, reason=status.reason)
        if not force and status.retry_at is not None and now < status.retry_at:
            wait = (status.retry_at - now).total_seconds()
            return SyncResult(url, status.state, reason=status.reason, retry_in_s=wait)
        try:
            return self._sync(url, status, now, pin)
        except (AuditSourceError, OSError, http.client.HTTPException) as exc:
            return self._unreachable(status, now, str(exc))
        except _Refused as exc:
            return self._set(status, now, PeerState.QUARANTINED, str(exc))
        except AnchorReadError as exc:  # this node's chain, not the peer: nothing kept
            return SyncResult(url, PeerState.UNREACHABLE, size=status.size, reason=str(exc))

    def _sync(self, url: str, status: PeerStatus, now: datetime, pin: LogPin | None) -> SyncResult:
        timeout = self.settings.timeout_s
        origin = latest_origin(url, timeout)
        if pin is not None and not pin.matches(origin):
            raise _Refused(
                f"it serves the log {origin!r}, not the log the controller's directory "
                f"lists for node {pin.node}"
            )
        if status.origin is not None and origin != status.origin:
            raise _Refused(
                f"it now serves the log {origin!r}, not {status.origin!r} followed before; "
                f"`asi-node network forget {url}` follows the new log from scratch"
            )
        states = self.book.states(url)
        kept = states.load(origin)
        base = kept.checkpoint.size if kept is not None else 0
        anchored: Mapping[int, bytes] | None = None  # None: not checked
        if self.anchors is not None:
            anchored = self.anchors.of(origin, pin.node if pin is not None else None)
            if kept is None and not anchored:
                on = self.anchors.label
                return SyncResult(
                    url,
                    PeerState.OK,
                    reason=f"nothing of its log is anchored on {on} yet; read once it is",
                )
        most = self.settings.max_imports_per_sync + self.settings.max_pending_imports
        shared = self._shared()  # read once a sync: the collector, the batch, the claims
        seen = _Collected(set(shared), most)
        report = self._audit(url, kept, seen.add, anchored)
        failed = report.failure
        verified = report.log
        if not report.ok or failed is not None or verified is None or verified.state is None:
            reason = _reason(failed)
            state = PeerState.QUARANTINED
            if kept is not None and failed is not None and _rewrites(failed):
                state = PeerState.FLAGGED
            log.warning("peer failed its audit", extra={"peer": url, "state": state})
            return self._set(status, now, state, reason)
        off = _off_anchor(verified, anchored, base, len(report.steps) + 1)
        if off is not None:
            # The peer signed one root and the chain holds another: a history rewritten
            # after it was anchored, flagged when the directory's node anchored it.
            state = PeerState.FLAGGED if pin is not None else PeerState.QUARANTINED
            return self._set(status, now, state, off)
        if status.key_fingerprint not in (None, verified.key_fingerprint):
            raise _Refused(
                f"its log is signed by {verified.key_fingerprint}, not by "
                f"{status.key_fingerprint} seen before"
            )
        queue = [*status.pending, *seen.imports]
        batch, rest = self._batch(queue, shared)
        codes = [self._code(url, item) for item, _ in batch]  # every one checked first
        chosen = _share(batch)
        imported = 0
        for (item, targets), code in zip(batch, codes, strict=True):
            imported += self._import(url, verified, item, code, targets, item in chosen)
        self._claims(url, verified, seen.claims, report.attested, shared)
        states.save(verified.state, kept)
        keep = self.settings.max_pending_imports
        self.book.save(
            status.model_copy(
                update={
                    "state": PeerState.OK,
                    "reason": "",
                    "origin": origin,
                    "key_fingerprint": verified.key_fingerprint,
                    "size": verified.size,
                    "failures": 0,
                    "retry_at": None,
                    "last_sync_at": now,
                    "imported": status.imported + imported,
                    "dropped": status.dropped + max(0, len(rest) - keep) + seen.dropped,
                    "pending": tuple(rest[:keep]),
                }
            )
        )
        log.info("peer synced", extra={"peer": url, "size": verified.size, "imported": imported})
        return SyncResult(url, PeerState.OK, verified.size - base, verified.size, imported,
                          min(len(rest), keep))  # fmt: skip

    def _audit(
        self,
        url: str,
        kept: LogState | None,
        collect: StatementSink,
        anchored: Mapping[int, bytes] | None,
    ) -> AuditReport:
        """The audit of the peer's log from the kept state, else from its start, up to a
        checkpoint at most about `max_entries_per_sync` entries on (one of the sizes
        `anchored`, when given); `collect` gets each statement as it is read (no
        statement is kept otherwise)."""
        timeout = self.settings.timeout_s
        most = self.settings.max_entries_per_sync
        if kept is not None:
            state = kept
            reader = _NotesOnce(HttpLog(url, timeout))

            def verify(passed: Any) -> VerifiedLog:
                sizes = (n for n, _ in reader.checkpoint_notes())
                upto = _upto(sizes, state.checkpoint.size, most, anchored)
                head, entries = increment_from(reader, state, upto)
                return verify_log(head, entries, None, passed, resume=state, on_statement=collect)

            return audit_with(url, verify)
        with open_source(url, timeout, lines=True) as stream:

            def verify_first(passed: Any) -> VerifiedLog:
                try:
                    head, entries = _prefix(*read_bundle(stream), most, anchored)
                except FormatError as exc:
                    raise VerificationError("bundle format", str(exc)) from None
                return verify_log(head, entries, None, passed, on_statement=collect)

            return audit_with(url, verify_first)

    def _shared(self) -> dict[str, list[CampaignRow]]:
        """This node's campaigns that may take imports, by config hash."""
        out: dict[str, list[CampaignRow]] = {}
        for camp in self.store.list_campaigns():
            if camp.status is not CampaignStatus.STOPPED:
                out.setdefault(camp.config_hash, []).append(camp)
        return out

    def _batch(
        self, queue: list[PendingImport], shared: dict[str, list[CampaignRow]]
    ) -> tuple[list[tuple[PendingImport, list[CampaignRow]]], list[PendingImport]]:
        """The imports of this sync (each with the campaigns of `shared` lacking its code),
        at most `max_imports_per_sync`, and the rest for later; code already here is
        skipped."""
        have = {
            camp.id: {c.digest for c in self.store.list_candidates(camp.id)}
            for camps in shared.values()
            for camp in camps
        }
        batch: list[tuple[PendingImport, list[CampaignRow]]] = []
        rest: list[PendingImport] = []
        for item in queue:
            targets = [
                c for c in shared.get(item.config_hash, []) if item.code_digest not in have[c.id]
            ]
            if not targets:
                continue
            if len(batch) >= self.settings.max_imports_per_sync:
                rest.append(item)
                continue
            batch.append((item, targets))
            for camp in targets:
                have[camp.id].add(item.code_digest)
        return batch, rest

    def _code(self, url: str, item: PendingImport) -> str:
        """The code of the peer's experiment, checked against its record's digest."""
        where = f"experiment {item.experiment_id} (entry {item.leaf_index})"
        address = f"{url}/experiments/{urllib.parse.quote(item.experiment_id, safe='')}"
        limit = self.settings.max_code_bytes + ANSWER_SLACK
        try:
            with urllib.request.urlopen(address, timeout=self.settings.timeout_s) as resp:
                body = resp.read(limit + 1)
        except urllib.error.HTTPError as exc:
            raise AuditSourceError(f"{address} answered HTTP {exc.code}: {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise AuditSourceError(f"cannot fetch {address}: {exc.reason}") from None
        if len(body) > limit:
            raise _Refused(f"{where}: its answer is over {limit} bytes; nothing imported")
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        code = answer.get("code") if isinstance(answer, dict) else None
        if not isinstance(code, str):
            raise _Refused(f"{where}: the peer did not answer its code; nothing imported")
        if len(code.encode()) > self.settings.max_code_bytes:
            raise _Refused(f"{where}: its code is over max_code_bytes; nothing imported")
        served = code_digest(code)
        if served != item.code_digest:
            raise _Refused(
                f"{where}: the code served hashes to {served}, its record says "
                f"{item.code_digest}; nothing imported"
            )
        return code

    def _import(
        self,
        url: str,
        verified: VerifiedLog,
        item: PendingImport,
        code: str,
        targets: list[CampaignRow],
        replicate: bool = False,
    ) -> int:
        """`item` as a `peer` candidate of each campaign in `targets`, its first run queued
        on the campaign's seed (with `replicate`, its runs on the replication seeds), its
        provenance a store event beside it."""
        from node.campaign.config import CampaignConfig  # the research stack: when used

        proposal = Proposal(
            name=item.name,
            motivation=(
                f"imported from peer {url} (its experiment {item.experiment_id}, log entry "
                f"{item.leaf_index}): {item.motivation}"
            ),
            code=code,
            origin="peer",
        )
        for camp in targets:
            cand = self.store.add_candidate(camp.id, proposal)
            config = CampaignConfig.model_validate(camp.config)
            rule = config.replication
            seeds = rule.seeds if replicate and rule is not None else (config.seed,)
            runs = [
                self.store.enqueue_experiment(
                    camp.id,
                    cand.id,
                    ExperimentRole.CANDIDATE if i == 0 else ExperimentRole.RERUN,
                    seed,
                    once=True,
                )
                for i, seed in enumerate(seeds)
            ]
            self.store.add_event(
                camp.id,
                IMPORT_EVENT,
                {
                    "candidate_id": cand.id,
                    "experiment_id": runs[0].id,
                    "peer": url,
                    "log_origin": verified.origin,
                    "key_fingerprint": verified.key_fingerprint,
                    "leaf_index": item.leaf_index,
                    "leaf_hash": item.leaf_hash,
                    "peer_campaign_id": item.campaign_id,
                    "peer_experiment_id": item.experiment_id,
                    "config_hash": item.config_hash,
                    "code_digest": item.code_digest,
                    "peer_fitness": item.fitness,
                    "replicate": replicate and rule is not None,
                    "seeds": list(seeds),
                },
            )
        return 1

    def _claims(
        self,
        url: str,
        verified: VerifiedLog,
        claims: list[_Claim],
        attested: bool,
        shared: dict[str, list[CampaignRow]],
    ) -> int:
        """Keep the peer's records that replicate another node's record, each a
        `replicated_by` event: one of this node's own entries (a claim naming an entry
        this log does not hold at that index with that leaf hash is not kept), or a
        record of a third node's log, kept for the campaigns sharing its config, where
        the leaderboard matches it to the import of that record (by log and leaf hash).
        A claim on a record of the claimant's own log, or made under this node's key,
        is not kept. Each says whether the peer's log carries verified TEE evidence
        (`attested`), for campaigns whose rule counts only attested replications."""
        checkpoint = self.own.latest_checkpoint()
        own = checkpoint.origin if checkpoint is not None else None
        if origin_for(verified.key_fingerprint) == own:
            return 0
        kept = 0
        for c in claims:
            link = c.link
            if link.log_origin == verified.origin:
                continue
            claim = {
                "leaf_index": link.leaf_index,
                "leaf_hash": link.leaf_hash,
                "record_origin": link.log_origin,
                "stated_fitness": link.fitness,
                "peer": url,
                "node_id": c.node_id,
                "key_fingerprint": verified.key_fingerprint,
                "log_origin": verified.origin,
                "peer_leaf_index": c.index,
                "peer_leaf_hash": c.leaf,
                "peer_experiment_id": c.experiment_id,
                "seed": c.seed,
                "status": c.status,
                "fitness": c.fitness,
                "attested": attested,
            }
            if link.log_origin != own:
                for camp in shared.get(c.config_hash, []):
                    self.store.add_event(camp.id, CLAIM_EVENT, {**claim, "experiment_id": None})
                    kept += 1
                continue
            ours = self._own_entry(url, link, checkpoint)
            if ours is not None:
                self.store.add_event(
                    ours.campaign_id, CLAIM_EVENT, {**claim, "experiment_id": ours.id}
                )
                kept += 1
        return kept

    def _own_entry(
        self, url: str, link: Replicates, checkpoint: SignedCheckpoint | None
    ) -> ExperimentRow | None:
        """The experiment of this node's log entry a peer's record claims to replicate
        (the log as of `checkpoint`, its latest); None if the log holds no such entry
        (logged) or its campaign is in another store."""
        from node.tlog.records import EXPERIMENT_KIND  # the research stack: when used

        if checkpoint is None or link.leaf_index >= checkpoint.tree_size:
            return None
        [entry] = self.own.entries(link.leaf_index, link.leaf_index + 1)
        if (
            entry.kind != EXPERIMENT_KIND
            or entry.subject != link.experiment_id
            or leaf_hash(entry.envelope).hex() != link.leaf_hash
        ):
            log.warning("peer claims a record we never logged", extra={"peer": url})
            return None
        try:
            return self.store.get_experiment(link.experiment_id)
        except NotFoundError:
            return None  # logged by this node, its campaign in another store

    def _unreachable(self, status: PeerStatus, now: datetime, reason: str) -> SyncResult:
        failures = status.failures + 1
        wait = min(
            self.settings.retry_base_s * 2 ** min(failures - 1, 30), self.settings.retry_max_s
        )
        log.info("peer unreachable", extra={"peer": status.url, "retry_in_s": wait})
        self.book.save(
            status.model_copy(
                update={
                    "state": PeerState.UNREACHABLE,
                    "reason": reason,
                    "failures": failures,
                    "retry_at": now + timedelta(seconds=wait),
                    "last_sync_at": now,
                }
            )
        )
        return SyncResult(status.url, PeerState.UNREACHABLE, reason=reason, retry_in_s=wait)

    def _set(self, status: PeerStatus, now: datetime, state: PeerState, reason: str) -> SyncResult:
        """Quarantine or flag the peer: its kept audit state and pending imports stay."""
        self.book.save(
            status.model_copy(
                update={
                    "state": state,
                    "reason": reason,
                    "failures": 0,
                    "retry_at": None,
                    "last_sync_at": now,
                }
            )
        )
        return SyncResult(status.url, state, size=status.size, reason=reason)


@dataclass(frozen=True)
class _Claim:
    """What a sync keeps of a peer's record that replicates another node's record."""

    index: int
    leaf: str  # hex
    link: Replicates
    node_id: str
    experiment_id: str
    config_hash: str
    seed: int
    status: ExperimentStatus
    fitness: float | None


class _Collected:
    """What a sync keeps of a peer's entries as its audit reads them, and nothing else of
    the log: the records it may import (its own finished experiments of the config
    hashes in `shared`; beyond `most`, only counted as dropped) and the records that
    replicate another node's record. It counts once the audit passed."""

    def __init__(self, shared: set[str], most: int) -> None:
        self.shared = shared
        self.most = most
        self.imports: list[PendingImport] = []
        self.claims: list[_Claim] = []
        self.dropped = 0

    def add(self, index: int, stmt: Statement, leaf: bytes) -> None:
        if not isinstance(stmt, ExperimentStatement):
            return
        r = stmt.predicate
        fitness = r.fitness.value if r.fitness is not None else None
        if r.replicates is not None:
            claim = _Claim(
                index,
                leaf.hex(),
                r.replicates,
                r.node_id,
                r.experiment_id,
                r.config_hash,
                r.seeds.train,
                r.status,
                fitness,
            )
            self.claims.append(claim)
        if (
            r.status is not ExperimentStatus.DONE
            or r.candidate.origin in (CandidateOrigin.BASELINE, CandidateOrigin.PEER)
            or r.config_hash not in self.shared
        ):
            return
        if len(self.imports) >= self.most:
            self.dropped += 1
            return
        self.imports.append(
            PendingImport(
                leaf_index=index,
                leaf_hash=leaf.hex(),
                experiment_id=r.experiment_id,
                campaign_id=r.campaign_id,
                config_hash=r.config_hash,
                code_digest=r.code_digest,
                name=r.candidate.name,
                motivation=r.motivation,
                fitness=fitness,
            )
        )


def _share(batch: list[tuple[PendingImport, list[CampaignRow]]]) -> list[PendingImport]:
    """The imports of a sync that are replicated: per config, the best `share` of those
    whose records state a fitness (rounded up), by that fitness."""
    from node.campaign.config import CampaignConfig  # the research stack: when used

    by_config: dict[str, list[PendingImport]] = {}
    shares: dict[str, float] = {}
    for item, targets in batch:
        rule = CampaignConfig.model_validate(targets[0].config).replication
        if rule is not None and item.fitness is not None:
            by_config.setdefault(item.config_hash, []).append(item)
            shares[item.config_hash] = rule.share
    chosen: list[PendingImport] = []
    for config_hash, items in by_config.items():
        items.sort(key=lambda i: i.fitness or 0.0, reverse=True)
        chosen += items[: math.ceil(shares[config_hash] * len(items))]
    return chosen


def _off_anchor(
    verified: VerifiedLog, anchored: Mapping[int, bytes] | None, base: int, step: int
) -> str | None:
    """Why the newly verified checkpoint is not the one the chain anchored (as audit
    step `step`); None when it is, or when anchors are not checked or nothing is new."""
    if anchored is None or verified.size <= base:
        return None
    chain_root = anchored.get(verified.size)
    if chain_root == verified.root_hash:
        return None
    shown = "nothing" if chain_root is None else f"0x{chain_root.hex()}"
    return (
        f"step {step} ({ANCHOR_STEP}) failed: its checkpoint of size {verified.size} has "
        f"root 0x{verified.root_hash.hex()}, the chain anchored {shown}"
    )


def _reason(failed: StepResult | None) -> str:
    if failed is None:
        return "the audit did not pass"
    return f"step {failed.number} ({failed.name}) failed: {failed.detail}"


def _rewrites(failed: StepResult) -> bool:
    """Whether a failure from a kept state shows the peer rewrote its signed history."""
    if failed.name == REWRITE_STEP:
        return True
    return failed.name == ROLLBACK_STEP and ROLLBACK_DETAIL in failed.detail


class _NotesOnce:
    """A peer's log whose checkpoint list is read once per sync."""

    def __init__(self, log: HttpLog) -> None:
        self.log = log
        self.name = log.name
        self._notes: list[tuple[int, str]] | None = None

    def checkpoint_notes(self) -> list[tuple[int, str]]:
        if self._notes is None:
            self._notes = self.log.checkpoint_notes()
        return self._notes

    def consistency(self, first: int, second: int) -> ConsistencyItem:
        return self.log.consistency(first, second)

    def entries(self, start: int, end: int) -> Iterator[EntryText]:
        return self.log.entries(start, end)


def _upto(
    sizes: Iterable[int], size: int, most: int, anchored: Mapping[int, bytes] | None = None
) -> int:
    """Of the checkpoint `sizes` beyond `size` (those `anchored`, when given), the largest
    within `most` entries of `size`, else the first beyond it (an audit ends at a
    checkpoint); `size` when there is none."""
    newer = sorted(n for n in sizes if n > size and (anchored is None or n in anchored))
    within = [n for n in newer if n <= size + most]
    if within:
        return within[-1]
    return newer[0] if newer else size


def _prefix(
    head: BundleHead,
    entries: Iterator[EntryText],
    most: int,
    anchored: Mapping[int, bytes] | None,
) -> tuple[BundleHead, Iterator[EntryText]]:
    """A whole bundle as it stood at the checkpoint `_upto` picks from its start: its
    checkpoints and proofs up to that size, and that many entries (the rest of the
    stream is never read). FormatError when a checkpoint note cannot be read or none
    can be picked."""
    sizes = [Checkpoint.parse(split_note(note)[0]).size for note in head.checkpoints]
    upto = _upto(sizes, 0, most, anchored)
    if upto == 0:
        which = "anchored" if anchored is not None else "non-empty"
        raise FormatError(f"none of the log's {len(sizes)} checkpoints is {which}")
    cut = replace(
        head,
        checkpoints=tuple(n for n, s in zip(head.checkpoints, sizes, strict=True) if s <= upto),
        consistency=tuple(c for c in head.consistency if c.second <= upto),
        inclusion=None,  # a version 1-2 bundle's proofs are against its last checkpoint
        declared_size=upto,
    )
    return cut, itertools.islice(entries, upto)
