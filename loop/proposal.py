"""What a Researcher hands over: a candidate mixer as code, with its name and reasons."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, NewType

Digest = NewType("Digest", str)  # "sha256:<hex>" of the code's UTF-8 bytes

Origin = Literal["baseline", "offline", "llm", "peer"]


def code_digest(code: str) -> Digest:
    """The content address of a candidate's code."""
    return Digest("sha256:" + hashlib.sha256(code.encode("utf-8")).hexdigest())


@dataclass(frozen=True)
class Proposal:
    """A candidate mixer: a module that defines class `Mixer`, plus why it was proposed."""

    name: str
    motivation: str
    code: str
    parent_ids: tuple[str, ...] = ()
    origin: Origin = "offline"
    options: dict[str, Any] = field(default_factory=dict)  # constructor options for Mixer

    @property
    def digest(self) -> Digest:
        return code_digest(self.code)


@dataclass(frozen=True)
class ArchiveView:
    """What a Researcher may see of an archived candidate when choosing parents."""

    candidate_id: str
    name: str
    code: str
    motivation: str
    fitness: float | None  # the mean over every seed scored so far
    accuracies: dict[str, float] = field(default_factory=dict)  # per test set
    state_size: int | None = None
    analysis: str = ""
    seeds: int = 1  # seeds the fitness is the mean of
    fitness_spread: float = 0.0  # their sample standard deviation (0 with one seed)
    children: int = 0  # candidates proposed with this one as a parent, failed ones included
