"""The candidate pool: parent and reference sampling, and novelty by code and by behaviour."""

from __future__ import annotations

import ast
import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loop.niches import MIGRATION, draw_parents
from loop.proposal import ArchiveView
from loop.syntax import parse


def code_fingerprint(code: str) -> str:
    """A digest of the code's syntax tree, blind to comments, docstrings and formatting.

    Two proposals that differ only in layout or wording are the same experiment. Code that
    does not parse falls back to its whitespace-normalised text.
    """
    try:
        tree = parse(code)
    except SyntaxError:
        return "text:" + hashlib.sha256(" ".join(code.split()).encode()).hexdigest()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body.pop(0)  # drop the docstring; the motivation lives elsewhere
            if not body:
                body.append(ast.Pass())
    dump = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return "ast:" + hashlib.sha256(dump.encode()).hexdigest()


@dataclass(frozen=True)
class Behaviour:
    """What a trained candidate does, as a point to compare: accuracies and state size."""

    accuracies: tuple[float, ...]
    log2_state: float

    @classmethod
    def of(cls, accuracies: Mapping[str, float], state_size: int | None) -> Behaviour:
        ordered = tuple(accuracies[k] for k in sorted(accuracies))
        return cls(ordered, math.log2(state_size) if state_size else 0.0)

    def distance(self, other: Behaviour) -> float:
        """Largest per-test-set accuracy gap, with a state-size gap of 2x counting as 0.05."""
        if len(self.accuracies) != len(other.accuracies):
            return math.inf
        gaps = [abs(a - b) for a, b in zip(self.accuracies, other.accuracies, strict=True)]
        return max([*gaps, 0.05 * abs(self.log2_state - other.log2_state)])


def behaviour_twin(
    behaviour: Behaviour, archive: Sequence[ArchiveView], tolerance: float = 0.01
) -> ArchiveView | None:
    """The archived candidate that behaves like this one within `tolerance`, if any.

    Seed-to-seed spread on MQAR is about a point, so a twin within 0.01 on every test set
    at the same state size teaches the Researcher nothing new.
    """
    for entry in archive:
        if not entry.accuracies:
            continue
        if behaviour.distance(Behaviour.of(entry.accuracies, entry.state_size)) <= tolerance:
            return entry
    return None


def ranked(archive: Sequence[ArchiveView]) -> list[ArchiveView]:
    """Scored entries, best fitness first; ties broken by id so the order is stable."""
    scored = [e for e in archive if e.fitness is not None]
    return sorted(scored, key=lambda e: (-(e.fitness or 0.0), e.candidate_id))


def sample_parents(
    archive: Sequence[ArchiveView],
    rng: random.Random,
    k: int = 2,
    top: int | None = None,
    migration: float = MIGRATION,
) -> list[ArchiveView]:
    """Pick up to k distinct scored parents across the archive's niches (loop.niches).

    The first comes from a family drawn uniformly, then by fitness rank and how few
    children it has; the others mostly from the same family, now and then (`migration`)
    from another. `top` keeps only the best `top` by fitness in the running.
    """
    pool = ranked(archive)
    return draw_parents(pool if top is None else pool[:top], rng, k, migration)


def sample_references(
    archive: Sequence[ArchiveView],
    rng: random.Random,
    exclude: Sequence[ArchiveView] = (),
    k: int = 2,
) -> list[ArchiveView]:
    """Reference candidates shown beside the parents: the best one plus random others."""
    skip = {e.candidate_id for e in exclude}
    pool = [e for e in ranked(archive) if e.candidate_id not in skip]
    if not pool:
        return []
    refs = [pool[0]]
    rest = pool[1:]
    rng.shuffle(rest)
    return refs + rest[: max(0, k - 1)]
