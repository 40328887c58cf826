"""What the log's statements say, and the rules an auditor holds them to.

Two predicate types so far: experiment records and node events (start, stop). The rules
tie each experiment record to a campaign the node declared in the same log, with the
same config hash, at most once, and to the node key that signed it: a record copied
from another campaign or another log fails here even though its signature is good.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from attestation.errors import VerificationError

EXPERIMENT_PREDICATE = "https://asi-node.dev/ExperimentRecord/v1"
RECORD_VERSIONS = (1,)
EVENT_PREDICATE = "https://asi-node.dev/NodeEvent/v1"
KNOWN_PREDICATES = (EXPERIMENT_PREDICATE, EVENT_PREDICATE)
# Node events that open a campaign's run and so declare its config hash.
CAMPAIGN_START = "campaign_start"

STEP = "record rules"


@dataclass
class RecordSummary:
    """What the records in a verified log amount to."""

    campaigns: dict[str, str] = field(default_factory=dict)  # id -> config hash
    experiments: dict[str, int] = field(default_factory=dict)  # campaign id -> records
    events: dict[str, int] = field(default_factory=dict)  # event kind -> count


def check_records(statements: Iterable[tuple[int, dict[str, Any]]], node_id: str) -> RecordSummary:
    """Apply the rules to (log index, statement) pairs in log order; VerificationError
    names the first entry that breaks one."""
    summary = RecordSummary()
    seen: set[tuple[str, str]] = set()
    for index, stmt in statements:
        ptype = stmt["predicateType"]
        pred = stmt["predicate"]
        where = f"entry {index}"
        if ptype not in KNOWN_PREDICATES:
            raise VerificationError(STEP, f"{where} has unknown record type {ptype!r}")
        if pred.get("node_id") != node_id:
            raise VerificationError(
                STEP, f"{where} names node {pred.get('node_id')!r}, not the signer {node_id}"
            )
        cid = pred.get("campaign_id")
        if ptype == EVENT_PREDICATE:
            kind = pred.get("event")
            if not isinstance(kind, str):
                raise VerificationError(STEP, f"{where} is a node event without a kind")
            summary.events[kind] = summary.events.get(kind, 0) + 1
            if kind == CAMPAIGN_START:
                chash = pred.get("config_hash")
                if not isinstance(cid, str) or not isinstance(chash, str):
                    raise VerificationError(STEP, f"{where} starts a campaign without id or hash")
                known = summary.campaigns.setdefault(cid, chash)
                if known != chash:
                    raise VerificationError(
                        STEP, f"{where} restarts campaign {cid} with another config hash"
                    )
            continue
        if pred.get("record_version") not in RECORD_VERSIONS:
            raise VerificationError(
                STEP,
                f"{where} is an experiment record of version {pred.get('record_version')!r}; "
                f"this auditor reads versions {RECORD_VERSIONS}: upgrade asi-node",
            )
        if not isinstance(cid, str) or cid not in summary.campaigns:
            raise VerificationError(
                STEP,
                f"{where} is a record of campaign {cid!r}, which this log never started: "
                "replayed from another campaign or log",
            )
        if pred.get("config_hash") != summary.campaigns[cid]:
            raise VerificationError(
                STEP, f"{where} carries another config hash than campaign {cid} was started with"
            )
        exp = pred.get("experiment_id")
        if not isinstance(exp, str) or (cid, exp) in seen:
            raise VerificationError(
                STEP, f"{where} records experiment {exp!r} of {cid} a second time (replayed)"
            )
        seen.add((cid, exp))
        digest = str(pred.get("code_digest", "")).removeprefix("sha256:")
        if stmt["subject"][0]["digest"].get("sha256") != digest:
            raise VerificationError(STEP, f"{where}: the subject is not the record's code digest")
        summary.experiments[cid] = summary.experiments.get(cid, 0) + 1
    return summary
