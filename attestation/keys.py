"""The node's Ed25519 signing key: created once, kept in a 0600 file, optionally encrypted."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attestation.errors import FormatError, KeyFileError

KEY_FILE_MODE = 0o600
# C2SP signed-note signature type byte for Ed25519.
NOTE_ALG_ED25519 = 0x01


def fingerprint(public: bytes) -> str:
    """`sha256:<hex>` of the raw 32-byte public key: the node id and the DSSE keyid."""
    return "sha256:" + hashlib.sha256(public).hexdigest()


def note_key_hash(name: str, public: bytes) -> bytes:
    """C2SP signed-note key hash: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || key)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([NOTE_ALG_ED25519]) + public).digest()[:4]


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key (32 raw bytes)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise FormatError(f"an Ed25519 public key has 32 bytes, got {len(self.raw)}")

    @cached_property
    def _verifier(self) -> Ed25519PublicKey:
        # Built once per key: an audit verifies every entry with the same one.
        return Ed25519PublicKey.from_public_bytes(self.raw)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._verifier.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def vkey(self, name: str) -> str:
        """The C2SP verifier key string `<name>+<hex key hash>+<base64(0x01 || key)>`."""
        blob = base64.b64encode(bytes([NOTE_ALG_ED25519]) + self.raw).decode()
        return f"{name}+{note_key_hash(name, self.raw).hex()}+{blob}"

    @classmethod
    def from_vkey(cls, vkey: str) -> tuple[str, PublicKey]:
        """Parse a C2SP verifier key; returns (name, key). Raises FormatError."""
        parts = vkey.split("+", 2)
        if len(parts) != 3 or not parts[0]:
            raise FormatError(f"a verifier key is <name>+<hash>+<key>, got {vkey[:80]!r}")
        name, hash_hex, blob = parts
        try:
            raw = base64.b64decode(blob, validate=True)
            wanted = bytes.fromhex(hash_hex)
        except ValueError:
            raise FormatError(f"verifier key {name!r}: hash or key is not hex/base64") from None
        if len(raw) != 33 or raw[0] != NOTE_ALG_ED25519:
            raise FormatError(f"verifier key {name!r} is not an Ed25519 key")
        key = cls(raw[1:])
        if note_key_hash(name, key.raw) != wanted:
            raise FormatError(f"verifier key {name!r}: its key hash does not match the key")
        return name, key


class NodeKey:
    """The private key. Never logged, never put in records; `public` is what others see."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey(raw)

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def save(self, path: Path, passphrase: bytes | None = None) -> None:
        """Write the key as PKCS#8 PEM (encrypted when a passphrase is given), mode 0600.
        Refuses to replace an existing file: a node's key is its identity."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        pem = self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, KEY_FILE_MODE)
        except FileExistsError:
            raise KeyFileError(f"{path} already exists; a node key is never replaced") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None = None) -> NodeKey:
        """Read a key written by `save`. Raises KeyFileError when it is missing, readable
        by others, encrypted without a passphrase given, or the passphrase is wrong."""
        try:
            mode = path.stat().st_mode & 0o777
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyFileError(f"no node key at {path}: run `asi-node init`") from None
        except OSError as exc:
            raise KeyFileError(f"cannot read the node key {path}: {exc.strerror}") from None
        if mode & 0o077:
            raise KeyFileError(
                f"the node key {path} has mode {mode:o}; others may read it. "
                f"Run `chmod 600 {path}` if it was not exposed, else make a new node."
            )
        try:
            private = serialization.load_pem_private_key(data, password=passphrase or None)
        except TypeError:
            raise KeyFileError(
                f"the node key {path} is encrypted: set the passphrase "
                "(ASI_NODE_TLOG__KEY_PASSPHRASE or its _FILE variant)"
                if passphrase is None
                else f"the node key {path} is not encrypted; drop the passphrase"
            ) from None
        except ValueError:
            raise KeyFileError(
                f"cannot open the node key {path}: wrong passphrase or not a PEM key"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyFileError(f"the node key {path} is not an Ed25519 key")
        return cls(private)
