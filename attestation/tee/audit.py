"""What an audit concludes about a node's attestation: one finding per node, never a bool.

`asi-node audit` calls `assess` with the evidence bundle the node published (or None)
and the node's log key; a node without verified TEE evidence is flagged, not silently
passed: "unattested" (it says it has no TEE), "missing" (it published nothing) or
"rejected" (its evidence failed a step, named in the finding).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from attestation.errors import VerificationError
from attestation.tee.evidence import verify_file
from attestation.tee.policy import Policy
from attestation.tee.snp import PINNED_ARKS

Status = Literal["verified", "unattested", "missing", "rejected"]


@dataclass(frozen=True)
class AttestationFinding:
    """The audit's conclusion for one node; `flagged` is true unless it is verified."""

    status: Status
    detail: str
    steps: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return self.status != "verified"


def assess(
    bundle: bytes | None,
    *,
    log_public_key: str,
    policy: Policy,
    at: datetime,
    certificates: tuple[bytes, ...] = (),
    pinned_arks: Mapping[str, str] = PINNED_ARKS,
) -> AttestationFinding:
    """Verify a node's published evidence bundle for its log key; flag anything less."""
    if bundle is None:
        return AttestationFinding("missing", "the node published no attestation evidence")
    try:
        json.loads(bundle)
    except ValueError:
        return AttestationFinding("rejected", "the published evidence is not a JSON bundle")
    try:
        verdict = verify_file(
            bundle,
            policy=policy,
            at=at,
            certificates=certificates,
            log_public_key=log_public_key,
            pinned_arks=pinned_arks,
        )
    except VerificationError as exc:
        return AttestationFinding("rejected", f"step {exc.step}: {exc.detail}", exc.passed)
    if not verdict.attested:
        return AttestationFinding(
            "unattested", "the node runs without a TEE (provider none)", verdict.steps
        )
    return AttestationFinding(
        "verified",
        f"{verdict.kind.removeprefix('bundle/')} evidence binds the node key",
        verdict.steps,
    )
