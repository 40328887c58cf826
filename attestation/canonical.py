"""Canonical JSON (RFC 8785, JCS): the one byte form of every signed document."""

from __future__ import annotations

from typing import Any

import rfc8785

from attestation.errors import FormatError


def canonical_json(value: Any) -> bytes:
    """`value` as RFC 8785 bytes: sorted keys (UTF-16 order), no spaces, ES6 numbers.

    Raises FormatError for data JSON cannot hold exactly (NaN, integers beyond 2^53,
    non-string keys)."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise FormatError(f"value cannot be written as canonical JSON: {exc}") from None
