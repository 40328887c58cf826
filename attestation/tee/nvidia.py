"""NVIDIA H100 confidential-computing evidence: SPDM 1.1 measurement reports.

A report is the GET_MEASUREMENTS request (37 bytes: version 0x11, code 0xE0, params, the
caller's 32-byte nonce, slot) followed by the MEASUREMENTS response (version 0x11, code
0x60, block count, a 24-bit record length, the measurement record, the responder's nonce,
opaque data, and a 96-byte ECDSA P-384 signature, r || s, over request || response up to
the signature). The signing key is the leaf of a 5-certificate chain (GSP FMC -> GSP
BROM -> GH100 Provisioner ICA -> GH100 Identity -> NVIDIA Device Identity CA), and the
root is pinned. The FWID in the report's opaque data must be one that the leaf
certificate's TCG DICE TcbInfo extension names. The request nonce is the only
caller-chosen field, so the node binds its keys there: nonce = SHA-256(binding document).
Golden measurements (NVIDIA's RIMs) are not checked here; the policy's allow-list holds
SHA-384 digests of whole measurement records instead.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
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
from attestation.tee.policy import Policy
from attestation.tee.steps import Checklist

REQUEST_LEN = 37
SIGNATURE_LEN = 96
CHAIN_LEN = 5
SPDM_VERSION = 0x11
# NVIDIA Device Identity CA, SHA-256 of the DER certificate.
NVIDIA_ROOT_SHA256 = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
_DRIVER_VERSION_TYPE = 3
_FWID_TYPE = 20
# In the leaf's TCG DICE TcbInfo extension each FWID is SEQUENCE { hashAlg, OCTET STRING };
# H100 FWIDs are SHA-384: the OID 2.16.840.1.101.3.4.2.2, then a 48-byte OCTET STRING.
_TCB_INFO_OID = "2.23.133.5.4.1"
_SHA384_FWID_PREFIX = bytes.fromhex("0609608648016503040202" + "0430")


class NvidiaFormatError(FormatError):
    """Bytes that are not an SPDM measurement report this module understands.

    `verify_gpu` reports it as a failed parse step; a direct caller should treat the
    bytes as no evidence and collect the GPU's report again.
    """


@dataclass(frozen=True)
class SpdmReport:
    """The parts of an SPDM GET_MEASUREMENTS exchange that verification uses."""

    nonce: bytes
    blocks: int
    record: bytes
    opaque: bytes
    signed: bytes
    signature: bytes
    trailing: int

    @property
    def measurement_digest(self) -> str:
        """SHA-384 of the measurement record: what the policy's allow-list holds for GPUs."""
        return hashlib.sha384(self.record).hexdigest()

    def opaque_field(self, kind: int) -> bytes | None:
        """The value of one type-length-value field of NVIDIA's opaque data."""
        offset = 0
        while offset + 4 <= len(self.opaque):
            field_kind, size = struct.unpack_from("<HH", self.opaque, offset)
            if field_kind == kind:
                return self.opaque[offset + 4 : offset + 4 + size]
            offset += 4 + size
        return None

    @property
    def driver_version(self) -> str | None:
        raw = self.opaque_field(_DRIVER_VERSION_TYPE)
        return None if raw is None else raw.rstrip(b"\0").decode("ascii", "replace")


def parse_report(data: bytes) -> SpdmReport:
    """Parse request || response; only trailing zero bytes may follow the signature."""
    if len(data) < REQUEST_LEN + 8:
        raise NvidiaFormatError(f"SPDM report too short: {len(data)} bytes")
    request, response = data[:REQUEST_LEN], data[REQUEST_LEN:]
    if request[0] != SPDM_VERSION or request[1] != 0xE0:
        raise NvidiaFormatError(
            f"not an SPDM 1.1 GET_MEASUREMENTS request "
            f"(version {request[0]:#x}, code {request[1]:#x})"
        )
    if not request[2] & 1:
        raise NvidiaFormatError("the request did not ask for a signature")
    if response[0] != SPDM_VERSION or response[1] != 0x60:
        raise NvidiaFormatError(
            f"not an SPDM 1.1 MEASUREMENTS response "
            f"(version {response[0]:#x}, code {response[1]:#x})"
        )
    blocks = response[4]
    record_len = int.from_bytes(response[5:8], "little")
    offset = 8 + record_len
    if offset + 34 > len(response):
        raise NvidiaFormatError("response truncated in the measurement record")
    record = response[8:offset]
    offset += 32  # the responder's nonce
    (opaque_len,) = struct.unpack_from("<H", response, offset)
    offset += 2
    if offset + opaque_len + SIGNATURE_LEN > len(response):
        raise NvidiaFormatError("response truncated in the opaque data or signature")
    opaque = response[offset : offset + opaque_len]
    offset += opaque_len
    signature = response[offset : offset + SIGNATURE_LEN]
    rest = response[offset + SIGNATURE_LEN :]
    if any(rest):
        raise NvidiaFormatError(f"{len(rest)} non-zero byte(s) after the signature")
    return SpdmReport(
        nonce=request[4:36],
        blocks=blocks,
        record=record,
        opaque=opaque,
        signed=data[: REQUEST_LEN + offset],
        signature=signature,
        trailing=len(rest),
    )


@dataclass(frozen=True)
class VerifiedGpu:
    """A GPU report that passed every step, with the steps."""

    report: SpdmReport
    steps: tuple[str, ...]


def verify_gpu(
    evidence: bytes,
    certificates: bytes,
    *,
    policy: Policy,
    at: datetime,
    nonce: bytes | None = None,
) -> VerifiedGpu:
    """Verify an H100 SPDM measurement report and its chain against the pinned NVIDIA root.

    `certificates`: the PEM chain the GPU returned, leaf first. `nonce`: the expected
    32-byte request nonce (SHA-256(binding document), or the nonce the caller chose), or
    None to skip that step. Returns the verified report or raises VerificationError
    naming the failing step.
    """
    check = Checklist()
    # 1. Parse the SPDM request and response.
    step = "gpu.1 parse report"
    try:
        report = parse_report(evidence)
    except NvidiaFormatError as exc:
        check.fail(step, str(exc))
    check.ok(step, f"SPDM 1.1, {report.blocks} measurement blocks, driver {report.driver_version}")
    # 2. The chain ends at the pinned NVIDIA Device Identity CA.
    step = "gpu.2 pinned NVIDIA root"
    try:
        certs = load_certificates(certificates)
    except CertificateFormatError as exc:
        check.fail(step, str(exc))
    if len(certs) != CHAIN_LEN:
        check.fail(step, f"chain has {len(certs)} certificates; expected {CHAIN_LEN}")
    root = certs[-1]
    if cert_sha256(root) != NVIDIA_ROOT_SHA256:
        check.fail(step, f"chain root {common_name(root)!r} is not the NVIDIA Device Identity CA")
    check.ok(step, f"NVIDIA Device Identity CA {NVIDIA_ROOT_SHA256[:16]}…")
    # 3. Each certificate is signed by the next.
    step = "gpu.3 certificate chain"
    for child, parent in zip(certs, [*certs[1:], root], strict=True):
        problem = issuer_error(child, parent)
        if problem:
            check.fail(step, problem)
    check.ok(step, " -> ".join(common_name(c) for c in reversed(certs)))
    # 4. Every certificate is valid at the chosen time.
    step = "gpu.4 validity dates"
    for cert in certs:
        problem = validity_error(cert, at)
        if problem:
            check.fail(step, f"{problem} (checked at {at:%Y-%m-%d %H:%M} UTC)")
    check.ok(step, f"all valid at {at:%Y-%m-%d %H:%M} UTC")
    # 5. The leaf key signed request || response.
    step = "gpu.5 report signature"
    key = certs[0].public_key()
    r = int.from_bytes(report.signature[:48], "big")
    s = int.from_bytes(report.signature[48:], "big")
    if (
        not isinstance(key, ec.EllipticCurvePublicKey)
        or not isinstance(key.curve, ec.SECP384R1)
        or not ecdsa_ok(key, r, s, report.signed, hashes.SHA384())
    ):
        check.fail(step, f"signature does not verify with {common_name(certs[0])!r}")
    check.ok(step, "ECDSA P-384 over request and response")
    # 6. The firmware the report names is the firmware the leaf certificate was made for.
    step = "gpu.6 firmware ID"
    fwid = report.opaque_field(_FWID_TYPE)
    cert_fwids = _leaf_fwids(certs[0])
    if fwid is None or len(fwid) != 48:
        check.fail(step, "the report's opaque data holds no 48-byte FWID")
    if fwid not in cert_fwids:
        check.fail(step, f"FWID {fwid.hex()[:16]}… is not in {common_name(certs[0])!r}")
    check.ok(step, f"FWID {fwid.hex()[:16]}… matches the leaf certificate")
    # 7. The request nonce is the one the caller chose (the binding document's hash).
    step = "gpu.7 nonce"
    if nonce is None:
        check.ok(step, "no nonce given: the report is not tied to a node key")
    elif report.nonce != nonce:
        check.fail(
            step,
            f"request nonce {report.nonce.hex()[:16]}… is not the expected {nonce.hex()[:16]}…",
        )
    else:
        check.ok(step, "request nonce matches")
    # 8. Policy: the measurement record is allowed (debug and TCB do not apply to GPUs here).
    step = "gpu.8 policy"
    problem = policy.measurement_error(report.measurement_digest)
    if problem:
        check.fail(step, problem)
    check.ok(step, policy.describe())
    return VerifiedGpu(report, check.passed)


def _leaf_fwids(cert: x509.Certificate) -> list[bytes]:
    for ext in cert.extensions:
        if ext.oid.dotted_string == _TCB_INFO_OID and isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            raw = ext.value.value
            found, start = [], raw.find(_SHA384_FWID_PREFIX)
            while start >= 0:
                begin = start + len(_SHA384_FWID_PREFIX)
                found.append(raw[begin : begin + 48])
                start = raw.find(_SHA384_FWID_PREFIX, begin)
            return found
    return []
