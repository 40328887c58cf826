"""The binding document: which node keys a piece of TEE evidence vouches for.

A canonical JSON document (RFC 8785) naming the node's transparency-log public key, its
EVM address, its ICP principal, the hash of its configuration and a fresh nonce. Its
SHA-256 goes into the evidence: REPORT_DATA = SHA-256(document) || 32 zero bytes for
SEV-SNP and TDX (Azure's HCL report binds its vTPM key the same way), and the 32-byte
SPDM nonce = SHA-256(document) for an NVIDIA GPU.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from attestation.tee.errors import BindingError

BINDING_TYPE = "asi-node/tee-binding/v1"
REPORT_DATA_LEN = 64
NONCE_LEN = 32
_EVM = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = ("type", "log_public_key", "evm_address", "icp_principal", "config_hash", "nonce")


@dataclass(frozen=True)
class BindingDocument:
    """A well-formed binding document; the constructor checks every field.

    `log_public_key` is the Ed25519 key as 64 lowercase hex digits, `config_hash` a
    SHA-256 as 64 lowercase hex digits, `nonce` 32 random bytes as 64 hex digits.
    """

    log_public_key: str
    evm_address: str
    icp_principal: str
    config_hash: str
    nonce: str

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.log_public_key):
            raise BindingError("log_public_key: expected an Ed25519 key as 64 lowercase hex digits")
        if not _EVM.fullmatch(self.evm_address):
            raise BindingError("evm_address: expected 0x followed by 40 hex digits")
        principal_problem = icp_principal_error(self.icp_principal)
        if principal_problem:
            raise BindingError(f"icp_principal: {principal_problem}")
        if not _HEX64.fullmatch(self.config_hash):
            raise BindingError("config_hash: expected a SHA-256 as 64 lowercase hex digits")
        if not _HEX64.fullmatch(self.nonce):
            raise BindingError("nonce: expected 32 bytes as 64 lowercase hex digits")

    @classmethod
    def fresh(
        cls, *, log_public_key: str, evm_address: str, icp_principal: str, config_hash: str
    ) -> BindingDocument:
        """A document with a new random nonce (so old evidence cannot be replayed as new)."""
        return cls(
            log_public_key=log_public_key,
            evm_address=evm_address,
            icp_principal=icp_principal,
            config_hash=config_hash,
            nonce=secrets.token_hex(NONCE_LEN),
        )

    @classmethod
    def from_json(cls, data: Any) -> BindingDocument:
        """From parsed JSON; BindingError names the missing, unknown or malformed field."""
        if not isinstance(data, Mapping):
            raise BindingError("binding document: expected a JSON object")
        missing = [name for name in _FIELDS if name not in data]
        unknown = sorted(set(data) - set(_FIELDS))
        if missing or unknown:
            raise BindingError(
                "binding document: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unknown {', '.join(unknown)}" if unknown else "",
                    )
                    if part
                )
            )
        if data["type"] != BINDING_TYPE:
            raise BindingError(
                f"binding document: type {data['type']!r}, expected {BINDING_TYPE!r}"
            )
        values = {name: data[name] for name in _FIELDS[1:]}
        for name, value in values.items():
            if not isinstance(value, str):
                raise BindingError(f"{name}: expected a string")
        return cls(**values)

    def to_json(self) -> dict[str, str]:
        return {
            "type": BINDING_TYPE,
            "log_public_key": self.log_public_key,
            "evm_address": self.evm_address,
            "icp_principal": self.icp_principal,
            "config_hash": self.config_hash,
            "nonce": self.nonce,
        }

    def canonical(self) -> bytes:
        """The RFC 8785 canonical JSON bytes that are hashed into the evidence."""
        return rfc8785.dumps(self.to_json())

    def digest(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()

    def report_data(self) -> bytes:
        """REPORT_DATA for SEV-SNP and TDX: SHA-256(document) || 32 zero bytes."""
        return self.digest() + bytes(REPORT_DATA_LEN - 32)

    def gpu_nonce(self) -> bytes:
        """The 32-byte SPDM nonce for an NVIDIA GPU: SHA-256(document)."""
        return self.digest()


def icp_principal_error(text: str) -> str | None:
    """None for a valid textual ICP principal (checksum included), else what is wrong."""
    if not text or text != text.lower():
        return "expected the lowercase textual form, e.g. 2vxsx-fae"
    groups = text.split("-")
    if any(len(g) != 5 for g in groups[:-1]) or not 1 <= len(groups[-1]) <= 5:
        return "expected groups of 5 characters separated by '-'"
    raw = "".join(groups).upper()
    try:
        decoded = base64.b32decode(raw + "=" * (-len(raw) % 8))
    except (binascii.Error, ValueError):
        return "not base32"
    if len(decoded) < 4 or len(decoded) > 4 + 29:
        return "wrong length for a principal"
    if int.from_bytes(decoded[:4], "big") != binascii.crc32(decoded[4:]):
        return "checksum does not match"
    if icp_principal_text(decoded[4:]) != text:
        return "not in canonical textual form"
    return None


def icp_principal_text(raw: bytes) -> str:
    """The textual form of a principal's bytes (used by tests and the `none` provider)."""
    data = binascii.crc32(raw).to_bytes(4, "big") + raw
    text = base64.b32encode(data).decode().rstrip("=").lower()
    return "-".join(text[i : i + 5] for i in range(0, len(text), 5))
