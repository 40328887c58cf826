"""Intel TDX quotes v4 and v5: parsing and verification up to the pinned Intel SGX Root CA.

Layout (Intel TDX DCAP quote): a 48-byte header (version, attestation key type 2 = ECDSA
P-256, TEE type 0x81 = TDX, QE vendor ID), then the TD report body (v4: 584 bytes; v5:
a body type and size first, type 2 = TDX 1.0 584 bytes, type 3 = TDX 1.5 648 bytes),
then the signature data: a P-256 signature (r || s) over everything before it, the
64-byte attestation key (x || y) and certification data type 6, which holds the QE
report (384 bytes), the PCK's signature over it, the QE authentication data and the
PCK certificate chain (certification data type 5, PEM). The QE report's REPORT_DATA
must be SHA-256(attestation key || QE auth data) || 32 zero bytes. Bytes after the quote
(zero padding, or the test text some samples carry) are counted, not interpreted.
The QE must be Intel's TD quoting enclave (its MRSIGNER and product ID) and not debug;
TCB info, the QE identity's TCB levels and revocation lists from Intel PCS are not
checked here.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.errors import FormatError
from attestation.tee.certs import (
    CertificateFormatError,
    cert_sha256,
    common_name,
    ecdsa_ok,
    issuer_error,
    load_certificates,
    validity_error,
)
from attestation.tee.policy import TDX_TCB_SVN_LEN, Policy
from attestation.tee.steps import Checklist

HEADER_LEN = 48
TEE_TYPE_TDX = 0x81
ATT_KEY_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
BODY_LEN = {2: 584, 3: 648}
QE_REPORT_LEN = 384
TD_ATTRIBUTES_DEBUG = 1
_PEM_CHAIN = re.compile(
    rb"(-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n)+"
)
# Intel's quoting-enclave signer (MRSIGNER of the QE identity Intel PCS publishes), the
# TD QE's product ID, and the DEBUG bit of SGX enclave attributes.
INTEL_QE_MRSIGNER = bytes.fromhex(
    "dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"
)
TD_QE_ISV_PROD_ID = 2
SGX_ATTRIBUTES_DEBUG = 0x02
# Intel SGX Root CA, SHA-256 of the DER certificate.
INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


class TdxFormatError(FormatError):
    """Bytes that are not a TDX quote this module understands.

    `verify_tdx` reports it as a failed parse step; a direct caller should treat the
    bytes as no evidence and collect or export the quote again.
    """


@dataclass(frozen=True)
class TdxQuote:
    """The fields of a TDX quote that verification and policy use."""

    version: int
    body_type: int
    signed: bytes
    tee_tcb_svn: bytes
    mr_seam: bytes
    td_attributes: bytes
    mr_td: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain: bytes
    trailing: int

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_ATTRIBUTES_DEBUG)


def _take(data: bytes, offset: int, size: int, what: str) -> bytes:
    if offset + size > len(data):
        raise TdxFormatError(
            f"quote truncated in {what} (needs {offset + size} bytes, has {len(data)})"
        )
    return data[offset : offset + size]


def parse_quote(data: bytes) -> TdxQuote:
    """Parse a v4 or v5 TDX quote; TdxFormatError says what is wrong."""
    header = _take(data, 0, HEADER_LEN, "the header")
    version, key_type, tee_type = struct.unpack_from("<HHI", header, 0)
    if version not in (4, 5):
        raise TdxFormatError(f"quote version {version} is not supported (4 and 5 are)")
    if tee_type != TEE_TYPE_TDX:
        raise TdxFormatError(f"TEE type {tee_type:#x} is not TDX (0x81)")
    if key_type != ATT_KEY_ECDSA_P256:
        raise TdxFormatError(f"attestation key type {key_type}; only 2 (ECDSA P-256) is known")
    if header[12:28] != INTEL_QE_VENDOR_ID:
        raise TdxFormatError(f"QE vendor ID {header[12:28].hex()} is not Intel's")
    offset = HEADER_LEN
    body_type = 2
    if version == 5:
        body_type, body_size = struct.unpack_from(
            "<HI", _take(data, offset, 6, "the body descriptor")
        )
        if BODY_LEN.get(body_type) != body_size:
            raise TdxFormatError(
                f"v5 body type {body_type} of {body_size} bytes is not a TD report"
            )
        offset += 6
    body = _take(data, offset, BODY_LEN[body_type], "the TD report")
    offset += len(body)
    signed = data[:offset]
    (sig_len,) = struct.unpack("<I", _take(data, offset, 4, "the signature length"))
    sig_data = _take(data, offset + 4, sig_len, "the signature data")
    trailing = len(data) - (offset + 4 + sig_len)
    if sig_len < 134:
        raise TdxFormatError(f"signature data of {sig_len} bytes is too short")
    cert_type, cert_size = struct.unpack_from("<HI", sig_data, 128)
    if cert_type != 6:
        raise TdxFormatError(f"certification data type {cert_type}; expected 6 (QE report)")
    if cert_size != sig_len - 134:
        raise TdxFormatError("certification data size does not match the signature data")
    cert_data = sig_data[134:]
    qe_report = _take(cert_data, 0, QE_REPORT_LEN, "the QE report")
    qe_sig = _take(cert_data, QE_REPORT_LEN, 64, "the QE report signature")
    (auth_len,) = struct.unpack("<H", _take(cert_data, 448, 2, "the QE auth data length"))
    auth = _take(cert_data, 450, auth_len, "the QE auth data")
    inner = 450 + auth_len
    inner_type, inner_size = struct.unpack(
        "<HI", _take(cert_data, inner, 6, "the PCK chain header")
    )
    if inner_type != 5:
        raise TdxFormatError(f"inner certification data type {inner_type}; expected 5 (PCK chain)")
    if inner + 6 + inner_size != len(cert_data):
        raise TdxFormatError("PCK chain size does not match the certification data")
    chain = cert_data[inner + 6 :]
    # The chain is not signed: accept only exact PEM (and the NUL some QEs append), so
    # that no byte of a quote can change without verification noticing.
    if not _PEM_CHAIN.fullmatch(chain.removesuffix(b"\0")):
        raise TdxFormatError("the PCK chain is not plain PEM certificates")
    return TdxQuote(
        version=version,
        body_type=body_type,
        signed=signed,
        tee_tcb_svn=body[0:16],
        mr_seam=body[16:64],
        td_attributes=body[120:128],
        mr_td=body[136:184],
        rtmrs=(body[328:376], body[376:424], body[424:472], body[472:520]),
        report_data=body[520:584],
        signature=sig_data[0:64],
        attestation_key=sig_data[64:128],
        qe_report=qe_report,
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        pck_chain=chain,
        trailing=trailing,
    )


@dataclass(frozen=True)
class VerifiedTdx:
    """A quote that passed every step, with the steps."""

    quote: TdxQuote
    steps: tuple[str, ...]


def _p256_key(raw: bytes) -> ec.EllipticCurvePublicKey | None:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError:
        return None


def _sig_ok(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    return ecdsa_ok(key, r, s, data, hashes.SHA256())


def verify_tdx(
    evidence: bytes,
    *,
    policy: Policy,
    at: datetime,
    report_data: bytes | None = None,
) -> VerifiedTdx:
    """Verify a TDX quote and its embedded PCK chain against the pinned Intel SGX Root CA.

    `report_data`: the expected REPORTDATA (SHA-256(binding document) || 0^32), or None
    to skip the binding step. Returns the verified quote or raises VerificationError
    naming the failing step.
    """
    check = Checklist()
    # 1. Parse the quote.
    step = "tdx.1 parse quote"
    try:
        quote = parse_quote(evidence)
    except TdxFormatError as exc:
        check.fail(step, str(exc))
    body = "TDX 1.5" if quote.body_type == 3 else "TDX 1.0"
    extra = f", {quote.trailing} trailing byte(s) ignored" if quote.trailing else ""
    check.ok(step, f"version {quote.version}, {body} TD report{extra}")
    # 2. The PCK chain ends at the pinned Intel SGX Root CA.
    step = "tdx.2 pinned Intel root"
    try:
        certs = load_certificates(quote.pck_chain)
    except CertificateFormatError as exc:
        check.fail(step, f"PCK chain: {exc}")
    if len(certs) != 3:
        check.fail(step, f"PCK chain has {len(certs)} certificates; expected leaf, CA and root")
    leaf, intermediate, root = certs
    if cert_sha256(root) != INTEL_ROOT_SHA256:
        check.fail(
            step,
            f"chain root {common_name(root)!r} ({cert_sha256(root)[:16]}…) "
            "is not the Intel SGX Root CA",
        )
    check.ok(step, f"Intel SGX Root CA {INTEL_ROOT_SHA256[:16]}…")
    # 3. Root -> PCK CA -> PCK signatures.
    step = "tdx.3 PCK chain"
    for child, parent in ((root, root), (intermediate, root), (leaf, intermediate)):
        problem = issuer_error(child, parent)
        if problem:
            check.fail(step, problem)
    pck_key = leaf.public_key()
    if not isinstance(pck_key, ec.EllipticCurvePublicKey) or not isinstance(
        pck_key.curve, ec.SECP256R1
    ):
        check.fail(step, "PCK key is not ECDSA P-256")
    check.ok(step, f"root -> {common_name(intermediate)} -> {common_name(leaf)}")
    # 4. Every certificate is valid at the chosen time.
    step = "tdx.4 validity dates"
    for cert in certs:
        problem = validity_error(cert, at)
        if problem:
            check.fail(step, f"{problem} (checked at {at:%Y-%m-%d %H:%M} UTC)")
    check.ok(step, f"all valid at {at:%Y-%m-%d %H:%M} UTC")
    # 5. The PCK signed the QE report.
    step = "tdx.5 QE report signature"
    if not _sig_ok(pck_key, quote.qe_report_signature, quote.qe_report):
        check.fail(step, "QE report signature does not verify with the PCK key")
    check.ok(step, "signed by the PCK")
    # 6. The QE is Intel's TD quoting enclave, not in debug mode.
    step = "tdx.6 QE identity"
    isv_prod_id = int.from_bytes(quote.qe_report[256:258], "little")
    if quote.qe_report[128:160] != INTEL_QE_MRSIGNER:
        check.fail(step, f"QE MRSIGNER {quote.qe_report[128:160].hex()[:16]}… is not Intel's")
    if isv_prod_id != TD_QE_ISV_PROD_ID:
        check.fail(step, f"QE product ID {isv_prod_id} is not the TD quoting enclave (2)")
    if quote.qe_report[48] & SGX_ATTRIBUTES_DEBUG:
        check.fail(step, "the quoting enclave runs in debug mode")
    isv_svn = int.from_bytes(quote.qe_report[258:260], "little")
    check.ok(step, f"Intel TD QE, ISVSVN {isv_svn}")
    # 7. The QE report vouches for the attestation key.
    step = "tdx.7 QE report data"
    expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest() + bytes(32)
    if quote.qe_report[320:384] != expected:
        check.fail(step, "QE REPORT_DATA is not SHA-256(attestation key || QE auth data) || 0^32")
    check.ok(step, "binds the attestation key")
    # 8. The attestation key signed the header and TD report.
    step = "tdx.8 quote signature"
    att_key = _p256_key(quote.attestation_key)
    if att_key is None or not _sig_ok(att_key, quote.signature, quote.signed):
        check.fail(step, "quote signature does not verify with the attestation key")
    check.ok(step, f"ECDSA P-256 over {len(quote.signed)} bytes of header and TD report")
    # 9. REPORTDATA matches the binding document.
    step = "tdx.9 binding"
    if report_data is None:
        check.ok(step, "no binding document given: the quote is not tied to a node key")
    elif quote.report_data != report_data:
        check.fail(step, "REPORTDATA does not match the binding document (SHA-256 || 0^32)")
    else:
        check.ok(step, "REPORTDATA = SHA-256(binding document) || 0^32")
    # 10. Policy: debug, TEE TCB minimums, MRTD allow-list.
    step = "tdx.10 policy"
    if quote.debug and not policy.allow_debug:
        check.fail(step, "TD attributes allow debugging; the policy forbids it")
    for index, minimum in enumerate(policy.tdx_min_tee_tcb_svn[:TDX_TCB_SVN_LEN]):
        if quote.tee_tcb_svn[index] < minimum:
            check.fail(
                step,
                f"TEE_TCB_SVN[{index}] = {quote.tee_tcb_svn[index]} is below the minimum {minimum}",
            )
    problem = policy.measurement_error(quote.mr_td.hex())
    if problem:
        check.fail(step, problem)
    check.ok(step, policy.describe())
    return VerifiedTdx(quote, check.passed)
