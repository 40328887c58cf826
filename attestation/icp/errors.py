"""The one error certificate verification raises, naming the step that failed."""

from __future__ import annotations

from enum import Enum

from attestation.errors import TrustError


class Step(Enum):
    """The numbered steps of certificate verification, in the order they run."""

    DECODE = (1, "decode")
    DELEGATION = (2, "delegation")
    CANISTER_RANGE = (3, "canister range")
    SIGNATURE = (4, "signature")
    FRESHNESS = (5, "freshness")
    LOOKUP = (6, "lookup")
    CERTIFIED_DATA = (7, "certified data")

    @property
    def number(self) -> int:
        return self.value[0]

    @property
    def label(self) -> str:
        return self.value[1]


class VerificationError(TrustError):
    """An Internet Computer certificate (or an answer it is meant to certify) failed a check.

    Nothing it carries may be used: treat the answer as absent. `step` says which check
    failed. A decode or signature failure means the data was corrupted or forged: fetch it
    again from another boundary node. A freshness failure means the replica's answer is
    stale (or the local clock is wrong): retry, then check the clock. A canister-range
    failure means the subnet that signed is not the one hosting the canister: the
    response is not for this canister.
    """

    def __init__(self, step: Step, message: str) -> None:
        super().__init__(f"step {step.number} ({step.label}): {message}")
        self.step = step
        self.reason = message
