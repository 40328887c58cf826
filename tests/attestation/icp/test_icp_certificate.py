"""Every recorded IC certificate gets its expected result; corrupted copies name the step."""

from __future__ import annotations

import random
from collections.abc import Mapping

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icp_vectors import (
    IVG37,
    LOCAL_KEY,
    MAINNET_KEY,
    QOCTQ,
    RYJL3,
    V1_TIME,
    V2_TIME,
    V3_TIME,
    V4_TIME,
    pruned_ranges_certificate,
    v1_certificate,
    v2_certificate,
    v3_signature,
    v4_certificate,
)

from attestation.errors import VerificationError
from attestation.icp import MAINNET_ROOT_KEY_DER, Step, verify_certificate
from attestation.icp.hashtree import Leaf, parse_tree, reconstruct
from attestation.icp.principal import from_text

QXESV = from_text("qxesv-zoxpm-vc64m-zxguk-5sj74-35vrb-tbgwg-pcird-5gr26-62oxl-cae")


def verify(data: bytes, canister: bytes, now: int, key: bytes = MAINNET_KEY) -> object:
    return verify_certificate(data, root_key_der=key, canister_id=canister, now_ns=now)


def test_v1_sharded_ranges_delegation_is_valid_for_ivg37() -> None:
    cert = verify_certificate(
        v1_certificate(), root_key_der=MAINNET_KEY, canister_id=IVG37, now_ns=V1_TIME + 10**9
    )
    assert cert.time_ns == V1_TIME
    assert cert.subnet_id == QXESV
    assert cert.root_hash.hex() == (
        "d3b2c4dd9d5284289524e749a413f1e38f36bd48e321ee0a59717feb2ea2d0b7"
    )


def test_v1_is_not_authorised_for_a_canister_of_another_subnet() -> None:
    with pytest.raises(VerificationError, match="outside the canister ranges") as info:
        verify(v1_certificate(), RYJL3, V1_TIME)
    assert info.value.step == Step.CANISTER_RANGE.text


def test_v2_without_delegation_is_valid_under_the_root_key() -> None:
    cert = verify_certificate(
        v2_certificate(), root_key_der=MAINNET_KEY, canister_id=RYJL3, now_ns=V2_TIME
    )
    assert cert.subnet_id is None
    assert cert.root_hash.hex() == (
        "e11d331b8616f9e8a17a9472c45a174b092919298c3855be598f1774bf098e1d"
    )
    nns = from_text("tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe")
    assert cert.value([b"subnet", nns, b"public_key"]) == MAINNET_KEY


def test_v3_canister_signature_certifies_the_witness_under_the_local_key() -> None:
    certificate, tree = v3_signature()
    cert = verify_certificate(
        certificate, root_key_der=LOCAL_KEY, canister_id=QOCTQ, now_ns=V3_TIME
    )
    witness = parse_tree(tree)
    assert cert.certified_data(QOCTQ, witness).hex() == (
        "f3e90c5b46e5ed3fca8848f2e71651d4439a49a252b83b417d0647f3205c0773"
    )


def test_v3_is_invalid_under_the_mainnet_key() -> None:
    with pytest.raises(VerificationError) as info:
        verify(v3_signature()[0], QOCTQ, V3_TIME)
    assert info.value.step == Step.SIGNATURE.text


def test_certified_data_against_another_witness_fails() -> None:
    certificate, tree = v3_signature()
    cert = verify_certificate(
        certificate, root_key_der=LOCAL_KEY, canister_id=QOCTQ, now_ns=V3_TIME
    )
    with pytest.raises(VerificationError, match="witness hashes to") as info:
        cert.certified_data(QOCTQ, Leaf(b"forged anchor"))
    assert info.value.step == Step.CERTIFIED_DATA.text
    with pytest.raises(VerificationError, match="absent") as info:
        cert.certified_data(IVG37, parse_tree(tree))
    assert info.value.step == Step.CERTIFIED_DATA.text


def test_v4_old_layout_delegation_is_valid_and_shows_the_reject() -> None:
    cert = verify_certificate(
        v4_certificate(), root_key_der=MAINNET_KEY, canister_id=IVG37, now_ns=V4_TIME
    )
    request = bytes.fromhex("edad510eaaa08ed2acd4781324e6446269da6753ec17760f206bbe81c465ff52")
    assert cert.value([b"request_status", request, b"status"]) == b"rejected"
    assert cert.value([b"request_status", request, b"reject_code"]) == b"\x03"


def test_v4_is_not_authorised_outside_its_ranges() -> None:
    with pytest.raises(VerificationError, match="not authorised") as info:
        verify(v4_certificate(), RYJL3, V4_TIME)
    assert info.value.step == Step.CANISTER_RANGE.text


def test_pruned_canister_ranges_fail_as_unknown() -> None:
    with pytest.raises(VerificationError, match="sharded layout: unknown") as info:
        verify(pruned_ranges_certificate(), IVG37, V1_TIME)
    assert info.value.step == Step.CANISTER_RANGE.text


def test_too_old_certificate_is_rejected_with_its_age() -> None:
    an_hour_later = V4_TIME + 3600 * 10**9
    with pytest.raises(VerificationError, match="3600 s old") as info:
        verify(v4_certificate(), IVG37, an_hour_later)
    assert info.value.step == Step.FRESHNESS.text


def test_certificate_from_the_future_is_rejected() -> None:
    with pytest.raises(VerificationError, match="ahead of the local clock") as info:
        verify(v4_certificate(), IVG37, V4_TIME - 600 * 10**9)
    assert info.value.step == Step.FRESHNESS.text


def test_lookup_distinguishes_absent_from_pruned() -> None:
    cert = verify_certificate(
        v4_certificate(), root_key_der=MAINNET_KEY, canister_id=IVG37, now_ns=V4_TIME
    )
    with pytest.raises(VerificationError, match="is absent") as info:
        cert.value([b"zzz"])
    assert info.value.step == Step.LOOKUP.text
    with pytest.raises(VerificationError, match="is unknown"):
        cert.value([b"request_status", bytes(32), b"status"])


@pytest.mark.parametrize(
    "data", [b"", b"\xff", b"\xa1", b"not cbor at all", cbor2.dumps([1, 2]), v4_certificate()[:-7]]
)
def test_malformed_cbor_is_rejected_at_decode(data: bytes) -> None:
    with pytest.raises(VerificationError) as info:
        verify(data, IVG37, V4_TIME)
    assert info.value.step == Step.DECODE.text


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _flip_in(data: bytes, needle: bytes, byte_offset: int = 0) -> bytes:
    index = data.index(needle) + byte_offset
    return _flip(data, index * 8)


def _delegation_signature_flipped(data: bytes) -> bytes:
    """A copy of a certificate whose delegation certificate has one signature bit flipped."""
    outer = cbor2.loads(data)
    inner = cbor2.loads(outer["delegation"]["certificate"])
    inner = {**inner, "signature": _flip(inner["signature"], 5)}
    delegation = {**outer["delegation"], "certificate": cbor2.dumps(inner)}
    return cbor2.dumps({**outer, "delegation": delegation})


@pytest.mark.parametrize(
    ("name", "corrupt", "step"),
    [
        ("outer signature", lambda d: _flip_in(d, b"isignatureX0", 14), Step.SIGNATURE),
        ("certified time", lambda d: _flip_in(d, b"Dtime\x82\x03I", 8), Step.SIGNATURE),
        ("request status", lambda d: _flip_in(d, b"rejected"), Step.SIGNATURE),
        ("delegation signature", _delegation_signature_flipped, Step.DELEGATION),
        ("subnet key", lambda d: _flip_in(d, b"\x03a\x00\x993\xe1", 6), Step.DELEGATION),
        ("subnet id", lambda d: _flip_in(d, b"isubnet_idX\x1d", 14), Step.DELEGATION),
        ("canister ranges", lambda d: _flip_in(d, b"\xd9\xd9\xf7\x81\x82J", 12), Step.DELEGATION),
        ("map key", lambda d: _flip_in(d, b"dtree"), Step.DECODE),
    ],
)
def test_bit_flipped_v4_fails_at_the_named_step(name: str, corrupt, step: Step) -> None:  # type: ignore[no-untyped-def]
    data = corrupt(v4_certificate())
    assert data != v4_certificate()
    with pytest.raises(VerificationError) as info:
        verify(data, IVG37, V4_TIME)
    assert info.value.step == step.text, f"{name}: {info.value}"


def test_bit_flipped_v1_sharded_range_fails_in_the_delegation() -> None:
    data = _flip_in(v1_certificate(), b"\xd9\xd9\xf7\x81\x82J", 12)
    with pytest.raises(VerificationError) as info:
        verify(data, IVG37, V1_TIME)
    assert info.value.step == Step.DELEGATION.text


def test_random_bit_flips_never_verify() -> None:
    original = v2_certificate()
    rng = random.Random(8)
    for bit in rng.sample(range(len(original) * 8), 4):
        with pytest.raises(VerificationError):
            verify(_flip(original, bit), RYJL3, V2_TIME)


@pytest.mark.slow
def test_every_64th_bit_flip_of_v4_fails() -> None:
    original = v4_certificate()
    for bit in range(0, len(original) * 8, 64):
        with pytest.raises(VerificationError):
            verify(_flip(original, bit), IVG37, V4_TIME)


def test_witness_root_matches_reconstruction() -> None:
    assert reconstruct(parse_tree(v3_signature()[1])).hex().startswith("f3e90c5b")


def test_embedded_mainnet_key_is_the_recorded_one() -> None:
    assert MAINNET_ROOT_KEY_DER == MAINNET_KEY


def test_oversized_subnet_id_is_a_decode_error_not_a_crash() -> None:
    outer = cbor2.loads(v4_certificate())
    forged = {**outer, "delegation": {**outer["delegation"], "subnet_id": bytes(40)}}
    with pytest.raises(VerificationError, match="subnet_id") as info:
        verify(cbor2.dumps(forged), IVG37, V4_TIME)
    assert info.value.step == Step.DECODE.text


def test_canister_id_that_is_not_a_principal_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="not a principal"):
        verify(v4_certificate(), bytes(30), V4_TIME)


def _mutate(obj: object, rng: random.Random, replacement: object) -> object:
    """A copy of decoded CBOR with one randomly chosen node replaced."""
    if isinstance(obj, Mapping) and obj and rng.random() < 0.95:
        key = rng.choice(sorted(obj, key=str))
        value = obj[key]
        if key in ("certificate", "tree") and isinstance(value, bytes) and rng.random() < 0.7:
            inner = cbor2.dumps(_mutate(cbor2.loads(value), rng, replacement))
            return {**obj, key: inner}
        return {**obj, key: _mutate(value, rng, replacement)}
    if isinstance(obj, list | tuple) and obj and rng.random() < 0.9:
        index = rng.randrange(len(obj))
        return [*obj[:index], _mutate(obj[index], rng, replacement), *obj[index + 1 :]]
    return replacement


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(
    rng=st.randoms(use_true_random=False),
    replacement=st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.binary(max_size=40)
    | st.text(max_size=5)
    | st.lists(st.integers(0, 5) | st.binary(max_size=33), max_size=3),
)
def test_structurally_mutated_certificates_fail_closed(
    rng: random.Random, replacement: object
) -> None:
    data = cbor2.dumps(_mutate(cbor2.loads(v4_certificate()), rng, replacement))
    try:
        verify(data, IVG37, V4_TIME)
    except VerificationError:
        return
    assert data == v4_certificate() or cbor2.loads(data) == cbor2.loads(v4_certificate())
