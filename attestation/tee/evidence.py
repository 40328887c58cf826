"""Evidence bundles (what `attest collect` writes) and verification of any evidence file.

A bundle is JSON: the binding document, the provider, the CPU TEE's report (SEV-SNP
report or TDX quote, base64) with the certificates it came with (PEM), and any GPU
reports. `verify_bundle` checks every report and that each one binds the document.
`verify_file` also accepts the raw formats vendors and tools produce (an SNP report, an
Azure HCL report or trustee's Azure evidence JSON, a TDX quote, an NVIDIA SPDM report in
hex, NVIDIA's JSON list of GPU evidence), for which certificates may come separately.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from attestation.errors import VerificationError
from attestation.tee import nvidia, snp, tdx
from attestation.tee.binding import BindingDocument
from attestation.tee.errors import BindingError
from attestation.tee.policy import Policy

BUNDLE_FORMAT = "asi-node/tee-evidence/v1"
PROVIDERS = ("sev-snp", "tdx", "nvidia", "none")


@dataclass(frozen=True)
class GpuEvidence:
    report: bytes
    certificates: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "report": base64.b64encode(self.report).decode(),
            "certificates": self.certificates.decode("ascii"),
        }


@dataclass(frozen=True)
class EvidenceBundle:
    """Evidence of one node at one time, bound to its binding document.

    `provider` "none" means the machine has no TEE: `report` is empty and the bundle
    says so plainly; audits flag such nodes as unattested.
    """

    provider: str
    binding: BindingDocument
    collected_at: str
    report: bytes = b""
    certificates: bytes = b""
    gpus: tuple[GpuEvidence, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {self.provider!r}; expected {', '.join(PROVIDERS)}")
        if (self.provider in ("sev-snp", "tdx")) != bool(self.report):
            raise ValueError(f"provider {self.provider!r} and the presence of a report disagree")
        if self.provider == "nvidia" and not self.gpus:
            raise ValueError("provider 'nvidia' needs at least one GPU report")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "provider": self.provider,
            "binding": self.binding.to_json(),
            "collected_at": self.collected_at,
            "report": base64.b64encode(self.report).decode(),
            "certificates": self.certificates.decode("ascii"),
            "gpus": [gpu.to_json() for gpu in self.gpus],
        }

    @classmethod
    def from_json(cls, data: Any) -> EvidenceBundle:
        """Parse a bundle; ValueError (or BindingError) names the malformed field."""
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"not an evidence bundle (format must be {BUNDLE_FORMAT!r})")
        gpus_raw = data.get("gpus", [])
        if not isinstance(gpus_raw, list):
            raise ValueError("gpus: expected a list")
        try:
            gpus = tuple(
                GpuEvidence(_b64(g["report"], "gpus[].report"), _text(g["certificates"]))
                for g in gpus_raw
            )
            return cls(
                provider=str(data.get("provider")),
                binding=BindingDocument.from_json(data.get("binding")),
                collected_at=str(data.get("collected_at", "")),
                report=_b64(data.get("report", ""), "report"),
                certificates=_text(data.get("certificates", "")),
                gpus=gpus,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed bundle: {exc}") from None


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError(f"{name}: not valid base64") from None


def _text(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("certificates: expected PEM text")
    return value.encode("ascii", "replace")


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying a file: its kind, every step passed, and whether the
    evidence shows a TEE at all (False only for a `none` bundle, whose binding document
    was still checked for form)."""

    kind: str
    steps: tuple[str, ...]
    attested: bool
    binding: BindingDocument | None = None


def verify_bundle(
    bundle: EvidenceBundle,
    *,
    policy: Policy,
    at: datetime,
    extra_certificates: Sequence[bytes] = (),
    pinned_arks: Mapping[str, str] = snp.PINNED_ARKS,
    log_public_key: str | None = None,
) -> Verdict:
    """Verify every report of a bundle against the pinned roots, the policy and its binding.

    `log_public_key`: the key of the node being audited; the binding document must name
    it, or the evidence (however valid) vouches for some other node.

    SEV-SNP and TDX reports must carry REPORT_DATA = SHA-256(document) || 0^32, GPU reports
    the nonce SHA-256(document). `extra_certificates` supply what the bundle lacks (an SNP
    chain fetched from AMD KDS when the host provided no certificate table).
    """
    if log_public_key is not None and bundle.binding.log_public_key != log_public_key.lower():
        raise VerificationError(
            "bundle.1 binding document",
            f"names log key {bundle.binding.log_public_key[:16]}…, not the node's "
            f"{log_public_key[:16]}…",
        )
    named = ", names the node's log key" if log_public_key is not None else ""
    steps = [f"bundle.1 binding document: well formed{named}, nonce {bundle.binding.nonce[:16]}…"]
    if bundle.provider == "none":
        steps.append("bundle.2 provider: none (no TEE): this node is UNATTESTED")
        return Verdict("bundle/none", tuple(steps), attested=False, binding=bundle.binding)
    report_data = bundle.binding.report_data()
    if bundle.provider == "sev-snp":
        certs = [c for c in (bundle.certificates, *extra_certificates) if c]
        cpu = snp.verify_snp(
            bundle.report,
            certs,
            policy=policy,
            at=at,
            report_data=report_data,
            pinned_arks=pinned_arks,
        )
        steps += cpu.steps
    elif bundle.provider == "tdx":
        steps += tdx.verify_tdx(bundle.report, policy=policy, at=at, report_data=report_data).steps
    for index, gpu in enumerate(bundle.gpus):
        try:
            verified = nvidia.verify_gpu(
                gpu.report,
                gpu.certificates,
                policy=policy,
                at=at,
                nonce=bundle.binding.gpu_nonce(),
            )
        except VerificationError as exc:
            raise VerificationError(f"GPU {index} {exc.step}", exc.detail, exc.passed) from None
        steps += [f"GPU {index} {s}" for s in verified.steps]
    return Verdict(f"bundle/{bundle.provider}", tuple(steps), attested=True, binding=bundle.binding)


def detect(data: bytes) -> str:
    """The kind of an evidence file, or VerificationError at step "input detect format"."""
    stripped = data.strip()
    if stripped[:1] in (b"{", b"["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            raise VerificationError(
                "input detect format", "looks like JSON but does not parse"
            ) from None
        if isinstance(parsed, dict) and parsed.get("format") == BUNDLE_FORMAT:
            return "bundle"
        if isinstance(parsed, dict) and "format" in parsed:
            raise VerificationError(
                "input detect format", f"unknown bundle format {parsed['format']!r}"
            )
        if isinstance(parsed, dict) and {"report", "vcek"} <= set(parsed):
            return "azure-snp-json"
        if (
            isinstance(parsed, list)
            and parsed
            and all(isinstance(e, dict) and {"evidence", "certificate"} <= set(e) for e in parsed)
        ):
            return "nvidia-json"
        raise VerificationError("input detect format", "JSON of an unknown evidence format")
    if data[:4] == snp.HCL_MAGIC:
        return "snp"
    if len(data) == snp.REPORT_LEN:
        return "snp"
    if len(data) >= 8:
        version, _, tee_type = struct.unpack_from("<HHI", data, 0)
        if version in (4, 5) and tee_type == tdx.TEE_TYPE_TDX:
            return "tdx"
        if version == 3 and tee_type == 0:
            raise VerificationError(
                "input detect format", "an SGX quote (v3), not TDX: SGX is not supported"
            )
        if tee_type == tdx.TEE_TYPE_TDX:
            raise VerificationError(
                "input detect format", f"TDX quote version {version} is not supported (4 and 5 are)"
            )
    if stripped[:4].lower() == b"11e0":
        return "nvidia-hex"
    raise VerificationError(
        "input detect format",
        "not a known evidence format (evidence bundle, SNP report, Azure HCL report, "
        "TDX quote v4/v5, NVIDIA SPDM report)",
    )


def verify_file(
    data: bytes,
    *,
    policy: Policy,
    at: datetime,
    certificates: Sequence[bytes] = (),
    log_public_key: str | None = None,
    pinned_arks: Mapping[str, str] = snp.PINNED_ARKS,
) -> Verdict:
    """Verify an evidence file of any known kind; raises VerificationError naming the step.

    Raw evidence carries no binding document, so its Verdict says the binding step was
    skipped; only a bundle ties evidence to a node's keys.
    """
    kind = detect(data)
    if log_public_key is not None and kind != "bundle":
        raise VerificationError(
            "bundle.1 binding document",
            "raw evidence names no node key: verify the node's evidence bundle instead",
        )
    if kind == "bundle":
        try:
            bundle = EvidenceBundle.from_json(json.loads(data))
        except (ValueError, BindingError) as exc:
            raise VerificationError("bundle.1 binding document", str(exc)) from None
        return verify_bundle(
            bundle,
            policy=policy,
            at=at,
            extra_certificates=certificates,
            log_public_key=log_public_key,
            pinned_arks=pinned_arks,
        )
    if kind == "snp":
        if not certificates:
            raise VerificationError(
                "snp.2 pinned AMD root",
                "a raw SNP report carries no certificates: pass the VCEK/VLEK and ASK/ARK "
                "with --certs",
            )
        verified = snp.verify_snp(data, list(certificates), policy=policy, at=at)
        return Verdict(f"sev-snp ({verified.product}, {verified.key_kind})", verified.steps, True)
    if kind == "azure-snp-json":
        parsed = json.loads(data)
        try:
            hcl = bytes(parsed["report"])
            vcek = str(parsed["vcek"]).encode()
        except (TypeError, ValueError) as exc:
            raise VerificationError(
                "input detect format", f"malformed Azure evidence: {exc}"
            ) from None
        verified = snp.verify_snp(hcl, [vcek, *certificates], policy=policy, at=at)
        return Verdict(f"sev-snp ({verified.product}, Azure)", verified.steps, True)
    if kind == "tdx":
        return Verdict("tdx", tdx.verify_tdx(data, policy=policy, at=at).steps, True)
    if kind == "nvidia-hex":
        try:
            report = bytes.fromhex(data.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise VerificationError("gpu.1 parse report", "not valid hex text") from None
        if len(certificates) != 1:
            raise VerificationError(
                "gpu.2 pinned NVIDIA root", "pass the GPU's PEM certificate chain with --certs"
            )
        return Verdict(
            "nvidia", nvidia.verify_gpu(report, certificates[0], policy=policy, at=at).steps, True
        )
    return _verify_nvidia_list(json.loads(data), policy, at)


def _verify_nvidia_list(entries: list[dict[str, Any]], policy: Policy, at: datetime) -> Verdict:
    steps: list[str] = []
    for index, entry in enumerate(entries):
        try:
            report = _b64(entry["evidence"], "evidence")
            chain = _b64(entry["certificate"], "certificate")
            nonce = bytes.fromhex(str(entry.get("nonce", "")))
        except ValueError as exc:
            raise VerificationError(f"GPU {index} gpu.1 parse report", str(exc)) from None
        try:
            verified = nvidia.verify_gpu(report, chain, policy=policy, at=at, nonce=nonce or None)
        except VerificationError as exc:
            raise VerificationError(f"GPU {index} {exc.step}", exc.detail, tuple(steps)) from None
        steps += [f"GPU {index} {s}" for s in verified.steps]
    return Verdict(f"nvidia ({len(entries)} GPUs)", tuple(steps), True)
