"""The self-contained log bundle `asi-node log export` writes and `asi-node audit` reads.

JSON: the node's verifier key, every entry's envelope bytes (base64) in log order, the
signed checkpoints in order, a consistency proof between each pair of consecutive
checkpoints, and an inclusion proof of every entry in the latest checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attestation.errors import FormatError
from attestation.schema import SCHEMA_VERSION

BUNDLE_FORMAT: Final = "asi-node/log-bundle"
BUNDLE_VERSION: Final = 2  # 2 names the schema version of its records
READ_VERSIONS: Final = (1, 2)


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


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
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
    try:
        return Bundle.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise FormatError(f"bundle field {loc}: {err['msg']}") from None
