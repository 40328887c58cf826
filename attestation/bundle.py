"""The self-contained log bundle `asi-node log export` writes and `asi-node audit` reads.

Version 3 is line-delimited JSON, read as a stream: a header line (the node's verifier
key, the signed checkpoints in order, a consistency proof between each pair of
consecutive checkpoints, the number of entries) and then one line per entry, its
envelope bytes (base64) in log order. The auditor recomputes the tree from the entries,
so every entry's inclusion in the latest checkpoint follows from its root; version 3
carries no per-entry inclusion proofs (any of them is served by `/log/proof/inclusion`).

Versions 1 and 2 are one JSON document holding the same plus an inclusion proof of every
entry in the latest checkpoint; they are still read (whole, as they must be).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Final, Literal

import pybase64
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attestation.errors import FormatError
from attestation.schema import SCHEMA_VERSION

BUNDLE_FORMAT: Final = "asi-node/log-bundle"
BUNDLE_VERSION: Final = 2  # 2 names the schema version of its records
LINES_VERSION: Final = 3  # line-delimited: a header, then one line per entry
READ_VERSIONS: Final = (1, 2, 3)
MAX_BUNDLE_BYTES: Final = 2 << 30  # a whole-document bundle (versions 1 and 2)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleEntry(_Strict):
    index: int = Field(ge=0)
    envelope: str  # base64 of the exact envelope bytes the leaf hash covers


class ConsistencyItem(_Strict):
    first: int = Field(ge=0)
    second: int = Field(ge=0)
    proof: list[str]


class InclusionItem(_Strict):
    index: int = Field(ge=0)
    tree_size: int = Field(ge=0)
    proof: list[str]


class Bundle(_Strict):
    format: Literal["asi-node/log-bundle"] = BUNDLE_FORMAT
    version: Literal[1, 2] = BUNDLE_VERSION
    # The version of attestation.schema its records follow; bundles of version 1 predate
    # the field and follow schema version 1.
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)
    origin: str
    public_key: str  # C2SP verifier key of the node
    entries: list[BundleEntry]
    checkpoints: list[str]  # signed notes, oldest first
    consistency: list[ConsistencyItem]
    inclusion: list[InclusionItem]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class BundleHeader(_Strict):
    """The first line of a version 3 bundle: everything but the entries."""

    format: Literal["asi-node/log-bundle"] = BUNDLE_FORMAT
    version: Literal[3] = LINES_VERSION
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)
    origin: str
    public_key: str
    size: int = Field(ge=0)  # the entry lines that follow
    checkpoints: list[str]
    consistency: list[ConsistencyItem]

    def to_line(self) -> bytes:
        return self.model_dump_json().encode() + b"\n"


def entry_line(index: int, envelope: bytes) -> bytes:
    """One entry line of a version 3 bundle."""
    return b'{"index":%d,"envelope":"%s"}\n' % (index, pybase64.b64encode(envelope))


@dataclass(frozen=True)
class BundleHead:
    """What an auditor reads before the entries, whatever the bundle's version."""

    version: int
    schema_version: int
    origin: str
    public_key: str
    checkpoints: tuple[str, ...]
    consistency: tuple[ConsistencyItem, ...]
    # Versions 1 and 2: an inclusion proof per entry, by index; None in version 3.
    inclusion: dict[int, InclusionItem] | None
    declared_size: int  # the entries that follow


# An entry as streamed: its index and the base64 text of its envelope.
EntryText = tuple[int, str]


def read_bundle(stream: IO[bytes]) -> tuple[BundleHead, Iterator[EntryText]]:
    """The head of a bundle and an iterator over its entries, read as they come (version
    3) or from the whole document (versions 1 and 2). FormatError says what is wrong,
    here or, for a bad entry line, from the iterator."""
    first = stream.readline()
    try:
        raw: Any = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raw = None
    if not (isinstance(raw, dict) and raw.get("version") == LINES_VERSION):
        bundle = parse_bundle(first + stream.read(MAX_BUNDLE_BYTES))
        head = BundleHead(
            bundle.version,
            bundle.schema_version,
            bundle.origin,
            bundle.public_key,
            tuple(bundle.checkpoints),
            tuple(bundle.consistency),
            {i.index: i for i in bundle.inclusion},
            len(bundle.entries),
        )
        return head, ((e.index, e.envelope) for e in bundle.entries)
    if raw.get("format") != BUNDLE_FORMAT:
        raise FormatError(
            f"not an asi-node log bundle (format {raw.get('format')!r}, expected {BUNDLE_FORMAT!r})"
        )
    try:
        header = BundleHeader.model_validate(raw)
    except ValidationError as exc:
        raise FormatError(_field_error(exc)) from None
    head = BundleHead(
        header.version,
        header.schema_version,
        header.origin,
        header.public_key,
        tuple(header.checkpoints),
        tuple(header.consistency),
        None,
        header.size,
    )
    return head, _entry_lines(stream)


# How `entry_line` writes an entry line, up to its base64 text.
_ENTRY_HEAD = re.compile(rb'\{"index":(0|[1-9][0-9]{0,17}),"envelope":"')


def _written_entry(line: bytes) -> EntryText | None:
    """The entry of a line as `entry_line` wrote it, without building a dict: what
    `json.loads` would read from it. None for any other line (read as JSON then). A
    control or non-ASCII byte in the base64 text, which JSON would refuse or read as is,
    is left in it (as a Latin-1 character), for the entry's base64 check to refuse."""
    head = _ENTRY_HEAD.match(line)
    if head is None:
        return None
    start = head.end()
    end = line.find(b'"', start)
    if end < 0 or line[end:] not in (b'"}\n', b'"}'):
        return None
    text = line[start:end]
    if b"\\" in text:  # an escape: JSON reads other bytes than these
        return None
    return int(head[1]), text.decode("latin-1")


def _entry_lines(stream: IO[bytes]) -> Iterator[EntryText]:
    for number, line in enumerate(stream, start=2):
        written = _written_entry(line)
        if written is not None:
            yield written
            continue
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            hint = " (truncated?)" if not line.endswith(b"\n") else ""
            raise FormatError(f"bundle line {number} is not valid JSON{hint}: {exc}") from None
        if (
            type(raw) is not dict
            or raw.keys() != {"index", "envelope"}
            or type(raw["index"]) is not int
            or raw["index"] < 0
            or type(raw["envelope"]) is not str
        ):
            raise FormatError(
                f'bundle line {number}: an entry is {{"index": n >= 0, "envelope": base64}}'
            )
        yield raw["index"], raw["envelope"]


def _field_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"bundle field {loc}: {err['msg']}"


def b64(data: bytes) -> str:
    return pybase64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    try:
        return pybase64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        raise FormatError(f"{what} is not valid base64") from None


def parse_bundle(data: bytes) -> Bundle:
    """A bundle from bytes; FormatError saying what is wrong (not JSON, truncated, an
    unknown format or version, a missing or mistyped field)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("the bundle is not UTF-8 text") from None
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        stripped = text.rstrip()
        hint = " (truncated?)" if stripped.startswith("{") and not stripped.endswith("}") else ""
        raise FormatError(
            f"the bundle is not valid JSON{hint}: {exc.msg} at offset {exc.pos}"
        ) from None
    if not isinstance(raw, dict):
        raise FormatError("the bundle is not a JSON object")
    if raw.get("format") != BUNDLE_FORMAT:
        raise FormatError(
            f"not an asi-node log bundle (format {raw.get('format')!r}, expected {BUNDLE_FORMAT!r})"
        )
    if raw.get("version") not in READ_VERSIONS:
        raise FormatError(
            f"bundle version {raw.get('version')!r} is not supported; this asi-node reads "
            f"versions {', '.join(map(str, READ_VERSIONS))}. Upgrade asi-node or export again."
        )
    if raw["version"] == 1 and "schema_version" in raw:
        raise FormatError("a version 1 bundle carries no schema_version")
    if raw.get("version") == LINES_VERSION:
        raise FormatError("a version 3 bundle is line-delimited: read it with read_bundle")
    try:
        return Bundle.model_validate(raw)
    except ValidationError as exc:
        raise FormatError(_field_error(exc)) from None
