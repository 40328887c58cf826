"""Candid through ic-py: typed decoding for our canister, untyped (label-hash) reading
for large foreign records, and the checks that turn odd values into IcpReplyError."""

from __future__ import annotations

from typing import Any

from ic.candid import decode
from ic.utils import labelHash

from governance.icp.errors import IcpReplyError


def typed_value(arg: bytes, expected: Any, what: str) -> Any:
    try:
        values = decode(arg, expected)
    except Exception as exc:  # ic-py raises bare ValueError/TypeError/IndexError
        raise IcpReplyError(f"{what} is not the expected Candid ({exc})") from None
    if not isinstance(values, list) or len(values) != 1 or "value" not in values[0]:
        raise IcpReplyError(f"{what} does not hold exactly one Candid value")
    return values[0]["value"]


def blob(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    raise IcpReplyError(f"{what} is not a blob")


def untyped_value(arg: bytes, what: str) -> Any:
    try:
        values = decode(arg)
    except Exception as exc:  # ic-py raises bare ValueError/TypeError/IndexError
        raise IcpReplyError(f"{what} is not Candid ({exc})") from None
    if not isinstance(values, list) or len(values) != 1:
        raise IcpReplyError(f"{what} does not hold exactly one Candid value")
    return values[0]["value"]


def field(record: Any, name: str, what: str) -> Any:
    if not isinstance(record, dict):
        raise IcpReplyError(f"{what} is not a Candid record")
    key = f"_{labelHash(name)}"
    if key in record:
        return record[key]
    if name in record:
        return record[name]
    raise IcpReplyError(f"{what} lacks the field {name}")


def opt(value: Any, what: str) -> Any:
    if not isinstance(value, list) or len(value) > 1:
        raise IcpReplyError(f"{what} is not a Candid opt")
    return value[0] if value else None


def nat(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise IcpReplyError(f"{what} is not a natural number")
    return value
