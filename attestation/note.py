"""C2SP signed notes and tlog checkpoints: text, signature lines, parsing and checks.

A signed note is text ending in a newline, a blank line, then one line per signature:
`— <name> <base64(4-byte key hash || signature)>`. A checkpoint is a note whose text
is `<origin>\\n<tree size>\\n<base64 root hash>\\n` plus optional extension lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.errors import FormatError, VerificationError
from attestation.keys import NodeKey, PublicKey, note_key_hash
from attestation.merkle import HASH_SIZE

SIG_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100


class NoteVerifier(Protocol):
    """Checks signatures of one key: picked by (name, key hash), as in the spec."""

    @property
    def name(self) -> str: ...

    @property
    def key_hash(self) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True)
class Ed25519NoteVerifier:
    name: str
    key: PublicKey

    @property
    def key_hash(self) -> bytes:
        return note_key_hash(self.name, self.key.raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return self.key.verify(signature, message)

    @classmethod
    def from_vkey(cls, vkey: str) -> Ed25519NoteVerifier:
        name, key = PublicKey.from_vkey(vkey)
        return cls(name, key)


@dataclass(frozen=True)
class EcdsaNoteVerifier:
    """ECDSA P-256 note signatures as Rekor v1 writes them (key hash: SHA-256 of the DER key)."""

    name: str
    public_der: bytes

    @property
    def key_hash(self) -> bytes:
        return hashlib.sha256(self.public_der).digest()[:4]

    def verify(self, message: bytes, signature: bytes) -> bool:
        key = serialization.load_der_public_key(self.public_der)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        try:
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_hash: bytes
    signature: bytes


def sign_note(text: str, name: str, key: NodeKey) -> str:
    """`text` (which must end in a newline) signed by `key` under `name`."""
    _check_text(text)
    sig = key.sign(text.encode())
    blob = base64.b64encode(note_key_hash(name, key.public.raw) + sig).decode()
    return f"{text}\n{SIG_PREFIX}{name} {blob}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise FormatError("a note's text must end with a newline")
    if "\n\n" in text or text.startswith("\n"):
        raise FormatError("a note's text may not contain a blank line")


def split_note(note: str) -> tuple[str, list[NoteSignature]]:
    """The text and the signature lines of a note; FormatError when malformed."""
    cut = note.rfind("\n\n")
    if cut < 0:
        raise FormatError("a signed note needs a blank line before its signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    _check_text(text)
    if not block.endswith("\n"):
        raise FormatError("a signed note must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError(f"a note with more than {MAX_SIGNATURES} signatures is refused")
    sigs = []
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise FormatError(f"a signature line starts with '{SIG_PREFIX}': {line[:60]!r}")
        name, _, blob = line[len(SIG_PREFIX) :].rpartition(" ")
        if not name or " " in name or "+" in name:
            raise FormatError(f"bad key name in signature line {line[:60]!r}")
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raise FormatError(f"signature of {name!r} is not base64") from None
        if len(raw) < 5:
            raise FormatError(f"signature of {name!r} is too short")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    return text, sigs


def open_note(note: str, verifiers: list[NoteVerifier], step: str = "note signature") -> str:
    """The note's text if at least one known key signed it and no known key's signature
    fails; signatures by unknown keys are ignored (as the spec says). VerificationError
    otherwise."""
    try:
        text, sigs = split_note(note)
    except FormatError as exc:
        raise VerificationError(step, str(exc)) from None
    verified = 0
    for sig in sigs:
        for v in verifiers:
            if v.name == sig.name and v.key_hash == sig.key_hash:
                if not v.verify(text.encode(), sig.signature):
                    raise VerificationError(step, f"the signature by {sig.name} does not verify")
                verified += 1
    if not verified:
        names = ", ".join(sorted({s.name for s in sigs}))
        raise VerificationError(step, f"no signature by a trusted key (signed by: {names})")
    return text


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog checkpoint body. A value that exists is well formed."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise FormatError("a checkpoint origin is one non-empty line")
        if self.size < 0:
            raise FormatError("a checkpoint's tree size is not negative")
        if len(self.root_hash) != HASH_SIZE:
            raise FormatError(f"a checkpoint root hash has {HASH_SIZE} bytes")
        if any(not e or "\n" in e for e in self.extensions):
            raise FormatError("checkpoint extension lines are non-empty single lines")

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    def sign(self, name: str, key: NodeKey) -> str:
        return sign_note(self.text(), name, key)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise FormatError("a checkpoint ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError("a checkpoint has an origin, a tree size and a root hash line")
        origin, size_s, root_s, *ext = lines
        if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
            raise FormatError(f"checkpoint tree size {size_s[:30]!r} is not a decimal number")
        try:
            root = base64.b64decode(root_s, validate=True)
        except binascii.Error:
            raise FormatError("the checkpoint root hash is not base64") from None
        return cls(origin, int(size_s), root, tuple(ext))


def open_checkpoint(
    note: str, verifiers: list[NoteVerifier], origin: str, step: str = "checkpoint signature"
) -> Checkpoint:
    """A checkpoint signed by a trusted key for `origin`; VerificationError otherwise."""
    text = open_note(note, verifiers, step)
    try:
        cp = Checkpoint.parse(text)
    except FormatError as exc:
        raise VerificationError(step, str(exc)) from None
    if cp.origin != origin:
        raise VerificationError(step, f"checkpoint of log {cp.origin!r}, expected {origin!r}")
    return cp
