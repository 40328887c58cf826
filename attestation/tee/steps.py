"""Numbered verification steps: what passed so far, and a failure naming the step."""

from __future__ import annotations

from typing import NoReturn

from attestation.errors import VerificationError


class Checklist:
    """Records passed steps in order; `fail` raises with the failing step and the passed ones."""

    def __init__(self) -> None:
        self._passed: list[str] = []

    def ok(self, step: str, detail: str) -> None:
        self._passed.append(f"{step}: {detail}")

    def fail(self, step: str, message: str) -> NoReturn:
        raise VerificationError(step, message, tuple(self._passed))

    @property
    def passed(self) -> tuple[str, ...]:
        return tuple(self._passed)
