"""Canonical JSON, node keys and DSSE envelopes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.canonical import canonical_json
from attestation.dsse import (
    Envelope,
    parse_statement,
    sign_statement,
    statement,
    verify_envelope,
)
from attestation.errors import FormatError, KeyFileError, VerificationError
from attestation.keys import NodeKey, PublicKey


def test_canonical_json_follows_rfc8785_examples() -> None:
    # RFC 8785 section 3.2.3: keys sorted by UTF-16 code units; numbers in ES6 form.
    value = {"\u20ac": "Euro", "\r": "CR", "\ufb33": "Hebrew", "1": "One", "\U0001f600": "Smiley",
             "\u0080": "Control", "\u00f6": "Latin"}  # fmt: skip
    import json

    # The order the RFC's example prints (U+1F600 sorts before U+FB33 as a surrogate pair).
    expected = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert list(json.loads(canonical_json(value))) == expected
    assert canonical_json([1e21, 1e-7, 0.000001, -0.0, 333333333.33333329]) == (
        b"[1e+21,1e-7,0.000001,0,333333333.3333333]"
    )
    assert (
        canonical_json({"b": [True, None], "a": "\u00e9\n"})
        == b'{"a":"\xc3\xa9\\n","b":[true,null]}'
    )


def test_canonical_json_refuses_values_json_cannot_hold_exactly() -> None:
    with pytest.raises(FormatError):
        canonical_json(float("nan"))
    with pytest.raises(FormatError):
        canonical_json(2**60)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_json_is_stable_under_a_parse_round_trip(value: object) -> None:
    import json

    once = canonical_json(value)
    assert canonical_json(json.loads(once)) == once


def test_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert NodeKey.load(path).public == key.public
    with pytest.raises(KeyFileError, match="never replaced"):
        key.save(path)


def test_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    key.save(path, b"correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    assert NodeKey.load(path, b"correct horse").public == key.public
    with pytest.raises(KeyFileError, match="encrypted"):
        NodeKey.load(path)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        NodeKey.load(path, b"wrong")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    NodeKey.generate().save(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        NodeKey.load(path)
    with pytest.raises(KeyFileError, match="asi-node init"):
        NodeKey.load(tmp_path / "missing.key")


def test_vkey_round_trips_and_a_wrong_hash_is_refused() -> None:
    key = NodeKey.generate().public
    vkey = key.vkey("asi-node.log/abc")
    assert PublicKey.from_vkey(vkey) == ("asi-node.log/abc", key)
    name, _, blob = vkey.split("+", 2)
    with pytest.raises(FormatError, match="key hash"):
        PublicKey.from_vkey(f"{name}+00000000+{blob}")


def _stmt() -> dict[str, object]:
    return statement("candidate/x", "ab" * 32, "https://example/p", {"k": 1})


def test_envelope_round_trips_and_verifies_with_the_signer_only() -> None:
    key, other = NodeKey.generate(), NodeKey.generate()
    env = sign_statement(_stmt(), key)
    again = Envelope.from_bytes(env.to_bytes())
    assert again == env
    assert parse_statement(verify_envelope(again, key.public)) == _stmt()
    with pytest.raises(VerificationError, match="not by the node key"):
        verify_envelope(again, other.public)


def test_an_envelope_with_a_changed_payload_fails_its_signature() -> None:
    key = NodeKey.generate()
    env = sign_statement(_stmt(), key)
    forged = Envelope(env.payload_type, env.payload.replace(b'"k":1', b'"k":2'), env.signatures)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_envelope(forged, key.public)


def test_malformed_envelopes_are_named() -> None:
    with pytest.raises(FormatError, match="not JSON"):
        Envelope.from_bytes(b"{")
    with pytest.raises(FormatError, match="payloadType"):
        Envelope.from_json({"payload": "", "signatures": []})
    with pytest.raises(FormatError, match="base64"):
        Envelope.from_json({"payload": "!!", "payloadType": "t", "signatures": []})
    with pytest.raises(FormatError, match="at least one signature"):
        Envelope.from_json({"payload": "", "payloadType": "t", "signatures": []})


finite_floats = st.floats(allow_nan=False, allow_infinity=False)
jcs_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | finite_floats | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400)
@given(jcs_values)
def test_our_encoder_writes_the_same_bytes_as_the_rfc8785_package(value: object) -> None:
    import rfc8785

    assert canonical_json(value) == rfc8785.dumps(value)


@given(finite_floats)
def test_numbers_are_written_in_ecmascript_form(x: float) -> None:
    import rfc8785

    assert canonical_json(x) == rfc8785.dumps(x)
    assert float(canonical_json(x)) == x
