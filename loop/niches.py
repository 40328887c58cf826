"""Niches of the search: scored candidates in cells keyed on behaviour, parents drawn across them.

MAP-Elites-style cells. A candidate's niche is its update-rule family (`loop.family`, read
from its code), its state size (log2, rounded) and its behaviour profile: on MQAR each test
set's accuracy at three levels (under 0.5, under 0.9, above); on the LM task, which has no
per-set accuracies, its fitness in bands of 0.05 nats. A cell's elite is its fittest
member; the cells of one family form an island.

Parent choice, deterministic for an rng:
1. the first parent: an island drawn uniformly, so a crowded family does not crowd out
   the others, then one of the island's elites;
2. each further parent: with probability `migration`, or whenever its own island has no
   one left, an elite of another island (a migrant); otherwise another elite of the same
   island, or a cell mate of the first parent.
Within a set, a candidate's weight is 1/sqrt(1 + its fitness rank) divided by 1 + the
children it already has: fitter parents are likelier, under-explored ones more so. Every
elite keeps a positive weight, so over many draws every cell is visited.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from loop.family import Family, update_family
from loop.proposal import ArchiveView

PROFILE_LEVELS = (0.5, 0.9)  # MQAR accuracy: fails / partial / solves
LM_BAND = 0.05  # LM fitness (nats of held-out loss over the reference's) per band
MIGRATION = 0.25  # chance a further parent comes from another island


@dataclass(frozen=True)
class Niche:
    """The cell a candidate falls in: family, log2 state size, behaviour profile."""

    family: Family
    log2_state: int  # -1 when the state size is unknown
    profile: tuple[int, ...]


def niche_of(view: ArchiveView) -> Niche:
    """The niche of a scored candidate."""
    state = round(math.log2(view.state_size)) if view.state_size else -1
    if view.accuracies:
        profile = tuple(
            sum(view.accuracies[name] >= level for level in PROFILE_LEVELS)
            for name in sorted(view.accuracies)
        )
    else:
        profile = (math.floor((view.fitness or 0.0) / LM_BAND),)
    return Niche(update_family(view.code), state, profile)


def cells(pool: Sequence[ArchiveView]) -> dict[Niche, list[ArchiveView]]:
    """The candidates of `pool` by niche, each cell in `pool`'s order (best first when
    `pool` is ranked: the first member is the cell's elite)."""
    grid: dict[Niche, list[ArchiveView]] = {}
    for view in pool:
        grid.setdefault(niche_of(view), []).append(view)
    return grid


def draw_parents(
    pool: Sequence[ArchiveView],
    rng: random.Random,
    k: int,
    migration: float = MIGRATION,
) -> list[ArchiveView]:
    """Up to k distinct parents from `pool` (ranked, best first), across its niches."""
    if k < 1 or not pool:
        return []
    rank = {v.candidate_id: i for i, v in enumerate(pool)}
    grid = cells(pool)
    islands: dict[Family, list[ArchiveView]] = {}
    for members in grid.values():
        islands.setdefault(niche_of(members[0]).family, []).append(members[0])
    home = rng.choice(sorted(islands))
    first = _weighted(rng, islands[home], rank)
    chosen = [first]
    mates = grid[niche_of(first)]
    while len(chosen) < k:
        taken = {v.candidate_id for v in chosen}
        same = [v for v in islands[home] if v.candidate_id not in taken]
        same = same or [v for v in mates if v.candidate_id not in taken]
        away = {
            family: left
            for family, elites in islands.items()
            if family != home and (left := [v for v in elites if v.candidate_id not in taken])
        }
        if away and (not same or rng.random() < migration):
            chosen.append(_weighted(rng, away[rng.choice(sorted(away))], rank))
        elif same:
            chosen.append(_weighted(rng, same, rank))
        else:  # every elite is taken: the rest of the pool, by the same weights
            rest = [v for v in pool if v.candidate_id not in taken]
            if not rest:
                break
            chosen.append(_weighted(rng, rest, rank))
    return chosen


def _weighted(
    rng: random.Random, views: Sequence[ArchiveView], rank: dict[str, int]
) -> ArchiveView:
    weights = [1.0 / math.sqrt(1 + rank[v.candidate_id]) / (1 + v.children) for v in views]
    return rng.choices(views, weights=weights)[0]
