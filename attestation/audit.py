"""The auditor: verifies a log bundle offline, in numbered steps, failing closed.

`verify_bundle` returns a `VerifiedLog` or raises `VerificationError` naming the step
that failed; `audit` runs it and keeps what passed for a report. The checks trust
nothing in the bundle but the key they are told to trust (or, without a pin, the key the
bundle names, whose fingerprint the report shows so it can be compared out of band).
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from attestation.bundle import BundleHead, EntryText, InclusionItem, read_bundle, unb64
from attestation.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    STATEMENT_TYPE,
    Envelope,
    pae,
    parse_statement,
    verify_envelope,
)
from attestation.errors import FormatError, TrustError, VerificationError
from attestation.keys import PublicKey, TabledKey
from attestation.merkle import (
    EMPTY_ROOT,
    CompactRange,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from attestation.note import Checkpoint, Ed25519NoteVerifier, NoteVerifier, open_checkpoint
from attestation.records import RecordRules, RecordSummary, RulesState, Statement
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
class LogState:
    """Where a verified log stands, to audit only its next entries later: the checkpoint
    (signed note and parsed), the node's verifier key, the tree's compact range at the
    checkpoint's size, the record rules' state and the latest TEE evidence."""

    note: str
    checkpoint: Checkpoint
    public_key: str
    schema_version: int
    compact: CompactRange
    rules: RulesState
    attestation_evidence: bytes | None

    def __post_init__(self) -> None:
        if self.compact.size != self.checkpoint.size or self.rules.size != self.checkpoint.size:
            raise ValueError("a log state's tree and rules stand at its checkpoint's size")


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
    # Kept only when asked (`keep_entries`): a streaming audit holds no entry.
    statements: tuple[tuple[int, Statement], ...] = ()
    leaves: tuple[bytes, ...] = ()
    state: LogState | None = None  # what an incremental audit goes on from
    # Links of verification records to records before the resumed state: not re-checked.
    unchecked_links: int = 0


StepSink = Callable[[str, str], None]
StatementSink = Callable[[int, Statement, bytes], None]  # index, statement, leaf hash
ATTESTATION_STEP = "attestation"
ANCHOR_STEP = "chain anchors"  # the step `audit --rpc` and a follower add after these
# From this many entries on, the node key's signatures are checked by its fixed-base
# tables (PublicKey.for_many), whose build costs about as much as 300 OpenSSL checks.
TABLES_FROM = 300


def verify_bundle(
    data: bytes,
    trusted_fingerprint: str | None = None,
    on_step: StepSink | None = None,
    seen_checkpoints: Sequence[str] = (),
    keep_entries: bool = True,
) -> VerifiedLog:
    """`verify_stream` over a bundle held in memory (any version)."""
    return verify_stream(
        io.BytesIO(data), trusted_fingerprint, on_step, seen_checkpoints, keep_entries
    )


def verify_stream(
    stream: IO[bytes],
    trusted_fingerprint: str | None = None,
    on_step: StepSink | None = None,
    seen_checkpoints: Sequence[str] = (),
    keep_entries: bool = False,
) -> VerifiedLog:
    """Every check in STEPS order, reading the bundle once; `on_step(name, detail)` for
    each step that passed.

    `seen_checkpoints` are signed checkpoint notes the auditor kept from before (or read
    from an anchor): the bundle must extend each of them, so a node cannot rewrite its
    history and drop the checkpoints that would show it."""
    try:
        head, entries = read_bundle(stream)
    except FormatError as exc:
        raise VerificationError(STEPS[0], str(exc)) from None
    return verify_entries(head, entries, trusted_fingerprint, on_step, seen_checkpoints,
                          keep_entries=keep_entries)  # fmt: skip


class _Failures:
    """The first failure of each step, kept while the stream goes on: the audit names the
    lowest-numbered failing step, as if the steps had run one after another."""

    def __init__(self) -> None:
        self.step = len(STEPS)  # the lowest failing step so far (len: none)
        self.error: VerificationError | None = None

    def add(self, step: int, detail: str) -> None:
        if step < self.step:
            self.step, self.error = step, VerificationError(STEPS[step], detail)

    def raise_before(self, step: int) -> None:
        if self.error is not None and self.step < step:
            raise self.error


def verify_entries(
    head: BundleHead,
    entries: Iterable[EntryText],
    trusted_fingerprint: str | None = None,
    on_step: StepSink | None = None,
    seen_checkpoints: Sequence[str] = (),
    *,
    keep_entries: bool = False,
    resume: LogState | None = None,
    on_statement: StatementSink | None = None,
) -> VerifiedLog:
    """The audit of a bundle's head and its entries, in one pass with O(log n) Merkle
    state. With `resume` (a state an earlier audit of this log returned), `head` holds
    that state's checkpoint and the newer ones, and `entries` start at its size.
    `on_statement(index, statement, leaf)` gets each entry whose statement fits the
    schema as it is read, so a caller keeps what it needs instead of every statement
    (`keep_entries`); what it gets is not yet audited: it counts once the audit passed."""
    details: list[str] = []

    def done(detail: str) -> None:
        details.append(detail)

    def report_passed(upto: int) -> None:
        if on_step is not None:
            for name, detail in zip(STEPS[:upto], details, strict=False):
                on_step(name, detail)

    try:
        return _verify(head, entries, trusted_fingerprint, seen_checkpoints, keep_entries,
                       resume, done, report_passed, on_statement)  # fmt: skip
    except VerificationError as exc:
        if exc.step in STEPS:
            report_passed(STEPS.index(exc.step))
        raise


def _verify(
    head: BundleHead,
    entries: Iterable[EntryText],
    trusted_fingerprint: str | None,
    seen_checkpoints: Sequence[str],
    keep_entries: bool,
    resume: LogState | None,
    done: Callable[[str], None],
    report_passed: Callable[[int], None],
    on_statement: StatementSink | None = None,
) -> VerifiedLog:
    base = resume.checkpoint.size if resume is not None else 0
    entries_in = "new entries" if resume is not None else "entries"
    done(f"{head.declared_size} {entries_in}, {len(head.checkpoints)} checkpoints")

    # 2. The node key parses and, if pinned, is the pinned one.
    try:
        verifier = Ed25519NoteVerifier.from_vkey(head.public_key)
    except FormatError as exc:
        raise VerificationError(STEPS[1], str(exc)) from None
    key = verifier.key
    if trusted_fingerprint is not None and key.fingerprint != trusted_fingerprint:
        raise VerificationError(
            STEPS[1],
            f"the bundle's key is {key.fingerprint}, not the trusted {trusted_fingerprint}",
        )
    done(key.fingerprint + ("" if trusted_fingerprint else " (not pinned)"))
    signer = key.for_many() if head.declared_size >= TABLES_FROM else key

    # 3. Every checkpoint is signed by that key for this log, sizes never shrink.
    checkpoints = _checkpoints(head, [verifier])
    latest = checkpoints[-1]
    if resume is not None and checkpoints[0] != resume.checkpoint:
        raise VerificationError(STEPS[2], "the first checkpoint is not the kept one")
    seen = []
    for i, note in enumerate(seen_checkpoints):
        try:
            cp = open_checkpoint(note, [verifier], head.origin, STEPS[2])
        except VerificationError as exc:
            raise VerificationError(STEPS[2], f"seen checkpoint {i}: {exc.detail}") from None
        if cp.size > latest.size:
            raise VerificationError(
                STEPS[2],
                f"seen checkpoint {i} has size {cp.size}, beyond the bundle's latest "
                f"({latest.size}): the bundle is stale or truncated",
            )
        if cp.size < base:
            raise VerificationError(
                STEPS[2],
                f"seen checkpoint {i} has size {cp.size}, before the kept state (size "
                f"{base}): audit the whole log (without --state) to check it",
            )
        seen.append(cp)
    extra = f", {len(seen)} seen before" if seen else ""
    done(f"{len(checkpoints)} checkpoints, latest size {latest.size}{extra}")

    # 4-10 over the entries, in one pass. Each entry is numbered in order (4), its
    # envelope signed by the node key (5) and hashed into the tree, whose root is taken
    # at every checkpoint's size (6); a version 1-2 bundle's inclusion proof of it is
    # checked (8); its statement fits the schema (9) and the record rules (10).
    failures = _Failures()
    if head.schema_version > SCHEMA_VERSION:
        failures.add(
            8,
            f"the bundle's records follow schema version {head.schema_version}; this "
            f"auditor reads versions up to {SCHEMA_VERSION}: upgrade asi-node",
        )
    compact = resume.compact if resume is not None else CompactRange()
    compact = CompactRange(compact.size, compact.hashes)
    wanted = {cp.size for cp in [*checkpoints, *seen]}
    roots: dict[int, bytes] = {compact.size: compact.root()}
    rules = RecordRules(key.fingerprint, resume.rules if resume is not None else None)
    evidence = resume.attestation_evidence if resume is not None else None
    statements: list[tuple[int, Statement]] = []
    leaves: list[bytes] = []
    inclusion = head.inclusion
    pos = base
    iterator = iter(entries)
    while True:
        try:
            chunk = list(itertools.islice(iterator, _CHUNK))
        except FormatError as exc:
            raise VerificationError(STEPS[0], str(exc)) from None
        if not chunk:
            break
        opened = [_open(index, text) for index, text in chunk]
        signed = _signed(opened, signer)
        for (index, _), entry, tabled in zip(chunk, opened, signed, strict=True):
            if index != pos:
                failures.add(3, f"position {pos} holds entry {index}: entries dropped or reordered")
            pos += 1
            if failures.step <= 4:
                continue
            if isinstance(entry, FormatError):
                failures.add(4, f"entry {index}: {entry}")
                continue
            raw, envelope = entry
            if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
                failures.add(4, f"entry {index} has payload type {envelope.payload_type!r}")
                continue
            try:
                # A signature the tables did not accept gets OpenSSL's look, and its error.
                payload = envelope.payload if tabled else verify_envelope(envelope, key, STEPS[4])
                typed = _statement(index, payload, failures.step > 8)
            except FormatError as exc:
                failures.add(4, f"entry {index}: {exc}")
                continue
            except VerificationError as exc:
                failures.add(4, f"entry {index}: {exc.detail}")
                continue
            leaf = leaf_hash(raw)
            compact.append(leaf)
            if compact.size in wanted:
                roots[compact.size] = compact.root()
            if inclusion is not None and failures.step > 7:
                _check_inclusion(failures, inclusion, index, latest, leaf)
            if failures.step <= 8 or typed is None:
                continue
            if isinstance(typed, VerificationError):
                failures.add(8, typed.detail)
                continue
            stmt = typed
            if keep_entries:
                statements.append((index, stmt))
                leaves.append(leaf)
            if on_statement is not None:
                on_statement(index, stmt, leaf)
            if (
                isinstance(stmt, EventStatement)
                and stmt.predicate.event is NodeEventKind.ATTESTATION
                and stmt.predicate.evidence is not None
            ):
                evidence = json.dumps(stmt.predicate.evidence).encode()
            if failures.step <= 9:
                continue
            try:
                rules.add(index, stmt, leaf)
            except VerificationError as exc:
                failures.add(9, exc.detail)
    count = pos - base
    if head.declared_size != count:
        raise VerificationError(
            STEPS[0],
            f"the header announces {head.declared_size} entries, {count} follow (truncated?)",
        )
    if latest.size - base != count:
        failures.add(
            3,
            f"the latest checkpoint covers {latest.size} entries, the bundle holds "
            f"{count if resume is None else f'{count} after the kept {base}'}: "
            "entries dropped or added",
        )
    failures.raise_before(4)
    done(f"entries {base}..{latest.size - 1} in order")
    failures.raise_before(5)
    done(f"{count} envelopes signed by the node key")

    # 6. Each checkpoint's root is the root of the entries it covers (no fork).
    for cp in [*checkpoints, *seen]:
        if roots.get(cp.size, EMPTY_ROOT if cp.size == 0 else None) != cp.root_hash:
            kept = ""
            if resume is not None:
                kept = (
                    f" (root {cp.root_hash.hex()}), or does not extend the kept checkpoint "
                    f"(size {base}, root {resume.checkpoint.root_hash.hex()})"
                )
            raise VerificationError(
                STEPS[5],
                f"the checkpoint at size {cp.size} does not match the entries{kept}: "
                "the history was forked or rewritten",
            )
    done(f"latest root {latest.root_hash.hex()}")

    # 7. Consecutive checkpoints are linked by consistency proofs.
    proofs = {(c.first, c.second): c.proof for c in head.consistency}
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
            raise VerificationError(
                STEPS[6],
                f"{old.size} -> {new.size}: {exc.detail} (root {old.root_hash.hex()} of "
                f"size {old.size}, root {new.root_hash.hex()} of size {new.size})",
            ) from None
    done(f"{max(len(checkpoints) - 1, 0)} links")

    # 8. Every entry is in the latest checkpoint: a version 1-2 bundle's inclusion proof
    #    of each was checked above; every root was recomputed from the entries.
    failures.raise_before(8)
    how = "" if inclusion is not None else " (its root recomputed from them)"
    done(f"{latest.size} entries included in the latest checkpoint{how}")

    # 9. Every statement fits the schema of the log's records (attestation.schema).
    failures.raise_before(9)
    done(f"{count} statements of schema version {head.schema_version}")

    # 10. The records obey the log's rules (campaign, config hash, no replay, signer), and
    #     no experiment started while a logged directive held its campaign paused.
    failures.raise_before(10)
    try:
        records = rules.finish()
    except VerificationError as exc:
        raise VerificationError(STEPS[9], exc.detail) from None
    links = (
        f"; {records.verifications} verification record(s) linked to the records they verify"
        if records.verifications
        else ""
    )
    if rules.unlinked:
        links += f" ({rules.unlinked} link(s) to records before the kept state not re-checked)"
    done(
        f"{sum(records.experiments.values())} experiment records in "
        f"{len(records.campaigns)} campaign(s); {records.directives} directive(s), "
        f"{records.starts_checked} start(s) checked: none while paused{links}"
    )
    report_passed(len(STEPS))
    state = LogState(
        head.checkpoints[checkpoints.index(latest)],
        latest,
        head.public_key,
        head.schema_version,
        compact,
        rules.state(latest.size),
        evidence,
    )
    return VerifiedLog(
        origin=head.origin,
        key_fingerprint=key.fingerprint,
        size=latest.size,
        root_hash=latest.root_hash,
        checkpoints=tuple(checkpoints),
        records=records,
        public_key_hex=key.raw.hex(),
        attestation_evidence=evidence,
        statements=tuple(statements),
        leaves=tuple(leaves),
        state=state,
        unchecked_links=rules.unlinked,
    )


# Entries are opened and their signatures checked this many at a time (one call of the
# tables, PublicKey.for_many); then each is judged in order, as if one by one.
_CHUNK = 256


def _open(index: int, text: str) -> tuple[bytes, Envelope] | FormatError:
    """An entry's envelope bytes (what its leaf hashes) and the envelope, or what is wrong."""
    try:
        raw = unb64(text, f"entry {index}")
        return raw, Envelope.from_bytes(raw)
    except FormatError as exc:
        return exc


def _signed(
    opened: Sequence[tuple[bytes, Envelope] | FormatError], signer: PublicKey
) -> list[bool]:
    """For each opened entry, whether the signer's tables accept its statement's
    signature by the signer; all False where it has none (one OpenSSL check each)."""
    if not isinstance(signer, TabledKey):
        return [False] * len(opened)
    fingerprint = signer.fingerprint
    where, pairs = [], []
    for i, entry in enumerate(opened):
        if isinstance(entry, FormatError) or entry[1].payload_type != IN_TOTO_PAYLOAD_TYPE:
            continue
        envelope = entry[1]
        first = envelope.signatures[0]  # the one there is, in the node's own envelopes
        signature = (
            first
            if first.keyid == fingerprint
            else next((s for s in envelope.signatures if s.keyid == fingerprint), None)
        )
        if signature is not None:
            where.append(i)
            pairs.append((signature.sig, pae(envelope.payload_type, envelope.payload)))
    signed = [False] * len(opened)
    for i, ok in zip(where, signer.accepts_all(pairs), strict=True):
        signed[i] = ok
    return signed


def _check_inclusion(
    failures: _Failures,
    inclusion: dict[int, InclusionItem],
    index: int,
    latest: Checkpoint,
    leaf: bytes,
) -> None:
    item = inclusion.get(index)
    if item is None or item.tree_size != latest.size:
        failures.add(7, f"no inclusion proof of entry {index} in size {latest.size}")
        return
    try:
        hashes = [unb64(p, "a proof hash") for p in item.proof]
        verify_inclusion(index, latest.size, leaf, hashes, latest.root_hash)
    except (FormatError, VerificationError) as exc:
        failures.add(7, f"entry {index}: {exc}")


# How the node's canonical JSON (RFC 8785, keys sorted) of a statement begins.
_CANONICAL_STATEMENT = b'{"_type":"%s",' % STATEMENT_TYPE.encode()


def _statement(index: int, payload: bytes, typed: bool) -> Statement | VerificationError | None:
    """Step 5's check that a signed payload is an in-toto statement (VerificationError)
    and, when `typed`, step 9's: the statement as the schema's model, or the error naming
    the field. A canonical statement that fits the schema is parsed once: the schema's
    (strict) statement is an in-toto one, except that it also takes the field name
    `type_` for `_type`, which the canonical form's first key rules out."""
    if not typed:
        parse_statement(payload, STEPS[4])
        return None
    try:
        stmt = _typed(index, payload)
    except VerificationError as exc:
        parse_statement(payload, STEPS[4])  # not an in-toto statement: step 5 fails first
        return exc
    if not payload.startswith(_CANONICAL_STATEMENT):
        parse_statement(payload, STEPS[4])
    return stmt


def _typed(index: int, payload: bytes) -> Statement:
    """Entry `index`'s statement as the schema's model; VerificationError naming the field."""
    try:
        return parse_record(payload)
    except SchemaError as exc:
        detail = f"entry {index}: {exc}"
        # A record version this auditor does not read (present, but not one of them).
        if str(exc).startswith("predicate.record_version:") and not str(exc).endswith(" missing"):
            version = json.loads(payload)["predicate"]["record_version"]
            versions = ", ".join(map(str, RECORD_VERSIONS))
            detail = (
                f"entry {index} is an experiment record of version {version!r}; this auditor "
                f"reads versions {versions}: upgrade asi-node"
            )
        raise VerificationError(STEPS[8], detail) from None


def _checkpoints(head: BundleHead, verifiers: list[NoteVerifier]) -> list[Checkpoint]:
    step = STEPS[2]
    if not head.checkpoints:
        raise VerificationError(step, "the bundle has no checkpoint")
    out: list[Checkpoint] = []
    for i, note in enumerate(head.checkpoints):
        try:
            cp = open_checkpoint(note, verifiers, head.origin, step)
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

    @property
    def attested(self) -> bool:
        """Whether the log carries verified TEE evidence: its attestation step passed
        without a warning."""
        step = next((s for s in self.steps if s.name == ATTESTATION_STEP), None)
        return step is not None and step.ok and not step.warning

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
    return audit_with(
        source,
        lambda passed: verify_bundle(data, trusted_fingerprint, passed, seen_checkpoints),
        require_attestation,
    )


def audit_with(
    source: str, verify: Callable[[StepSink], VerifiedLog], require_attestation: bool = False
) -> AuditReport:
    """`audit` of whatever `verify(on_step)` reads (a stream, an incremental fetch)."""
    report = AuditReport(source=source, ok=False)

    def passed(name: str, detail: str) -> None:
        report.steps.append(StepResult(STEPS.index(name) + 1, name, True, detail))

    try:
        report.log = verify(passed)
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
