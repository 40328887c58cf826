"""The audit's fast signature checks (attestation._ed25519 through keys.TabledKey) give
OpenSSL's verdict: on real signatures from elsewhere, on random ones, and on each kind of
bad signature, with the tables' verdict read alone (no OpenSSL second look)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from attestation import keys
from attestation.keys import NodeKey, PublicKey, TabledKey
from attestation.note import Ed25519NoteVerifier, split_note

pytestmark = pytest.mark.skipif(keys._ed25519 is None, reason="attestation._ed25519 not built")

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
L = keys._L


def tabled(key: PublicKey) -> TabledKey:
    fast = key.for_many()
    assert isinstance(fast, TabledKey)
    return fast


def test_extension_is_built_where_a_compiler_is() -> None:
    # The suite runs on machines with gcc: a build that silently skipped the module
    # would leave every audit on the slow path.
    assert keys._ed25519 is not None


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_real_signed_note_signatures_get_their_expected_verdict(index: int) -> None:
    data = json.loads((VECTORS / "tlog" / "signed-note" / "signed_note_vectors.json").read_text())
    vector = [v for v in data["vectors"] if "vkey" in v][index]
    key = tabled(Ed25519NoteVerifier.from_vkey(vector["vkey"]).key)
    text, signatures = split_note(vector["note"])
    verdicts = [key.accepts_all([(s.signature, text.encode())])[0] for s in signatures]
    assert verdicts == [vector["expect"] == "valid"]


def accepts(key: TabledKey, signature: bytes, message: bytes) -> bool:
    return key.accepts_all([(signature, message)])[0]


def test_random_keys_messages_and_flipped_bits_agree_with_openssl() -> None:
    rng = random.Random(8032)
    for _ in range(150):
        node = NodeKey.generate()
        fast, slow = tabled(node.public), PublicKey(node.public.raw)
        message = os.urandom(rng.randrange(0, 3000))
        signature = node.sign(message)
        assert accepts(fast, signature, message)
        for _ in range(4):
            bad = bytearray(signature)
            bad[rng.randrange(64)] ^= 1 << rng.randrange(8)
            assert accepts(fast, bytes(bad), message) is slow.verify(bytes(bad), message)
        assert not accepts(fast, signature, message + b"x")


def test_one_call_checks_many_signatures_each_on_its_own() -> None:
    # The batch shares one inversion: a bad signature anywhere in it, the first or the
    # last included, is rejected alone, and an empty batch is no error.
    rng = random.Random(25519)
    node = NodeKey.generate()
    fast, slow = tabled(node.public), PublicKey(node.public.raw)
    signed = []
    for i in range(300):
        message = b"entry %d" % i
        signature = node.sign(message)
        if i in (0, 7, 150, 299) or rng.random() < 0.05:
            flipped = bytearray(signature)
            flipped[rng.randrange(64)] ^= 1 << rng.randrange(8)
            signature = bytes(flipped)
        signed.append((signature, message))
    verdicts = fast.accepts_all(signed)
    assert verdicts == [slow.verify(s, m) for s, m in signed]
    assert not any(verdicts[i] for i in (0, 7, 150, 299)) and sum(verdicts) > 250
    assert fast.accepts_all([]) == []


def test_the_tables_of_one_key_reject_another_keys_signature() -> None:
    a, b = NodeKey.generate(), NodeKey.generate()
    assert not accepts(tabled(a.public), b.sign(b"m"), b"m")


def test_malleated_s_and_non_canonical_r_are_rejected() -> None:
    node = NodeKey.generate()
    fast, slow = tabled(node.public), PublicKey(node.public.raw)
    signature = node.sign(b"entry")
    r, s = signature[:32], int.from_bytes(signature[32:], "little")
    # s + L is the same scalar mod L: RFC 8032 requires s < L, so it must fail.
    plus_l = r + (s + L).to_bytes(32, "little")
    assert not accepts(fast, plus_l, b"entry") and not slow.verify(plus_l, b"entry")
    # R with y >= p (y + p where that still fits 255 bits) never equals an encoding.
    y = int.from_bytes(r, "little") & ((1 << 255) - 1)
    if y + keys._P < 1 << 255:
        moved = (y + keys._P) | (r[31] >> 7) << 255
        bad = moved.to_bytes(32, "little") + signature[32:]
        assert not accepts(fast, bad, b"entry") and not slow.verify(bad, b"entry")
    for short in (signature[:63], signature + b"\x00", b""):
        assert not fast.verify(short, b"entry")


def test_a_key_that_is_not_a_curve_point_keeps_openssl() -> None:
    # y = 2 has no x on the curve: such a key gets no tables.
    raw = (2).to_bytes(32, "little")
    assert keys._point(raw) is None
    key = PublicKey(raw)
    assert key.for_many() is key


def test_the_base_point_decodes_to_rfc_8032s_coordinates() -> None:
    x, y = keys._point((4 * pow(5, -1, keys._P) % keys._P).to_bytes(32, "little"))  # type: ignore[misc]
    assert x == 15112221349535400772501151409588531511454012693041857206046113283949847762202
    assert y == 46316835694926478169428394003475163141307993866256225615783033603165251855960


def test_checks_refuse_malformed_input() -> None:
    tb, ta = tabled(NodeKey.generate().public)._tables
    zero = b"\x00" * 32
    with pytest.raises(ValueError, match="below 2\\^253"):
        keys._ed25519.check(tb, ta, zero, b"\xff" * 32, zero)
    with pytest.raises(ValueError, match="32 bytes per signature"):
        keys._ed25519.check(tb, ta, zero[:31], zero[:31], zero[:31])
    with pytest.raises(ValueError, match="32 bytes per signature"):
        keys._ed25519.check(tb, ta, zero, zero * 2, zero)
