"""BLS12-381 signature check as the IC signs certificates (pure Python, py_ecc).

The IC uses the "minimal signature size" variant: a 48-byte signature in G1 and a 96-byte
public key in G2, hashed to G1 with the ciphersuite BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_.
Both points are checked to lie in the prime-order subgroup. One check costs a few
hundred milliseconds in pure Python, so checked keys are cached.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, cast

from py_ecc.bls.hash_to_curve import hash_to_G1
from py_ecc.bls.point_compression import decompress_G1, decompress_G2
from py_ecc.bls.typing import G1Compressed, G2Compressed
from py_ecc.fields import optimized_bls12_381_FQ12 as FQ12
from py_ecc.optimized_bls12_381.optimized_curve import G2, curve_order, is_inf, multiply, neg
from py_ecc.optimized_bls12_381.optimized_pairing import final_exponentiate, miller_loop

from attestation.errors import TrustError

DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"

# DER SubjectPublicKeyInfo prefix of an IC BLS key: algorithm OID 1.3.6.1.4.1.44668.5.3.1.2.1,
# curve OID 1.3.6.1.4.1.44668.5.3.2.1, then a 97-byte BIT STRING (no unused bits).
DER_PREFIX = bytes.fromhex(
    "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100"
)
KEY_LEN = 96
SIGNATURE_LEN = 48


class BlsError(TrustError):
    """A BLS key or signature is malformed or does not verify (the message says which).

    Certificate verification turns it into a `VerificationError` at the step that used
    the key or signature; a direct caller must not trust the signed message.
    """


def key_from_der(der: bytes) -> bytes:
    """The raw 96-byte G2 key inside an IC BLS DER key."""
    if len(der) != len(DER_PREFIX) + KEY_LEN or not der.startswith(DER_PREFIX):
        raise BlsError(
            f"not a DER BLS12-381 G2 key ({len(der)} bytes; expected "
            f"{len(DER_PREFIX) + KEY_LEN} starting with the IC BLS algorithm identifier)"
        )
    return der[len(DER_PREFIX) :]


@lru_cache(maxsize=64)
def _public_key_point(key: bytes) -> Any:
    if len(key) != KEY_LEN:
        raise BlsError(f"public key is {len(key)} bytes, not {KEY_LEN}")
    try:
        z1, z2 = int.from_bytes(key[:48], "big"), int.from_bytes(key[48:], "big")
        point = decompress_G2(G2Compressed((z1, z2)))
    except ValueError as exc:
        raise BlsError(f"public key is not a G2 point: {exc}") from None
    if is_inf(point):
        raise BlsError("public key is the point at infinity")
    if not is_inf(multiply(point, curve_order)):
        raise BlsError("public key is not in the G2 prime-order subgroup")
    return point


def _signature_point(signature: bytes) -> Any:
    if len(signature) != SIGNATURE_LEN:
        raise BlsError(f"signature is {len(signature)} bytes, not {SIGNATURE_LEN}")
    try:
        point = decompress_G1(G1Compressed(int.from_bytes(signature, "big")))
    except ValueError as exc:
        raise BlsError(f"signature is not a G1 point: {exc}") from None
    if is_inf(point):
        raise BlsError("signature is the point at infinity")
    if not is_inf(multiply(point, curve_order)):
        raise BlsError("signature is not in the G1 prime-order subgroup")
    return point


def verify(key: bytes, message: bytes, signature: bytes) -> None:
    """Return if `signature` on `message` verifies under the raw G2 `key`; else BlsError."""
    pk = _public_key_point(key)
    sig = _signature_point(signature)
    hashed = hash_to_G1(message, DST, cast(Any, hashlib.sha256))
    # e(sig, g2) == e(H(m), pk)  <=>  e(-sig, g2) * e(H(m), pk) == 1: one final exponentiation.
    product = miller_loop(G2, neg(sig), final_exponentiate=False) * miller_loop(
        pk, hashed, final_exponentiate=False
    )
    if final_exponentiate(product) != FQ12.one():
        raise BlsError("signature does not verify under the key")
