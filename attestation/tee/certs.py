"""X.509 helpers the verifiers share: loading, issuer signatures, dates, pins, raw ECDSA.

AMD's VCEK and VLEK certificates carry serial number 0, which RFC 5280 forbids and which
`cryptography` 42+ parses with a deprecation warning (a future release may refuse them);
`load_certificates` silences exactly that warning, and a test pins that they still load.
"""

from __future__ import annotations

import hashlib
import warnings
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from attestation.errors import FormatError

PEM_MARKER = b"-----BEGIN CERTIFICATE-----"


class CertificateFormatError(FormatError):
    """Bytes that are not a certificate (or a PEM bundle of them).

    The verifiers report it as a failed chain step; a direct caller should pass the
    certificates again (PEM or DER, as the vendor publishes them).
    """


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates of a PEM bundle, or the one DER certificate `data` holds."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*serial number.*", category=CryptographyDeprecationWarning
        )
        try:
            if PEM_MARKER in data:
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise CertificateFormatError(f"not a certificate: {exc}") from None
        for cert in certs:
            _parse_eagerly(cert)
    if not certs:
        raise CertificateFormatError("no certificate found")
    return certs


def _parse_eagerly(cert: x509.Certificate) -> None:
    """Touch every field the verifiers read: `cryptography` parses some lazily, and a
    damaged field must fail here, as a format error, not deep inside a check."""
    try:
        _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _ = (list(cert.extensions), cert.public_key(), cert.signature_hash_algorithm)
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateFormatError(f"malformed certificate: {exc}") from None


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def issuer_error(child: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """None when `issuer` signed `child` (names match and the signature holds), else why not."""
    try:
        child.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return f"signature of {common_name(child)!r} does not verify with {common_name(issuer)!r}"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"{common_name(child)!r} is not issued by {common_name(issuer)!r}: {exc}"
    return None


def validity_error(cert: x509.Certificate, at: datetime) -> str | None:
    """None when `at` lies within the certificate's validity period, else why not."""
    if at < cert.not_valid_before_utc:
        return f"{common_name(cert)!r} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
    if at > cert.not_valid_after_utc:
        return f"{common_name(cert)!r} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def spki_sha256(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo (the form AMD roots are pinned in)."""
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def cert_sha256(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the whole DER certificate (the form Intel and NVIDIA roots are pinned in)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def ecdsa_ok(
    key: ec.EllipticCurvePublicKey, r: int, s: int, data: bytes, hash_alg: hashes.HashAlgorithm
) -> bool:
    """Whether (r, s) is a valid ECDSA signature of `data` under `key`."""
    if (
        r <= 0
        or s <= 0
        or r.bit_length() > key.curve.key_size
        or s.bit_length() > key.curve.key_size
    ):
        return False
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_alg))
    except InvalidSignature:
        return False
    return True


def der_small_int(value: bytes) -> int | None:
    """The value of a DER INTEGER (as AMD's TCB extensions hold), None if it is not one."""
    if len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2 or value[1] > 8:
        return None
    return int.from_bytes(value[2:], "big", signed=True)


def der_octets(value: bytes) -> bytes:
    """The content of a DER OCTET STRING, or `value` itself when it is not wrapped in one."""
    if len(value) >= 2 and value[0] == 0x04 and value[1] == len(value) - 2:
        return value[2:]
    return value
