"""Experiment records, node events and applied directives as in-toto statements.

A record holds what DESIGN section 4 lists: campaign id and config hash, sequence number,
parents, code digest (the statement's subject), motivation, screening, training config,
seeds, task spec digest, metrics, fitness, timings, environment, node id, researcher
mode, status and failure class, and (from record version 2) when it started, so an
auditor can check it against the governance directives in the same log; from version 5,
a peer candidate's record names the peer's record it re-trains (`replicates`); from
version 6, a record names the peers' records of the parents imported from them
(`peer_parents`). Each finished
experiment is recorded once; on start the node records any it finished but did not get
to record before a crash. Each governance directive the node applies is recorded once
too (`Recorder.directive`, keyed by source, campaign and epoch).

Nodes sharing one campaign database each keep their own log (`log_database_url`); an
experiment goes into exactly one of them: the node that records it first claims it in
the store (`Store.claim_record`), and the others leave it alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any

from attestation.canonical import canonical_json
from attestation.dsse import Envelope
from attestation.schema import (
    DIRECTIVE_PREDICATE,
    EVENT_PREDICATE,
    EXPERIMENT_PREDICATE,
    FINISHED_STATUSES,
    RECORD_VERSION,
    CandidateOrigin,
    DirectiveRecord,
    ExperimentRecord,
    ExperimentStatus,
    NodeEvent,
    NodeEventKind,
    statement_dict,
)
from node.campaign.config import CampaignConfig
from node.campaign.tasks import build_task, build_train
from node.network.provenance import peer_parents_of, replicates_of
from node.store import CampaignRow, ExperimentRow, Store
from node.tlog.log import LogView, NodeLog

EXPERIMENT_KIND = "experiment"
EVENT_KIND = "event"
DIRECTIVE_KIND = "directive"
# How held-out data is drawn; the key itself stays on the node.
HELDOUT_SEEDS = "secret (node-held): MQAR sets drawn per experiment; LM windows split per campaign"
_SUBJECT_CHARS = 64  # the log table's subject column


@cache
def environment() -> dict[str, Any]:
    """Package versions and the device the node runs on (no host names, no paths)."""
    versions: dict[str, str | None] = {}
    for dist in ("asi-node", "torch", "numpy", "cryptography"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "packages": versions,
        "device": {"machine": platform.machine(), "system": platform.system()},
    }


def _digest(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return "sha256:" + hashlib.sha256(canonical_json(json.loads(json.dumps(value)))).hexdigest()


def experiment_record(
    store: Store,
    campaign: CampaignRow,
    exp: ExperimentRow,
    node_id: str,
) -> ExperimentRecord:
    """The record of one finished experiment, validated by the schema the auditor uses."""
    cand = store.get_candidate(exp.candidate_id)
    config = CampaignConfig.model_validate(campaign.config)
    train = build_train(config, 1, exp.seed)
    record = {
        "record_version": RECORD_VERSION,
        "node_id": node_id,
        "campaign_id": campaign.id,
        "config_hash": campaign.config_hash,
        "experiment_id": exp.id,
        "seq": exp.seq,
        "role": exp.role,
        "candidate": {"id": cand.id, "name": cand.name, "origin": cand.origin},
        "parent_ids": list(cand.parent_ids),
        "code_digest": cand.digest,
        "motivation": cand.motivation,
        "screening": exp.screen,
        "training": exp.train,
        "train_config_digest": _digest(train),
        "seeds": {"train": exp.seed, "heldout": HELDOUT_SEEDS},
        "task_spec_digest": _digest(build_task(config)),
        "metrics": exp.metrics,
        "fitness": (
            {"version": exp.fitness_version, "value": exp.fitness}
            if exp.fitness is not None
            else None
        ),
        "timings": exp.timings,
        "environment": environment(),
        # LLM use as counts and digests only; the prompt and completion text stay on the node.
        "researcher": {
            "mode": config.researcher,
            "models": (exp.llm or {}).get("models", []),
            "llm": exp.llm,
        },
        "status": exp.status,
        "failure_class": exp.failure_class,
        "attempts": exp.attempts,
        "started_at": exp.started_at.isoformat() if exp.started_at else None,
        "finished_at": exp.finished_at.isoformat() if exp.finished_at else None,
        "verifies": _verifies(config, cand.digest),
        # A peer candidate's run names the peer's record it re-trains, from its import.
        "replicates": (
            replicates_of(store, campaign.id, cand.id)
            if cand.origin is CandidateOrigin.PEER
            else None
        ),
        # Parents imported from peers, by the records they came from.
        "peer_parents": peer_parents_of(store, campaign.id, cand.parent_ids),
    }
    # Validated as JSON, as the auditor will read it: what does not fit is not signed.
    return ExperimentRecord.model_validate_json(json.dumps(record))


def _verifies(config: CampaignConfig, digest: str) -> dict[str, str] | None:
    """In a verification stage, the source record of the candidate with this code."""
    if config.verify is None:
        return None
    for chosen in config.verify.selected:
        if chosen.code_digest == digest:
            return {
                "campaign_id": config.verify.source,
                "experiment_id": chosen.experiment_id,
                "leaf_hash": chosen.leaf_hash,
            }
    return None


def experiment_statement(
    store: Store,
    campaign: CampaignRow,
    exp: ExperimentRow,
    node_id: str,
) -> dict[str, Any]:
    """The in-toto statement recording one finished experiment."""
    record = experiment_record(store, campaign, exp, node_id)
    name = f"candidate/{record.candidate.name}"
    digest = record.code_digest.removeprefix("sha256:")
    return statement_dict(name, digest, EXPERIMENT_PREDICATE, record)


def event_statement(node_id: str, event: NodeEventKind, **fields: Any) -> dict[str, Any]:
    """A node event: its key created, a campaign's run started or stopped, TEE evidence."""
    predicate = {"node_id": node_id, "event": event, "at": datetime.now(UTC).isoformat(), **fields}
    record = NodeEvent.model_validate_json(json.dumps(predicate))
    return statement_dict(
        f"node/{node_id}", node_id.removeprefix("sha256:"), EVENT_PREDICATE, record
    )


def directive_subject(source: str, campaign_id: str, epoch: int, undone: bool = False) -> str:
    """The log subject of an applied directive: one entry per source, campaign and epoch,
    and one more if it was undone (hashed when too long for the subject column)."""
    subject = f"{source}:{campaign_id}:{epoch}" + (":undone" if undone else "")
    if len(subject) <= _SUBJECT_CHARS:
        return subject
    return "sha256:" + hashlib.sha256(subject.encode()).hexdigest()[: _SUBJECT_CHARS - 7]


def directive_statement(node_id: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The in-toto statement of an applied directive. `facts` holds source, campaign_id,
    epoch, kind, ref, height, config_hash, applied_at and, for a fork, a `fork` object;
    the subject names the directive and digests the predicate."""
    record = DirectiveRecord.model_validate_json(json.dumps({"node_id": node_id, **facts}))
    predicate = record.model_dump(mode="json")
    digest = hashlib.sha256(canonical_json(predicate)).hexdigest()
    name = f"directive/{record.source}/{record.campaign_id}/{record.epoch}"
    return statement_dict(name, digest, DIRECTIVE_PREDICATE, record)


def predicate_of(envelope: bytes) -> dict[str, Any]:
    """The predicate of a statement this node logged (its own envelope: not re-verified)."""
    stmt = json.loads(Envelope.from_bytes(envelope).payload)
    predicate: dict[str, Any] = stmt["predicate"]
    return predicate


def logged_experiments(view: LogView, tree_size: int) -> dict[str, dict[str, Any]]:
    """The experiment records among the log's first `tree_size` entries, by experiment id.

    Records are appended when experiments finish, so their order is not sequence order:
    what a log position holds is read from the log, never inferred from `seq`."""
    found = {}
    for entry in view.entries(0, tree_size):
        if entry.kind == EXPERIMENT_KIND and entry.subject is not None:
            found[entry.subject] = predicate_of(entry.envelope)
    return found


class Recorder:
    """Appends records to the node's log; the scheduler calls `experiment_final`."""

    def __init__(self, log: NodeLog, store: Store) -> None:
        self.log = log
        self.store = store

    def campaign_start(self, campaign: CampaignRow) -> None:
        self.log.append(
            EVENT_KIND,
            event_statement(
                self.log.node_id,
                NodeEventKind.CAMPAIGN_START,
                campaign_id=campaign.id,
                config_hash=campaign.config_hash,
            ),
        )
        self.catch_up(campaign)

    def campaign_stop(self, campaign: CampaignRow, reason: str) -> None:
        # Scoring is over for this run: record what finished, scored or not (a candidate
        # whose reference failed never gets a fitness, and must not go unrecorded).
        self.catch_up(campaign, unscored=True)
        self.log.append(
            EVENT_KIND,
            event_statement(
                self.log.node_id,
                NodeEventKind.CAMPAIGN_STOP,
                campaign_id=campaign.id,
                reason=reason,
            ),
        )
        self.log.checkpoint()

    def directive(self, facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Log an applied directive once; return its index and the predicate as logged.

        Keyed by source, campaign and epoch: after a crash between the append and the
        store's record, applying it again finds the earlier entry and returns that (with
        the `applied_at` it was logged with)."""
        subject = directive_subject(
            facts["source"], facts["campaign_id"], facts["epoch"], bool(facts.get("undone"))
        )
        found = self.log.db.entry_for(DIRECTIVE_KIND, subject)
        if found is not None:
            return found.index, predicate_of(found.envelope)
        stmt = directive_statement(self.log.node_id, facts)
        return self.log.append(DIRECTIVE_KIND, stmt, subject=subject), stmt["predicate"]

    def experiment_final(self, experiment_id: str) -> None:
        """Record a finished (scored or failed) experiment, once, in one node's log."""
        exp = self.store.get_experiment(experiment_id)
        if exp.status not in FINISHED_STATUSES or self.log.db.has_subject(EXPERIMENT_KIND, exp.id):
            return
        if not self.store.claim_record(exp.id, self.log.node_id):
            return  # another node sharing the campaign records it in its own log
        campaign = self.store.get_campaign(exp.campaign_id)
        stmt = experiment_statement(self.store, campaign, exp, self.log.node_id)
        self.log.append(EXPERIMENT_KIND, stmt, subject=exp.id)

    def catch_up(self, campaign: CampaignRow, unscored: bool = False) -> None:
        """Record finished experiments not yet in the log (a crash came between finishing
        and recording): failed ones, scored ones, and with `unscored` every done one."""
        recorded = self.log.db.subjects(EXPERIMENT_KIND)
        node = self.log.node_id
        for exp in sorted(self.store.list_experiments(campaign.id), key=lambda e: e.seq):
            final = exp.status in (ExperimentStatus.FAILED, ExperimentStatus.INTERRUPTED) or (
                exp.status is ExperimentStatus.DONE and (unscored or exp.fitness is not None)
            )
            if final and exp.id not in recorded and exp.recorded_by in (None, node):
                self.experiment_final(exp.id)
