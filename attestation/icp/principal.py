"""Principal ids in the IC's textual form (CRC-32 + base32, dash-grouped) and back."""

from __future__ import annotations

import base64
import binascii
import zlib

MAX_LEN = 29


def to_text(raw: bytes) -> str:
    """The textual form of a principal's bytes, e.g. ``ryjl3-tyaaa-aaaaa-aaaba-cai``."""
    if len(raw) > MAX_LEN:
        raise ValueError(f"a principal is at most {MAX_LEN} bytes, got {len(raw)}")
    checked = zlib.crc32(raw).to_bytes(4, "big") + raw
    text = base64.b32encode(checked).decode().rstrip("=").lower()
    return "-".join(text[i : i + 5] for i in range(0, len(text), 5))


def from_text(text: str) -> bytes:
    """The bytes of a textual principal; ValueError naming the problem if it is not one."""
    compact = text.strip().replace("-", "").upper()
    try:
        checked = base64.b32decode(compact + "=" * (-len(compact) % 8))
    except (binascii.Error, ValueError):
        raise ValueError(f"not a principal id: {text!r} is not base32") from None
    if len(checked) < 4:
        raise ValueError(f"not a principal id: {text!r} is too short")
    raw = checked[4:]
    if zlib.crc32(raw).to_bytes(4, "big") != checked[:4] or to_text(raw) != text.strip():
        raise ValueError(f"not a principal id: {text!r} fails its checksum or grouping")
    return raw
