"""Canonical JSON (RFC 8785, JCS): the one byte form of every document the node hashes
or signs.

A small encoder of our own: strings through the stdlib's C escaper (its escapes are
exactly JCS's: short forms for \\b \\t \\n \\f \\r, lowercase \\u00xx for the other
controls, everything else literal), keys sorted by UTF-16 code units, and numbers in
ECMAScript's shortest round-trip form. Tests hold it to the `rfc8785` package.

Hashes of JSON documents (a campaign's config hash, a fork's config) are SHA-256 of this
form. Nodes before it hashed `json.dumps` with sorted keys and no spaces
(`HashRule.SORTED_JSON`: ASCII escapes, Python's float text); those hashes stay valid,
so a verifier asks `hash_rule` which rule, if any, a document and a hash agree under.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from enum import StrEnum
from json.encoder import encode_basestring
from typing import Any

from attestation.errors import FormatError

_MAX_SAFE_INT = 2**53 - 1
_encode_str = encode_basestring  # the C escaper json.dumps(ensure_ascii=False) uses


class HashRule(StrEnum):
    """How a JSON document was turned into the bytes its SHA-256 covers."""

    RFC8785 = "rfc8785"  # every hash written now
    SORTED_JSON = "sorted-json"  # hashes written before: sorted keys, no spaces, ASCII


def json_sha256(value: Any, rule: HashRule = HashRule.RFC8785) -> bytes:
    """SHA-256 of `value`'s bytes under `rule` (FormatError for data JSON cannot hold)."""
    if rule is HashRule.RFC8785:
        return hashlib.sha256(canonical_json(value)).digest()
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"not JSON data: {exc}") from None
    return hashlib.sha256(text.encode()).digest()


def hash_rule(value: Any, digest: bytes) -> HashRule | None:
    """The rule under which `value` hashes to `digest` (the current one first), or None."""
    return next((rule for rule in HashRule if json_sha256(value, rule) == digest), None)


def canonical_json(value: Any) -> bytes:
    """`value` as RFC 8785 bytes. Raises FormatError for data JSON cannot hold exactly
    (NaN, infinities, integers beyond 2^53, non-string keys, other types)."""
    parts: list[str] = []
    _encode(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("a string holds a lone surrogate; JSON text cannot carry it") from None


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise FormatError(f"integer {value} is beyond 2^53 and has no exact JSON number")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(es6_number(value))
    elif isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise FormatError("JSON object keys must be strings")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16)):
            if i:
                out.append(",")
            out.append(_encode_str(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise FormatError(f"a {type(value).__name__} cannot be written as JSON")


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def es6_number(value: float) -> str:
    """ECMAScript Number::toString for a finite double (what JCS prescribes)."""
    if not math.isfinite(value):
        raise FormatError(f"{value} is not a JSON number")
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    # repr is the shortest string that round-trips, as ECMAScript requires.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digit_tuple) - len(digits)
    k = len(digits)
    n = exponent + k  # value = 0.digits * 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text
