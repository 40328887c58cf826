"""The auditor's kept state (`asi-node audit URL --state DIR`): per log, the last verified
checkpoint and what the next audit needs to check only the entries after it.

`<log id>.json` holds the signed checkpoint, the tree's compact range, the record rules'
state and the latest TEE evidence; `<log id>.seen` the digests of the experiments seen
(8 bytes each, appended, its first `seen_count` entries valid). Both are written only
after an audit passed, the JSON last and by rename, so a failed audit keeps the old state.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from array import array
from datetime import datetime
from pathlib import Path
from typing import Any

from attestation.audit import LogState
from attestation.errors import TrustError
from attestation.merkle import CompactRange
from attestation.note import Checkpoint, split_note
from attestation.records import AppliedDirective, RecordSummary, RulesState
from attestation.schema import DirectiveKind
from node.errors import AsiNodeError

STATE_FORMAT = "asi-node/audit-state"
STATE_VERSION = 1


class AuditStateError(AsiNodeError):
    """The --state directory cannot be used (missing, not a directory, not writable) or
    holds a file this auditor cannot read.

    Give a writable directory; remove a damaged state file to audit that log from scratch.
    """


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class StateDir:
    """A directory of kept log states, one pair of files per log (by its origin's hash)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, path: Path) -> StateDir:
        if not path.exists():
            raise AuditStateError(f"--state {path}: no such directory (create it first)")
        if not path.is_dir():
            raise AuditStateError(f"--state {path}: not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise AuditStateError(f"--state {path}: the directory is not writable")
        return cls(path)

    def _files(self, origin: str) -> tuple[Path, Path]:
        name = hashlib.sha256(origin.encode()).hexdigest()
        return self.path / f"{name}.json", self.path / f"{name}.seen"

    def load(self, origin: str) -> LogState | None:
        """The kept state of the log `origin`, or None if this directory has none."""
        meta, seen_path = self._files(origin)
        if not meta.exists():
            return None
        try:
            raw = json.loads(meta.read_text())
            if raw.get("format") != STATE_FORMAT or raw.get("version") != STATE_VERSION:
                raise ValueError("unknown format or version")
            seen = array("Q")
            with seen_path.open("rb") as f:
                seen.frombytes(f.read(8 * int(raw["seen_count"])))
            if len(seen) != raw["seen_count"]:
                raise ValueError("the .seen file is shorter than the state says")
            return _state(raw, origin, frozenset(seen))
        except (OSError, ValueError, KeyError, TypeError, TrustError) as exc:
            raise AuditStateError(
                f"the kept state {meta} cannot be read ({exc}); remove it (and {seen_path.name}) "
                "to audit this log from scratch"
            ) from None

    def save(self, state: LogState, kept: LogState | None) -> Path:
        """Write `state` (after its audit passed); `kept` is the state it went on from."""
        origin = state.checkpoint.origin
        meta, seen_path = self._files(origin)
        old = kept.rules.all_seen() if kept is not None else frozenset()
        # In the sets' order: the file is read back into a set (sorting a million digests
        # would take the first audit of a large log about a second).
        if state.rules.seen is old:  # it went on from `kept`: what it added is new
            new = array("Q", state.rules.added)
        else:
            new = array("Q", state.rules.all_seen() - old)
        try:
            with seen_path.open("r+b" if kept is not None and seen_path.exists() else "wb") as f:
                f.truncate(8 * len(old))
                f.seek(8 * len(old))
                f.write(new.tobytes())
                f.flush()
                os.fsync(f.fileno())
            tmp = meta.with_name(meta.name + ".tmp")
            tmp.write_text(json.dumps(_raw(state, len(old) + len(new))))
            tmp.replace(meta)
        except OSError as exc:
            raise AuditStateError(f"cannot write the kept state in {self.path}: {exc}") from None
        return meta


def _raw(state: LogState, seen_count: int) -> dict[str, Any]:
    rules = state.rules
    s = rules.summary
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "origin": state.checkpoint.origin,
        "tree_size": state.checkpoint.size,
        "root_hash": state.checkpoint.root_hash.hex(),
        "note": state.note,
        "public_key": state.public_key,
        "schema_version": state.schema_version,
        "compact_range": [_b64(h) for h in state.compact.hashes],
        "summary": {
            "campaigns": s.campaigns,
            "experiments": s.experiments,
            "events": s.events,
            "directives": s.directives,
            "starts_checked": s.starts_checked,
            "verifications": s.verifications,
        },
        "directives": [
            {
                "index": d.index,
                "source": d.source,
                "campaign": d.campaign,
                "epoch": d.epoch,
                "kind": d.kind.value,
                "applied_at": d.applied_at.isoformat(),
                "parent": d.parent,
                "ref": d.ref,
                "superseded": d.superseded,
                "held_child": d.held_child,
                "undone": d.undone,
            }
            for d in rules.directives
        ],
        "last_start": rules.last_start,
        "seen_count": seen_count,
        "attestation_evidence": (
            None if state.attestation_evidence is None else _b64(state.attestation_evidence)
        ),
    }


def _state(raw: dict[str, Any], origin: str, seen: frozenset[int]) -> LogState:
    text, _ = split_note(str(raw["note"]))
    cp = Checkpoint.parse(text)
    size = cp.size
    if cp.origin != origin or raw["origin"] != origin:
        raise ValueError(f"it is the state of log {raw['origin']!r}")
    s = raw["summary"]
    summary = RecordSummary(
        dict(s["campaigns"]),
        dict(s["experiments"]),
        dict(s["events"]),
        int(s["directives"]),
        int(s["starts_checked"]),
        int(s["verifications"]),
    )
    directives = tuple(
        AppliedDirective(
            int(d["index"]),
            d["source"],
            d["campaign"],
            int(d["epoch"]),
            DirectiveKind(d["kind"]),
            datetime.fromisoformat(d["applied_at"]),
            d["parent"],
            d["ref"],
            bool(d["superseded"]),
            bool(d["held_child"]),
            bool(d["undone"]),
        )
        for d in raw["directives"]
    )
    evidence = raw["attestation_evidence"]
    return LogState(
        note=str(raw["note"]),
        checkpoint=cp,
        public_key=str(raw["public_key"]),
        schema_version=int(raw["schema_version"]),
        compact=CompactRange(size, [base64.b64decode(h) for h in raw["compact_range"]]),
        rules=RulesState(
            size, summary, directives, seen, {k: int(v) for k, v in raw["last_start"].items()}
        ),
        attestation_evidence=None if evidence is None else base64.b64decode(evidence),
    )
