"""The real evidence in `vectors/`, described once: what it is, how to verify it, and
helpers that corrupt it (flip a bit, truncate, swap a certificate)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from attestation.tee import nvidia, snp, tdx
from attestation.tee.certs import load_certificates
from attestation.tee.policy import Policy

VECTORS = Path(__file__).parent / "vectors"
NOW = datetime.now(UTC)
BEFORE_VLEK_EXPIRY = datetime(2025, 6, 1, tzinfo=UTC)


def read(rel: str) -> bytes:
    return (VECTORS / rel).read_bytes()


@dataclass(frozen=True)
class Vector:
    """One piece of real evidence and the inputs its verifier needs.

    `body_offset` is a byte inside the signed region whose bit flip the signature step
    must catch; `sig_offset` a byte inside the signature; `end` the length of the
    meaningful bytes (padding after it is not evidence).
    """

    name: str
    kind: str  # "snp", "tdx" or "gpu"
    evidence: bytes
    certs: tuple[bytes, ...] = ()
    allow_debug: bool = False
    at: datetime = NOW
    nonce: bytes | None = None
    body_offset: int = 0
    sig_offset: int = 0
    end: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def policy(self) -> Policy:
        return Policy(allow_debug=self.allow_debug, any_measurement=True)

    def verify(
        self, evidence: bytes | None = None, certs: tuple[bytes, ...] | None = None
    ) -> tuple[str, ...]:
        """The passed steps; raises VerificationError like the verifier does."""
        ev = self.evidence if evidence is None else evidence
        cs = self.certs if certs is None else certs
        if self.kind == "snp":
            return snp.verify_snp(ev, list(cs), policy=self.policy(), at=self.at).steps
        if self.kind == "tdx":
            return tdx.verify_tdx(ev, policy=self.policy(), at=self.at).steps
        return nvidia.verify_gpu(
            ev, cs[0], policy=self.policy(), at=self.at, nonce=self.nonce
        ).steps


def _snp(name: str, report: str, certs: list[str], hcl: bool = False, **kw: object) -> Vector:
    base = snp.HCL_HEADER_LEN if hcl else 0
    evidence = read(report)
    end = len(evidence)
    if hcl:
        end = struct.unpack_from("<I", evidence, 8)[0]
    return Vector(
        name,
        "snp",
        evidence,
        tuple(read(c) for c in certs),
        body_offset=base + 0x90,  # MEASUREMENT
        sig_offset=base + 0x2A0 + 5,  # low bytes of r
        end=end,
        **kw,  # type: ignore[arg-type]
    )


def _tdx(name: str, path: str, **kw: object) -> Vector:
    evidence = read(path)
    quote = tdx.parse_quote(evidence)
    signed = len(quote.signed)
    return Vector(
        name,
        "tdx",
        evidence,
        body_offset=signed - 64 - 10,  # inside REPORTDATA... well before the signature
        sig_offset=signed + 4 + 3,  # r of the quote signature
        end=len(evidence) - quote.trailing,
        **kw,  # type: ignore[arg-type]
    )


def _gpu(name: str, report: bytes, chain: bytes, nonce: bytes | None = None) -> Vector:
    parsed = nvidia.parse_report(report)
    return Vector(
        name,
        "gpu",
        report,
        (chain,),
        nonce=nonce,
        body_offset=nvidia.REQUEST_LEN + 8 + 40,  # inside the measurement record
        sig_offset=len(parsed.signed) + 7,
        end=len(report) - parsed.trailing,
    )


def _ppcie() -> list[Vector]:
    entries = json.loads(read("nvidia/nvtrust/ppcie_gpu_evidence_8xH100.json"))
    return [
        _gpu(
            f"nvidia-ppcie-gpu{i}",
            base64.b64decode(e["evidence"]),
            base64.b64decode(e["certificate"]),
            bytes.fromhex(e["nonce"]),
        )
        for i, e in enumerate(entries)
    ]


def all_vectors() -> list[Vector]:
    """Every PASS vector of vectors/README.md, with the inputs that make it pass."""
    return [
        _snp(
            "snp-go-sev-guest-milan",
            "snp/go-sev-guest_milan/attestation.bin",
            ["snp/go-sev-guest_milan/vcek.der", "snp/go-sev-guest_milan/ask_ark_milan.pem"],
            allow_debug=True,
        ),
        _snp(
            "snp-virtee-milan",
            "snp/virtee-sev_milan/report_milan.bin",
            ["snp/virtee-sev_milan/vcek_milan.der", "snp/virtee-sev_milan/cert_chain_milan.pem"],
        ),
        _snp(
            "snp-virtee-milan-builtin-roots",
            "snp/virtee-sev_milan/report_milan.bin",
            [
                "snp/virtee-sev_milan/vcek_milan.der",
                "snp/virtee-sev_milan/builtin_milan_ask.pem",
                "snp/virtee-sev_milan/builtin_milan_ark.pem",
            ],
        ),
        _snp(
            "snp-trustee-milan-vcek",
            "snp/trustee_milan_vcek/test-report.bin",
            [
                "snp/trustee_milan_vcek/test-vcek.der",
                "snp/trustee_milan_vcek/milan_ask_ark_asvk.pem",
            ],
        ),
        _snp(
            "snp-trustee-milan-vlek",
            "snp/trustee_milan_vlek/test-vlek-report.bin",
            [
                "snp/trustee_milan_vlek/test-vlek.der",
                "snp/trustee_milan_vlek/milan_ask_ark_asvk.pem",
            ],
            at=BEFORE_VLEK_EXPIRY,
        ),
        _snp(
            "snp-azure-genoa-hcl",
            "snp/trustee_azure_genoa/hcl-report-genoa.bin",
            ["snp/trustee_azure_genoa/vcek-genoa.pem", "snp/trustee_azure_genoa/ask_ark_genoa.pem"],
            hcl=True,
        ),
        _snp(
            "snp-azure-milan-hcl",
            "snp/trustee_azure_milan/hcl-report.bin",
            ["snp/trustee_azure_milan/vcek.pem"],
            hcl=True,
        ),
        _tdx("tdx-go-cos113-v4", "tdx/go-tdx-guest/cos-113-tdx-quote.dat"),
        _tdx("tdx-go-v5-sample", "tdx/go-tdx-guest/quote_v5_sample.dat"),
        _tdx("tdx-go-spr-e4-v4", "tdx/go-tdx-guest/tdx_prod_quote_SPR_E4.dat"),
        _tdx("tdx-trustee-azure-v4", "tdx/trustee/az-td-quote.bin"),
        _tdx("tdx-trustee-v4-debug", "tdx/trustee/tdx_quote_4.dat", allow_debug=True),
        _tdx("tdx-trustee-v5", "tdx/trustee/tdx_quote_5.dat"),
        _tdx("tdx-trustee-v4-padded", "tdx/trustee/tdx_quote_6.dat"),
        _gpu(
            "nvidia-nvtrust-hopper",
            bytes.fromhex(read("nvidia/nvtrust/hopperAttestationReport.txt").decode().strip()),
            read("nvidia/nvtrust/hopperCertChain.txt"),
        ),
        _gpu(
            "nvidia-trustee-coco",
            bytes.fromhex(read("nvidia/trustee/hopper_coco_report1.txt").decode().strip()),
            read("nvidia/trustee/hopper_coco_certs1.txt"),
        ),
        *_ppcie(),
    ]


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def pem(cert_der_or_pem: bytes) -> list[bytes]:
    """Each certificate of a blob, as its own PEM."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.PEM) for c in load_certificates(cert_der_or_pem)]


def replace_pck_chain(quote: bytes, chain: bytes) -> bytes:
    """A TDX quote with its embedded PCK chain replaced and every length field fixed."""
    parsed = tdx.parse_quote(quote)
    signed = len(parsed.signed)
    sig_start = signed + 4
    cert_data_start = sig_start + 134
    inner_header = cert_data_start + 450 + len(parsed.qe_auth_data)
    head = bytearray(quote[: inner_header + 6])
    struct.pack_into("<I", head, inner_header + 2, len(chain))
    cert_size = len(head) - cert_data_start + len(chain)
    struct.pack_into("<I", head, sig_start + 130, cert_size)
    struct.pack_into("<I", head, signed, 134 + cert_size)
    return bytes(head) + chain


def with_vector(v: Vector, **changes: object) -> Vector:
    return replace(v, **changes)  # type: ignore[arg-type]


Mutator = Callable[[Vector], tuple[bytes, tuple[bytes, ...]]]
