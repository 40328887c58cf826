"""What governance leaves in the node's store, read back: the `/gov` view of campaigns,
the audit that no experiment started while paused, and on-chain acknowledgements.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from attestation.canonical import json_sha256
from governance.directives import ALL_CAMPAIGNS
from governance.errors import GovernanceError
from node.errors import AsiNodeError, NotFoundError
from node.store import DirectiveLedger, DirectiveRow, Store

log = logging.getLogger(__name__)


class StoreGovernanceView:
    """`governance.api.GovernanceView` over the node's store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ledger = DirectiveLedger(store)

    def _describe(self, cid: str) -> dict[str, Any]:
        camp = self.store.get_campaign(cid)
        directives = self.ledger.list_applied(camp.id)
        epochs: dict[str, int] = {}
        for d in directives:
            if d.campaign_id == camp.id:
                epochs[d.source] = max(epochs.get(d.source, 0), d.epoch)
        return {
            "id": camp.id,
            "name": camp.name,
            "status": camp.status,
            "config_hash": camp.config_hash,
            "epochs": epochs,
            "parent": camp.parent_campaign_id,
            "fork_position": camp.fork_tree_size,
            "children": [c.id for c in self.ledger.children(camp.id)],
            "directives": [d.as_json() for d in directives],
        }

    def campaigns(self) -> list[dict[str, Any]]:
        return [self._describe(c.id) for c in self.store.list_campaigns()]

    def campaign(self, campaign_ref: str) -> dict[str, Any] | None:
        try:
            return self._describe(campaign_ref)
        except NotFoundError:
            return None

    def unacknowledged(self) -> list[dict[str, Any]]:
        return [d.as_json() for d in self.ledger.unacknowledged()]


@dataclass(frozen=True)
class PausedStart:
    """An experiment that started while governance had its campaign paused or stopped."""

    experiment_id: str
    seq: int
    started_at: str
    directive: str  # the pause in force: "source epoch kind"


def paused_starts(store: Store, campaign_id: str) -> list[PausedStart]:
    """Check that no experiment of the campaign started while it was paused.

    The store's applied directives are replayed as the log audit replays the log's
    (`attestation.records.holding`): each source holds the campaign (or every campaign)
    from a pause or stop until that source resumes it, a stop is final, and a fork that
    pauses its parent holds the parent. An experiment that ran (done or failed) with its
    start while held is reported. Experiments stopped by a pause are requeued with no
    start time, so they do not count.
    """
    from attestation.records import AppliedDirective, holding
    from attestation.schema import DirectiveKind, ExperimentStatus

    campaign = store.get_campaign(campaign_id)
    rows = DirectiveLedger(store).list_applied()
    undone = [
        AppliedDirective(
            d.id, d.source, d.campaign_id, d.epoch, d.kind, at, None, d.ref, undone=True
        )
        for d in rows
        if (at := _time(d.detail.get("undone_at"))) is not None
    ]
    timeline = sorted(
        [
            *(
                AppliedDirective(
                    d.id,
                    d.source,
                    d.campaign_id,
                    d.epoch,
                    d.kind,
                    d.applied_at,
                    d.detail.get("parent")
                    if d.kind is DirectiveKind.FORK and d.detail.get("pause_parent")
                    else None,
                    d.ref,
                    superseded=d.detail.get("superseded_by") is not None,
                    held_child=d.kind is DirectiveKind.FORK and bool(d.detail.get("child_paused")),
                )
                for d in rows
            ),
            *undone,
        ],
        key=lambda d: (d.applied_at, d.index),
    )
    found = []
    for exp in store.list_experiments(campaign.id):
        if exp.started_at is None or exp.status not in (
            ExperimentStatus.DONE,
            ExperimentStatus.FAILED,
        ):
            continue
        held = holding(timeline, campaign.id, exp.started_at)
        if held is not None:
            what = f"{held.source} epoch {held.epoch} {held.kind}"
            found.append(PausedStart(exp.id, exp.seq, exp.started_at.isoformat(), what))
    return found


def _paused_parent(d: DirectiveRow) -> str | None:
    """The parent a fork directive pauses, if it does."""
    pauses = d.kind == "fork" and d.detail.get("pause_parent") is True
    return d.detail.get("parent") if pauses else None


class DirectiveAcker(Protocol):
    """Sends `CampaignController.acknowledge(campaignId, epoch, logEntryHash)`; returns the
    transaction hash. The chain client (`governance.relay.ChainAcker`) implements it; it raises on
    failure."""

    def acknowledge(self, campaign_key: bytes, epoch: int, entry_hash: bytes) -> str: ...


@dataclass(frozen=True)
class EntryCommitment:
    """What an acknowledgement commits to, and a phrase saying which it is."""

    hash: bytes
    what: str


def directive_json_hash(row: DirectiveRow) -> bytes:
    """SHA-256 of the applied directive's canonical JSON (source, campaign, epoch, kind,
    ref): the fallback commitment of a directive that is not in the node's log."""
    body = {
        "source": row.source,
        "campaign": row.campaign_id,
        "epoch": row.epoch,
        "kind": row.kind,
        "ref": row.ref,
    }
    return json_sha256(body)


def entry_commitment(store: Store, row: DirectiveRow) -> EntryCommitment:
    """The hash `acknowledge(campaign, epoch, logEntryHash)` sends for `row`.

    It is the RFC 6962 Merkle leaf hash of the directive's log entry (SHA-256 of 0x00 and
    the DSSE envelope bytes): the very value an inclusion proof starts from, so an auditor
    holding an anchored root proves the acknowledged entry is in the log without the
    envelope's encoding mattering. A directive with no log entry (a node run without a
    log, or a row whose entry is missing from the log table) falls back to
    `directive_json_hash`, with a warning, and the row's detail says which was sent.
    """
    from node.store import LogStore
    from node.tlog.records import DIRECTIVE_KIND, directive_subject

    index = row.detail.get("log_index")
    if isinstance(index, int):
        found = LogStore(store).entries(index, index + 1)
        subject = directive_subject(row.source, row.campaign_id, row.epoch)
        if found and found[0].kind == DIRECTIVE_KIND and found[0].subject == subject:
            return EntryCommitment(found[0].leaf_hash, f"log entry {index} (Merkle leaf hash)")
        log.warning(
            "directive's log entry missing; acknowledging its JSON hash",
            extra={"directive": row.id, "log_index": index},
        )
        return EntryCommitment(
            directive_json_hash(row), f"directive JSON (log entry {index} missing)"
        )
    return EntryCommitment(directive_json_hash(row), "directive JSON (not in the log)")


def acknowledge_pending(store: Store, acker: DirectiveAcker, source: str) -> list[DirectiveRow]:
    """Acknowledge `source`'s applied, unacknowledged campaign directives, oldest first.

    Each commits to the directive's log entry (`entry_commitment`); the row's detail
    keeps the hash sent and what it is. Stops at the first failure (the controller wants
    epochs in order; the rest wait for the next call). All-campaign directives have no
    campaign epoch to acknowledge.
    """
    from governance.directives import campaign_key

    ledger = DirectiveLedger(store)
    done = []
    for row in ledger.unacknowledged(source):
        if row.campaign_id == ALL_CAMPAIGNS or row.detail.get("unknown_campaign"):
            continue
        commitment = entry_commitment(store, row)
        try:
            tx = acker.acknowledge(campaign_key(row.campaign_id), row.epoch, commitment.hash)
        except (AsiNodeError, GovernanceError, OSError) as exc:
            log.warning(
                "acknowledgement failed; retried later",
                extra={"directive": row.id, "error": str(exc)},
            )
            break
        sent = {"ack_entry_hash": "0x" + commitment.hash.hex(), "ack_commits_to": commitment.what}
        done.append(ledger.mark_acknowledged(row.id, tx, sent))
    return done


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
