"""DSSE envelopes (PAE, Ed25519) around in-toto Statement v1 documents."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pybase64

from attestation.canonical import canonical_json
from attestation.errors import FormatError, VerificationError
from attestation.keys import NodeKey, PublicKey

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"

# The canonical JSON (`Envelope.to_bytes`) of an envelope with one signature: its
# payload's base64 text between these bytes, then the rest, whose strings hold no escape,
# quote or control character.
_CANONICAL_HEAD = b'{"payload":"'
_CANONICAL_REST = re.compile(
    rb'","payloadType":"([\x20\x21\x23-\x5b\x5d-\x7e]*)","signatures":'
    rb'\[\{"keyid":"([\x20\x21\x23-\x5b\x5d-\x7e]*)","sig":"([A-Za-z0-9+/=]*)"\}\]\}'
)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope; `to_bytes` (canonical JSON) are the bytes the log commits to."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        if not self.payload_type:
            raise FormatError("a DSSE envelope needs a payloadType")
        if not self.signatures:
            raise FormatError("a DSSE envelope needs at least one signature")

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": pybase64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": pybase64.b64encode(s.sig).decode()}
                for s in self.signatures
            ],
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON (RFC 8785) of `to_json`; its keys and base64 values are ASCII."""
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        """Parse the standard JSON form; raises FormatError naming the bad field."""
        if not isinstance(data, dict):
            raise FormatError("a DSSE envelope is a JSON object")
        try:
            payload_type = data["payloadType"]
            payload = _b64(data["payload"], "payload")
            sigs = data["signatures"]
        except KeyError as exc:
            raise FormatError(f"the DSSE envelope has no {exc.args[0]!r}") from None
        if not isinstance(payload_type, str) or not isinstance(sigs, list):
            raise FormatError("the DSSE envelope's payloadType or signatures has the wrong type")
        parsed = []
        for s in sigs:
            if not isinstance(s, dict) or "sig" not in s:
                raise FormatError("a DSSE signature is an object with a 'sig'")
            keyid = s.get("keyid", "")
            if not isinstance(keyid, str):
                raise FormatError("a DSSE signature's keyid is a string")
            parsed.append(Signature(keyid, _b64(s["sig"], "sig")))
        return cls(payload_type, payload, tuple(parsed))

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse the JSON form's bytes; raises FormatError naming the bad field."""
        canonical = _canonical(data)
        if canonical is not None:
            return canonical
        try:
            return cls.from_json(json.loads(data))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"the DSSE envelope is not JSON: {exc}") from None


def _canonical(data: bytes) -> Envelope | None:
    """The envelope `to_bytes` wrote with one signature, read without building a dict:
    what `from_json(json.loads(data))` would return. None for any other bytes (read as
    JSON then, which also names what is wrong)."""
    if not data.startswith(_CANONICAL_HEAD):
        return None
    end = data.find(b'"', len(_CANONICAL_HEAD))
    rest = _CANONICAL_REST.fullmatch(data, end) if end > 0 else None
    if rest is None:
        return None
    payload_type, keyid, sig = rest.groups()
    try:
        # Valid base64 holds no escape: the text JSON would read is these very bytes.
        payload = pybase64.b64decode(data[len(_CANONICAL_HEAD) : end], validate=True)
        signature = pybase64.b64decode(sig, validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        return None
    return Envelope(payload_type.decode(), payload, (Signature(keyid.decode(), signature),))


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"the DSSE {what} is not a base64 string")
    try:
        return pybase64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        raise FormatError(f"the DSSE {what} is not valid base64") from None


def sign_envelope(payload_type: str, payload: bytes, key: NodeKey) -> Envelope:
    sig = key.sign(pae(payload_type, payload))
    return Envelope(payload_type, payload, (Signature(key.public.fingerprint, sig),))


def verify_envelope(envelope: Envelope, key: PublicKey, step: str = "envelope signature") -> bytes:
    """The payload, if a signature by `key` covers it; else VerificationError."""
    message = pae(envelope.payload_type, envelope.payload)
    # keyid is unauthenticated; it only picks the signature to try.
    for s in envelope.signatures:
        if s.keyid == key.fingerprint and key.verify(s.sig, message):
            return envelope.payload
    ids = ", ".join(s.keyid or "(none)" for s in envelope.signatures)
    if all(s.keyid != key.fingerprint for s in envelope.signatures):
        raise VerificationError(step, f"signed by {ids}, not by the node key {key.fingerprint}")
    raise VerificationError(step, f"the signature by {key.fingerprint} does not verify")


def statement(
    subject_name: str, sha256_hex: str, predicate_type: str, predicate: dict[str, Any]
) -> dict[str, Any]:
    """An in-toto Statement v1 about one subject."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": sha256_hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def sign_statement(stmt: dict[str, Any], key: NodeKey) -> Envelope:
    return sign_envelope(IN_TOTO_PAYLOAD_TYPE, canonical_json(stmt), key)


def parse_statement(payload: bytes, step: str = "statement") -> dict[str, Any]:
    """A verified payload as an in-toto Statement v1; VerificationError if it is not one."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise VerificationError(step, "the signed payload is not JSON") from None
    if not isinstance(data, dict) or data.get("_type") != STATEMENT_TYPE:
        raise VerificationError(step, f"the payload is not an in-toto {STATEMENT_TYPE}")
    subjects = data.get("subject")
    if (
        not isinstance(subjects, list)
        or not subjects
        or not all(
            isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"]
            for s in subjects
        )
    ):
        raise VerificationError(step, "the statement has no subject with a digest")
    if not isinstance(data.get("predicateType"), str) or not isinstance(
        data.get("predicate"), dict
    ):
        raise VerificationError(step, "the statement has no predicateType or predicate")
    return data
