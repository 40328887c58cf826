"""AMD SEV-SNP attestation reports: parsing and verification up to a pinned AMD root.

Layout (SEV-SNP ABI, ATTESTATION_REPORT): 0x4A0 bytes, little-endian. The ECDSA P-384 /
SHA-384 signature covers bytes 0x000-0x29F; r and s are 72-byte little-endian fields at
0x2A0 and 0x2E8 of which the low 48 bytes are used. Chain: ARK (self-signed, pinned by
the SHA-256 of its SubjectPublicKeyInfo) -> ASK (or ASVK for a VLEK) -> VCEK (or VLEK),
RSA-PSS SHA-384. Azure's "HCL report" carries the SNP report at offset 0x20, followed by
runtime claims (JSON holding the vTPM key and 64 bytes of user data) whose SHA-256 is
the report's REPORT_DATA.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.errors import FormatError
from attestation.tee.certs import (
    CertificateFormatError,
    common_name,
    der_octets,
    der_small_int,
    ecdsa_ok,
    issuer_error,
    load_certificates,
    spki_sha256,
    validity_error,
)
from attestation.tee.policy import Policy
from attestation.tee.steps import Checklist

REPORT_LEN = 0x4A0
SIGNED_LEN = 0x2A0
SUPPORTED_VERSIONS = (2, 3)
POLICY_DEBUG_BIT = 1 << 19
SIGNING_KEY_NAMES = {0: "VCEK", 1: "VLEK"}

# SHA-256 of the DER SubjectPublicKeyInfo of each ARK (see tests/attestation/tee/vectors/README.md).
PINNED_ARKS: dict[str, str] = {
    "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9": "Milan",
    "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831": "Genoa",
    "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08": "Turin",
}
# CPUID family and model range of each product line (reports v3+ carry them).
_PRODUCT_CPUID = {
    "Milan": (0x19, range(0x00, 0x10)),
    "Genoa": (0x19, range(0x10, 0x20)),
    "Turin": (0x1A, range(0x00, 0x100)),
}
# Byte index of each TCB part inside the little-endian TCB_VERSION; Turin moved them.
_TCB_LAYOUT = {
    "Milan": {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7},
    "Genoa": {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7},
    "Turin": {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7},
}
# The VCEK/VLEK extension holding each TCB part's SVN.
_TCB_OIDS = {
    "bootloader": "1.3.6.1.4.1.3704.1.3.1",
    "tee": "1.3.6.1.4.1.3704.1.3.2",
    "snp": "1.3.6.1.4.1.3704.1.3.3",
    "microcode": "1.3.6.1.4.1.3704.1.3.8",
    "fmc": "1.3.6.1.4.1.3704.1.3.9",
}
_HWID_OID = "1.3.6.1.4.1.3704.1.4"
HCL_MAGIC = b"HCLA"
HCL_HEADER_LEN = 0x20
HCL_RUNTIME_OFFSET = HCL_HEADER_LEN + REPORT_LEN
HCL_RUNTIME_HEADER_LEN = 20


class SnpFormatError(FormatError):
    """Bytes that are not an SNP report (or HCL report) this module understands.

    `verify_snp` reports it as a failed parse step; a direct caller should treat the
    bytes as no evidence and collect or export the report again.
    """


@dataclass(frozen=True)
class SnpReport:
    """The fields of an SNP attestation report that verification and policy use."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    vmpl: int
    signature_algo: int
    signing_key: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    reported_tcb: bytes
    cpuid: tuple[int, int, int] | None
    chip_id: bytes
    sig_r: int
    sig_s: int

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG_BIT)


def parse_report(data: bytes) -> SnpReport:
    """Parse exactly one 0x4A0-byte report; SnpFormatError says what is wrong."""
    if len(data) != REPORT_LEN:
        raise SnpFormatError(f"SNP report must be {REPORT_LEN} bytes, got {len(data)}")
    version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0)
    if version not in SUPPORTED_VERSIONS:
        raise SnpFormatError(
            f"SNP report version {version} is not supported (supported: "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    vmpl, signature_algo = struct.unpack_from("<II", data, 0x30)
    if signature_algo != 1:
        raise SnpFormatError(f"signature algorithm {signature_algo}; only 1 (ECDSA P-384) is known")
    (flags,) = struct.unpack_from("<I", data, 0x48)
    signing_key = (flags >> 2) & 0x7
    if signing_key not in SIGNING_KEY_NAMES:
        raise SnpFormatError(f"report signed by key type {signing_key}, not a VCEK or VLEK")
    r_field, s_field = data[0x2A0:0x2E8], data[0x2E8:0x330]
    if any(r_field[48:]) or any(s_field[48:]) or any(data[0x330:]):
        raise SnpFormatError("non-zero bytes in the unused part of the signature field")
    cpuid = (data[0x188], data[0x189], data[0x18A]) if version >= 3 else None
    return SnpReport(
        raw=data,
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        vmpl=vmpl,
        signature_algo=signature_algo,
        signing_key=signing_key,
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        reported_tcb=data[0x180:0x188],
        cpuid=cpuid,
        chip_id=data[0x1A0:0x1E0],
        sig_r=int.from_bytes(r_field[:48], "little"),
        sig_s=int.from_bytes(s_field[:48], "little"),
    )


@dataclass(frozen=True)
class HclReport:
    """Azure's HCL report: the SNP report and the runtime claims its REPORT_DATA hashes."""

    report: SnpReport
    runtime_data: bytes
    hash_type: int

    @property
    def claims(self) -> dict[str, Any]:
        parsed = json.loads(self.runtime_data)
        return parsed if isinstance(parsed, dict) else {}


def parse_hcl(data: bytes) -> HclReport:
    """Parse an Azure HCL report; bytes past its declared size must be zero padding."""
    if len(data) < HCL_RUNTIME_OFFSET + HCL_RUNTIME_HEADER_LEN:
        raise SnpFormatError(f"HCL report too short: {len(data)} bytes")
    if data[:4] != HCL_MAGIC:
        raise SnpFormatError("not an HCL report (no HCLA magic)")
    version, total, request_type, status = struct.unpack_from("<IIII", data, 4)
    if version not in (1, 2) or request_type != 2:
        raise SnpFormatError(f"HCL report version {version}, request type {request_type} unknown")
    if status != 0 or any(data[20:HCL_HEADER_LEN]):
        raise SnpFormatError(f"HCL report status {status:#x}: the report request failed")
    report = parse_report(data[HCL_HEADER_LEN:HCL_RUNTIME_OFFSET])
    data_size, rt_version, report_type, hash_type, var_size = struct.unpack_from(
        "<IIIII", data, HCL_RUNTIME_OFFSET
    )
    start = HCL_RUNTIME_OFFSET + HCL_RUNTIME_HEADER_LEN
    if report_type != 2 or rt_version != 1 or data_size != var_size + HCL_RUNTIME_HEADER_LEN:
        raise SnpFormatError("HCL runtime data header is inconsistent or not for SNP")
    if total != start + var_size or len(data) < total:
        raise SnpFormatError(f"HCL report declares {total} bytes but holds {len(data)}")
    if any(data[total:]):
        raise SnpFormatError("non-zero bytes after the HCL report")
    runtime = data[start:total]
    try:
        json.loads(runtime)
    except ValueError:
        raise SnpFormatError("HCL runtime claims are not JSON") from None
    return HclReport(report=report, runtime_data=runtime, hash_type=hash_type)


@dataclass(frozen=True)
class VerifiedSnp:
    """A report that passed every step: which chip line and key signed it, and the steps."""

    report: SnpReport
    product: str
    key_kind: str
    steps: tuple[str, ...]
    hcl: HclReport | None = None


@dataclass(frozen=True)
class _Chain:
    ark: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    product: str


def verify_snp(
    evidence: bytes,
    certificates: bytes | list[bytes],
    *,
    policy: Policy,
    at: datetime,
    report_data: bytes | None = None,
    pinned_arks: Mapping[str, str] = PINNED_ARKS,
) -> VerifiedSnp:
    """Verify a raw SNP report or an Azure HCL report against the pinned AMD roots.

    `certificates`: PEM bundle(s) or DER blobs holding the VCEK or VLEK and its ASK or
    ASVK and ARK (the ARK must match a pin; the chain's own copy is never trusted as is).
    `report_data`: the expected REPORT_DATA (SHA-256(binding document) || 0^32), or None
    to skip the binding step (raw evidence with no binding document; the caller says so).
    `pinned_arks` maps ARK SPKI SHA-256 digests to product lines (default: AMD's three).
    Returns the verified report or raises VerificationError naming the failing step.
    """
    check = Checklist()
    # 1. Parse the report (and the HCL wrapper around it).
    step = "snp.1 parse report"
    hcl: HclReport | None = None
    try:
        if evidence[:4] == HCL_MAGIC:
            hcl = parse_hcl(evidence)
            report = hcl.report
        else:
            report = parse_report(evidence)
    except SnpFormatError as exc:
        check.fail(step, str(exc))
    key_kind = SIGNING_KEY_NAMES[report.signing_key]
    check.ok(
        step,
        f"version {report.version}, signed by a {key_kind}"
        + (", in an Azure HCL report" if hcl else ""),
    )
    # 2. Find the ARK among the certificates and match it against the pins.
    step = "snp.2 pinned AMD root"
    certs = _load(check, "snp.2 pinned AMD root", certificates)
    chain = _pick_chain(check, step, certs, key_kind, pinned_arks)
    check.ok(step, f"ARK-{chain.product}, SPKI {spki_sha256(chain.ark)[:16]}…")
    # 3. The ARK signed itself, the ASK/ASVK and (through it) the VCEK/VLEK.
    step = "snp.3 certificate chain"
    for child, parent in (
        (chain.ark, chain.ark),
        (chain.intermediate, chain.ark),
        (chain.leaf, chain.intermediate),
    ):
        problem = issuer_error(child, parent)
        if problem:
            check.fail(step, problem)
        if not isinstance(child.signature_hash_algorithm, hashes.SHA384):
            check.fail(step, f"{common_name(child)!r} is not signed with SHA-384")
    if not isinstance(chain.leaf.public_key(), ec.EllipticCurvePublicKey):
        check.fail(step, f"{key_kind} key is not an EC key")
    check.ok(step, f"ARK -> {common_name(chain.intermediate)} -> {key_kind}")
    # 4. Every certificate is valid at the chosen time.
    step = "snp.4 validity dates"
    for cert in (chain.ark, chain.intermediate, chain.leaf):
        problem = validity_error(cert, at)
        if problem:
            check.fail(step, f"{problem} (checked at {at:%Y-%m-%d %H:%M} UTC)")
    check.ok(step, f"all valid at {at:%Y-%m-%d %H:%M} UTC")
    # 5. The endorsement key belongs to this chip line, this chip (VCEK) and this TCB.
    step = "snp.5 key matches report"
    _check_key_matches(check, step, report, chain, key_kind)
    # 6. The report signature.
    step = "snp.6 report signature"
    leaf_key = chain.leaf.public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey)
    if not isinstance(leaf_key.curve, ec.SECP384R1) or not ecdsa_ok(
        leaf_key, report.sig_r, report.sig_s, report.raw[:SIGNED_LEN], hashes.SHA384()
    ):
        check.fail(step, f"ECDSA P-384 signature does not verify with the {key_kind}")
    check.ok(step, f"ECDSA P-384 over bytes 0x000-0x{SIGNED_LEN - 1:03X}")
    # 7. REPORT_DATA binds what it should: the HCL runtime claims, and the node's document.
    step = "snp.7 binding"
    check.ok(step, _check_binding(check, step, report, hcl, report_data))
    # 8. Policy: debug, TCB minimums, measurement allow-list.
    step = "snp.8 policy"
    _check_policy(check, step, report, chain.product, policy)
    check.ok(step, policy.describe())
    return VerifiedSnp(report, chain.product, key_kind, check.passed, hcl)


def _load(check: Checklist, step: str, certificates: bytes | list[bytes]) -> list[x509.Certificate]:
    blobs = [certificates] if isinstance(certificates, bytes) else certificates
    certs: list[x509.Certificate] = []
    try:
        for blob in blobs:
            certs.extend(load_certificates(blob))
    except CertificateFormatError as exc:
        check.fail(step, str(exc))
    return certs


def _pick_chain(
    check: Checklist,
    step: str,
    certs: list[x509.Certificate],
    key_kind: str,
    pins: Mapping[str, str],
) -> _Chain:
    arks = [c for c in certs if c.subject == c.issuer and common_name(c).startswith("ARK-")]
    pinned = [(c, pins[spki_sha256(c)]) for c in arks if spki_sha256(c) in pins]
    if not pinned:
        found = ", ".join(f"{common_name(c)} {spki_sha256(c)[:16]}…" for c in arks) or "none"
        check.fail(step, f"no ARK matching a pinned AMD root key (found: {found})")
    ark, product = pinned[0]
    want_intermediate = f"SEV-VLEK-{product}" if key_kind == "VLEK" else f"SEV-{product}"
    intermediates = [c for c in certs if common_name(c) == want_intermediate]
    if not intermediates:
        check.fail(
            step, f"no {want_intermediate} certificate ({'ASVK' if key_kind == 'VLEK' else 'ASK'})"
        )
    leaves = [c for c in certs if common_name(c) == f"SEV-{key_kind}"]
    if len(leaves) != 1:
        check.fail(step, f"expected one SEV-{key_kind} certificate, found {len(leaves)}")
    return _Chain(ark, intermediates[0], leaves[0], product)


def _ext_bytes(cert: x509.Certificate, oid: str) -> bytes | None:
    for ext in cert.extensions:
        if ext.oid.dotted_string == oid and isinstance(ext.value, x509.UnrecognizedExtension):
            return ext.value.value
    return None


def tcb_parts(tcb: bytes, product: str) -> dict[str, int]:
    """The SVN of each TCB part in an 8-byte TCB_VERSION of the given product line."""
    return {part: tcb[index] for part, index in _TCB_LAYOUT[product].items()}


def _check_key_matches(
    check: Checklist, step: str, report: SnpReport, chain: _Chain, key_kind: str
) -> None:
    if report.cpuid is not None:
        family, models = _PRODUCT_CPUID[chain.product]
        if report.cpuid[0] != family or report.cpuid[1] not in models:
            check.fail(
                step,
                f"report CPUID family {report.cpuid[0]:#x} model {report.cpuid[1]:#x} is not "
                f"a {chain.product} part",
            )
    reported = tcb_parts(report.reported_tcb, chain.product)
    for part, svn in reported.items():
        raw = _ext_bytes(chain.leaf, _TCB_OIDS[part])
        cert_svn = der_small_int(raw) if raw is not None else None
        if cert_svn != svn:
            check.fail(
                step,
                f"REPORTED_TCB {part} SVN {svn} differs from the {key_kind}'s {cert_svn}",
            )
    if key_kind == "VCEK":
        raw = _ext_bytes(chain.leaf, _HWID_OID)
        # Turin VCEKs name the chip by the first 8 bytes of CHIP_ID only.
        chip = report.chip_id[:8] if chain.product == "Turin" else report.chip_id
        if raw is None or der_octets(raw) != chip:
            check.fail(step, "CHIP_ID differs from the VCEK's hardware ID")
    tcb_text = " ".join(f"{k}={v}" for k, v in reported.items())
    check.ok(step, f"{chain.product} {key_kind} for TCB {tcb_text}")


def _check_binding(
    check: Checklist,
    step: str,
    report: SnpReport,
    hcl: HclReport | None,
    report_data: bytes | None,
) -> str:
    notes = []
    if hcl is not None:
        if hcl.hash_type != 1:
            check.fail(
                step, f"HCL runtime claims hash type {hcl.hash_type}; only 1 (SHA-256) known"
            )
        if report.report_data != hashlib.sha256(hcl.runtime_data).digest() + bytes(32):
            check.fail(step, "REPORT_DATA is not SHA-256(HCL runtime claims) || 0^32")
        notes.append("REPORT_DATA = SHA-256(HCL runtime claims)")
        if report_data is not None:
            user_data = str(hcl.claims.get("user-data", "")).lower()
            if user_data != report_data.hex():
                check.fail(step, "HCL runtime claims' user-data is not the binding document's hash")
            notes.append("user-data = binding document hash")
    elif report_data is not None:
        if report.report_data != report_data:
            check.fail(step, "REPORT_DATA does not match the binding document (SHA-256 || 0^32)")
        notes.append("REPORT_DATA = SHA-256(binding document) || 0^32")
    if report_data is None:
        notes.append("no binding document given: the report is not tied to a node key")
    return "; ".join(notes)


def _check_policy(
    check: Checklist, step: str, report: SnpReport, product: str, policy: Policy
) -> None:
    if report.debug and not policy.allow_debug:
        check.fail(step, f"guest policy {report.policy:#x} allows debugging; the policy forbids it")
    parts = tcb_parts(report.reported_tcb, product)
    for part, minimum in policy.snp_min_tcb.items():
        if part not in parts:
            check.fail(step, f"TCB part {part!r} does not exist on {product}")
        if parts[part] < minimum:
            check.fail(step, f"TCB {part} SVN {parts[part]} is below the minimum {minimum}")
    problem = policy.measurement_error(report.measurement.hex())
    if problem:
        check.fail(step, problem)


__all__ = [
    "SnpReport",
    "VerifiedSnp",
    "parse_hcl",
    "parse_report",
    "verify_snp",
]
