"""The numbered steps of IC certificate verification, as `VerificationError` names them."""

from __future__ import annotations

from enum import Enum


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

    @property
    def text(self) -> str:
        """The step as `VerificationError.step` carries it, e.g. "step 4 (signature)"."""
        return f"step {self.number} ({self.label})"
