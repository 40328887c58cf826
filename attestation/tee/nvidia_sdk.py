"""NVIDIA GPU evidence through NVIDIA's attestation SDK (`nv-attestation-sdk`, optional).

The only module that imports the SDK. It asks every GPU for an SPDM measurement report
with our nonce and returns the reports and certificate chains; verification is ours
(`attestation.tee.nvidia`), not the SDK's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from attestation.tee.errors import CollectionError
from attestation.tee.evidence import GpuEvidence


def collect_gpu_evidence(nonce: bytes) -> list[GpuEvidence]:
    """One GpuEvidence per GPU in confidential-computing mode, each over `nonce`."""
    try:
        from nv_attestation_sdk import attestation
    except ImportError:
        raise CollectionError(
            "NVIDIA GPU evidence needs NVIDIA's attestation SDK: pip install 'asi-node[nvidia]'"
        ) from None
    client = attestation.Attestation()
    client.set_nonce(nonce.hex())
    client.add_verifier(attestation.Devices.GPU, attestation.Environment.LOCAL, "", "")
    try:
        entries: Any = client.get_evidence(options={"ppcie_mode": False})
    except Exception as exc:  # the SDK raises bare Exceptions for driver and NVML failures
        raise CollectionError(f"NVIDIA SDK: could not collect GPU evidence: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise CollectionError("NVIDIA SDK returned no GPU evidence: are the GPUs in CC mode?")
    try:
        return [
            GpuEvidence(
                report=base64.b64decode(entry["evidence"]),
                certificates=base64.b64decode(entry["certificate"]),
            )
            for entry in entries
        ]
    except (KeyError, TypeError, binascii.Error) as exc:
        raise CollectionError(f"NVIDIA SDK returned evidence in an unknown shape: {exc}") from None
