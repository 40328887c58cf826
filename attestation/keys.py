"""The node's Ed25519 signing key: created once, kept in a 0600 file, optionally encrypted."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path
from types import ModuleType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attestation.errors import FormatError, KeyFileError

_ed25519: ModuleType | None
try:
    from attestation import _ed25519
except ImportError:  # built without a C compiler: OpenSSL checks every signature
    _ed25519 = None

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

    def for_many(self) -> PublicKey:
        """This key, checking signatures by fixed-base tables of it (attestation._ed25519)
        where that extension is built: for many signatures by one key, as an audit's
        entries are. The tables take some tens of milliseconds to build, kept for the
        last few keys; a check is then several times faster than OpenSSL's. The key
        itself where the extension is not built or the key is not a point of the curve
        (OpenSSL then rejects every signature by it)."""
        return _tabled(self.raw) or self

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


# Ed25519 (RFC 8032): the field's prime, the group order L, the curve's d, sqrt(-1).
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _point(raw: bytes) -> tuple[int, int] | None:
    """The affine point (x, y) that a 32-byte encoding names (RFC 8032 section 5.1.3), or
    None where it names none (y not below p, no square root, x = 0 with the sign set)."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    sign = raw[31] >> 7
    if x == 0 and sign:
        return None
    return (x if x & 1 == sign else _P - x), y


def _table(point: tuple[int, int]) -> object:
    assert _ed25519 is not None
    return _ed25519.table(*(c.to_bytes(32, "little") for c in point))


@dataclass(frozen=True)
class TabledKey(PublicKey):
    """A public key that checks signatures as RFC 8032 says, without the cofactor (as
    OpenSSL does): s below L and [s]B - [h]A encoding to R, h = SHA-512(R || A || M) mod
    L; both products by fixed-base tables. A signature it rejects is checked by OpenSSL
    too, whose verdict stands: the tables can only ever speed up an accepted one."""

    @cached_property
    def _tables(self) -> tuple[object, object]:
        point = _point(self.raw)
        assert point is not None  # for_many made this key only from a point
        return _base_table(), _table(point)

    def verify(self, signature: bytes, message: bytes) -> bool:
        return self.accepts_all([(signature, message)])[0] or super().verify(signature, message)

    def accepts_all(self, signed: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        """The tables' verdicts on (signature, message) pairs, checked in one call,
        without OpenSSL's second look at a rejection."""
        assert _ed25519 is not None
        verdicts = [False] * len(signed)
        rs, ss, hs, which = [], [], [], []
        for i, (signature, message) in enumerate(signed):
            r, s = signature[:32], signature[32:]
            if len(signature) != 64 or int.from_bytes(s, "little") >= _L:
                continue
            digest = hashlib.sha512(r + self.raw + message).digest()
            rs.append(r)
            ss.append(s)
            hs.append((int.from_bytes(digest, "little") % _L).to_bytes(32, "little"))
            which.append(i)
        checked = _ed25519.check(*self._tables, b"".join(rs), b"".join(ss), b"".join(hs))
        for i, ok in zip(which, checked, strict=True):
            verdicts[i] = ok == 1
        return verdicts


@lru_cache(maxsize=16)
def _tabled(raw: bytes) -> TabledKey | None:
    return TabledKey(raw) if _ed25519 is not None and _point(raw) is not None else None


@cache
def _base_table() -> object:
    """The table of the base point B, whose y is 4/5 and x even."""
    base = _point((4 * pow(5, -1, _P) % _P).to_bytes(32, "little"))
    assert base is not None
    return _table(base)


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
