"""The auditor: verifies a log bundle offline, in numbered steps, failing closed.

`verify_bundle` returns a `VerifiedLog` or raises `VerificationError` naming the step
that failed; `audit` runs it and keeps what passed for a report. The checks trust
nothing in the bundle but the key they are told to trust (or, without a pin, the key the
bundle names, whose fingerprint the report shows so it can be compared out of band).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from attestation.bundle import Bundle, parse_bundle, unb64
from attestation.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, parse_statement, verify_envelope
from attestation.errors import FormatError, TrustError, VerificationError
from attestation.merkle import Tree, leaf_hash, verify_consistency, verify_inclusion
from attestation.note import Checkpoint, Ed25519NoteVerifier, NoteVerifier, open_checkpoint
from attestation.records import RecordSummary, Statement, check_records
from attestation.schema import (
    RECORD_VERSIONS,
    SCHEMA_VERSION,
    EventStatement,
    NodeEventKind,
    SchemaError,
)
from attestation.schema import parse_statement as parse_record
from attestation.tee.audit import assess
from attestation.tee.policy import Policy

STEPS = (
    "bundle format",
    "node key",
    "checkpoint signatures",
    "entry sequence",
    "envelope signatures",
    "checkpoint roots",
    "consistency proofs",
    "inclusion proofs",
    "record schema",
    "record rules",
)


@dataclass(frozen=True)
class VerifiedLog:
    origin: str
    key_fingerprint: str
    size: int
    root_hash: bytes
    checkpoints: tuple[Checkpoint, ...]
    records: RecordSummary
    public_key_hex: str = ""
    # The evidence bundle of the log's latest "attestation" node event, JSON.
    attestation_evidence: bytes | None = None
    # Each entry's typed statement (with its index) and RFC 6962 leaf hash: what the
    # checks against a chain read (the anchored history, governance.obedience_audit).
    statements: tuple[tuple[int, Statement], ...] = ()
    leaves: tuple[bytes, ...] = ()


StepSink = Callable[[str, str], None]
ATTESTATION_STEP = "attestation"


def verify_bundle(
    data: bytes,
    trusted_fingerprint: str | None = None,
    on_step: StepSink | None = None,
    seen_checkpoints: Sequence[str] = (),
) -> VerifiedLog:
    """Every check in STEPS order; `on_step(name, detail)` after each one passes.

    `seen_checkpoints` are signed checkpoint notes the auditor kept from before (or read
    from an anchor): the bundle must extend each of them, so a node cannot rewrite its
    history and drop the checkpoints that would show it."""
    done: StepSink = on_step or (lambda name, detail: None)

    # 1. The bundle parses, in a format and version this code knows.
    try:
        bundle = parse_bundle(data)
    except FormatError as exc:
        raise VerificationError(STEPS[0], str(exc)) from None
    done(STEPS[0], f"{len(bundle.entries)} entries, {len(bundle.checkpoints)} checkpoints")

    # 2. The node key parses and, if pinned, is the pinned one.
    try:
        verifier = Ed25519NoteVerifier.from_vkey(bundle.public_key)
    except FormatError as exc:
        raise VerificationError(STEPS[1], str(exc)) from None
    key = verifier.key
    if trusted_fingerprint is not None and key.fingerprint != trusted_fingerprint:
        raise VerificationError(
            STEPS[1],
            f"the bundle's key is {key.fingerprint}, not the trusted {trusted_fingerprint}",
        )
    done(STEPS[1], key.fingerprint + ("" if trusted_fingerprint else " (not pinned)"))

    # 3. Every checkpoint is signed by that key for this log, sizes never shrink.
    checkpoints = _checkpoints(bundle, [verifier])
    latest = checkpoints[-1]
    seen = []
    for i, note in enumerate(seen_checkpoints):
        try:
            cp = open_checkpoint(note, [verifier], bundle.origin, STEPS[2])
        except VerificationError as exc:
            raise VerificationError(STEPS[2], f"seen checkpoint {i}: {exc.detail}") from None
        if cp.size > latest.size:
            raise VerificationError(
                STEPS[2],
                f"seen checkpoint {i} has size {cp.size}, beyond the bundle's latest "
                f"({latest.size}): the bundle is stale or truncated",
            )
        seen.append(cp)
    extra = f", {len(seen)} seen before" if seen else ""
    done(STEPS[2], f"{len(checkpoints)} checkpoints, latest size {latest.size}{extra}")

    # 4. Entries are numbered 0..n-1 in order, and n is the latest checkpoint's size.
    for pos, entry in enumerate(bundle.entries):
        if entry.index != pos:
            raise VerificationError(
                STEPS[3], f"position {pos} holds entry {entry.index}: entries dropped or reordered"
            )
    if len(bundle.entries) != latest.size:
        raise VerificationError(
            STEPS[3],
            f"the latest checkpoint covers {latest.size} entries, the bundle holds "
            f"{len(bundle.entries)}: entries dropped or added",
        )
    done(STEPS[3], f"entries 0..{latest.size - 1} in order")

    # 5. Every envelope is signed by the node key and carries an in-toto statement.
    payloads: list[tuple[int, bytes]] = []
    tree = Tree()
    for entry in bundle.entries:
        step = STEPS[4]
        try:
            raw = unb64(entry.envelope, f"entry {entry.index}")
            envelope = Envelope.from_bytes(raw)
        except FormatError as exc:
            raise VerificationError(step, f"entry {entry.index}: {exc}") from None
        if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise VerificationError(
                step, f"entry {entry.index} has payload type {envelope.payload_type!r}"
            )
        try:
            payload = verify_envelope(envelope, key, step)
            parse_statement(payload, step)
            payloads.append((entry.index, payload))
        except VerificationError as exc:
            raise VerificationError(step, f"entry {entry.index}: {exc.detail}") from None
        tree.append(leaf_hash(raw))
    done(STEPS[4], f"{len(payloads)} envelopes signed by the node key")

    # 6. Each checkpoint's root is the root of the entries it covers (no fork).
    for cp in [*checkpoints, *seen]:
        if tree.root(cp.size) != cp.root_hash:
            raise VerificationError(
                STEPS[5],
                f"the checkpoint at size {cp.size} does not match the entries: "
                "the history was forked or rewritten",
            )
    done(STEPS[5], f"latest root {latest.root_hash.hex()}")

    # 7. Consecutive checkpoints are linked by consistency proofs.
    proofs = {(c.first, c.second): c.proof for c in bundle.consistency}
    for old, new in itertools.pairwise(checkpoints):
        if old.size == 0 or old.size == new.size:
            continue
        proof = proofs.get((old.size, new.size))
        if proof is None:
            raise VerificationError(
                STEPS[6], f"no consistency proof from size {old.size} to {new.size}"
            )
        try:
            hashes = [unb64(p, "a proof hash") for p in proof]
        except FormatError as exc:
            raise VerificationError(STEPS[6], str(exc)) from None
        try:
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, hashes)
        except VerificationError as exc:
            raise VerificationError(STEPS[6], f"{old.size} -> {new.size}: {exc.detail}") from None
    done(STEPS[6], f"{max(len(checkpoints) - 1, 0)} links")

    # 8. Every entry has an inclusion proof in the latest checkpoint.
    inclusion = {i.index: i for i in bundle.inclusion}
    for index in range(latest.size):
        item = inclusion.get(index)
        if item is None or item.tree_size != latest.size:
            raise VerificationError(
                STEPS[7], f"no inclusion proof of entry {index} in size {latest.size}"
            )
        try:
            hashes = [unb64(p, "a proof hash") for p in item.proof]
            verify_inclusion(index, latest.size, tree.leaf(index), hashes, latest.root_hash)
        except (FormatError, VerificationError) as exc:
            raise VerificationError(STEPS[7], f"entry {index}: {exc}") from None
    done(STEPS[7], f"{latest.size} entries included in the latest checkpoint")

    # 9. Every statement fits the schema of the log's records (attestation.schema).
    if bundle.schema_version > SCHEMA_VERSION:
        raise VerificationError(
            STEPS[8],
            f"the bundle's records follow schema version {bundle.schema_version}; this "
            f"auditor reads versions up to {SCHEMA_VERSION}: upgrade asi-node",
        )
    statements = [(index, _typed(index, payload)) for index, payload in payloads]
    done(STEPS[8], f"{len(statements)} statements of schema version {bundle.schema_version}")

    # 10. The records obey the log's rules (campaign, config hash, no replay, signer), and
    #     no experiment started while a logged directive held its campaign paused.
    leaves = tuple(tree.leaf(i) for i in range(latest.size))
    records = check_records(statements, key.fingerprint, leaves)
    links = (
        f"; {records.verifications} verification record(s) linked to the records they verify"
        if records.verifications
        else ""
    )
    done(
        STEPS[9],
        f"{sum(records.experiments.values())} experiment records in "
        f"{len(records.campaigns)} campaign(s); {records.directives} directive(s), "
        f"{records.starts_checked} start(s) checked: none while paused{links}",
    )
    return VerifiedLog(
        origin=bundle.origin,
        key_fingerprint=key.fingerprint,
        size=latest.size,
        root_hash=latest.root_hash,
        checkpoints=tuple(checkpoints),
        records=records,
        public_key_hex=key.raw.hex(),
        attestation_evidence=_latest_attestation(statements),
        statements=tuple(statements),
        leaves=leaves,
    )


def _typed(index: int, payload: bytes) -> Statement:
    """Entry `index`'s statement as the schema's model; VerificationError naming the field."""
    try:
        return parse_record(payload)
    except SchemaError as exc:
        detail = f"entry {index}: {exc}"
        if str(exc).startswith("predicate.record_version:"):
            version = json.loads(payload)["predicate"]["record_version"]
            versions = ", ".join(map(str, RECORD_VERSIONS))
            detail = (
                f"entry {index} is an experiment record of version {version!r}; this auditor "
                f"reads versions {versions}: upgrade asi-node"
            )
        raise VerificationError(STEPS[8], detail) from None


def _latest_attestation(statements: Sequence[tuple[int, Statement]]) -> bytes | None:
    """The evidence bundle of the last `attestation` node event, or None if there is none."""
    for _, stmt in reversed(statements):
        if (
            isinstance(stmt, EventStatement)
            and stmt.predicate.event is NodeEventKind.ATTESTATION
            and stmt.predicate.evidence is not None
        ):
            return json.dumps(stmt.predicate.evidence).encode()
    return None


def _checkpoints(bundle: Bundle, verifiers: list[NoteVerifier]) -> list[Checkpoint]:
    step = STEPS[2]
    if not bundle.checkpoints:
        raise VerificationError(step, "the bundle has no checkpoint")
    out: list[Checkpoint] = []
    for i, note in enumerate(bundle.checkpoints):
        try:
            cp = open_checkpoint(note, verifiers, bundle.origin, step)
        except VerificationError as exc:
            raise VerificationError(step, f"checkpoint {i}: {exc.detail}") from None
        if out and cp.size < out[-1].size:
            raise VerificationError(step, f"checkpoint {i} shrinks the log to size {cp.size}")
        if out and cp.size == out[-1].size and cp.root_hash != out[-1].root_hash:
            raise VerificationError(step, f"checkpoint {i}: two roots for size {cp.size} (fork)")
        out.append(cp)
    return out


@dataclass
class StepResult:
    number: int
    name: str
    ok: bool
    detail: str
    warning: bool = False  # passed, with something the reader must weigh (no TEE evidence)


@dataclass
class AuditReport:
    source: str
    ok: bool
    steps: list[StepResult] = field(default_factory=list)
    log: VerifiedLog | None = None
    attestation: dict[str, Any] | None = None

    @property
    def failure(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "ok": self.ok,
            "steps": [asdict(s) for s in self.steps],
        }
        if self.attestation is not None:
            out["attestation"] = self.attestation
        if self.log is not None:
            out["log"] = {
                "origin": self.log.origin,
                "key_fingerprint": self.log.key_fingerprint,
                "tree_size": self.log.size,
                "root_hash": self.log.root_hash.hex(),
                "checkpoints": len(self.log.checkpoints),
                "campaigns": self.log.records.campaigns,
                "experiment_records": self.log.records.experiments,
                "events": self.log.records.events,
                "directives": self.log.records.directives,
                "starts_checked": self.log.records.starts_checked,
                "verification_links": self.log.records.verifications,
            }
        return out

    def render(self) -> str:
        lines = [f"audit of {self.source}"]
        for s in self.steps:
            mark = ("WARN" if s.warning else "ok  ") if s.ok else "FAIL"
            lines.append(f"  {s.number}. [{mark}] {s.name}: {s.detail}")
        if self.ok:
            lines.append("result: PASS")
        else:
            failed = self.failure
            lines.append(f"result: FAIL at step {failed.number if failed else '?'}")
        return "\n".join(lines)


def audit(
    data: bytes,
    source: str,
    trusted_fingerprint: str | None = None,
    seen_checkpoints: Sequence[str] = (),
    require_attestation: bool = False,
) -> AuditReport:
    """Run every step; the report lists what passed and the step that failed, if any.
    A node without verified TEE evidence passes with a warning, or, with
    `require_attestation`, fails the attestation step."""
    report = AuditReport(source=source, ok=False)

    def passed(name: str, detail: str) -> None:
        report.steps.append(StepResult(STEPS.index(name) + 1, name, True, detail))

    try:
        report.log = verify_bundle(data, trusted_fingerprint, passed, seen_checkpoints)
    except VerificationError as exc:
        number = STEPS.index(exc.step) + 1 if exc.step in STEPS else len(report.steps) + 1
        report.steps.append(StepResult(number, exc.step, False, exc.detail))
        return report
    except TrustError as exc:  # a malformed value deep in a step: still a named failure
        name = STEPS[len(report.steps)]
        report.steps.append(StepResult(len(report.steps) + 1, name, False, str(exc)))
        return report
    report.ok = True
    _assess_attestation(report, report.log, require_attestation)
    return report


def _assess_attestation(report: AuditReport, log: VerifiedLog, required: bool) -> None:
    """After the log verified: its TEE evidence must bind the node key. Evidence
    that fails a step fails the audit; a node with no TEE, or no evidence, passes the log
    checks with a warning (FLAGGED), or fails when attestation is `required`."""
    finding = assess(
        log.attestation_evidence,
        log_public_key=log.public_key_hex,
        policy=Policy.default(),
        at=datetime.now(UTC),
    )
    accepted = finding.status != "rejected"
    flagged = accepted and finding.flagged  # no evidence, or no TEE: not a forgery
    ok = accepted and not (required and flagged)
    flag = f"FLAGGED {finding.status}: " if flagged else ""
    if required and flagged:
        flag = f"required but {finding.status}: "
    detail = flag + finding.detail
    warning = ok and flagged
    report.steps.append(StepResult(len(STEPS) + 1, ATTESTATION_STEP, ok, detail, warning))
    report.attestation = {
        "status": finding.status,
        "flagged": finding.flagged,
        "detail": finding.detail,
    }
    report.ok = ok
