"""Niches of the search: the update-rule family from code, cells keyed on behaviour, and
parent choice that spreads over them, favours under-explored parents and migrates."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from kernels.baselines import BASELINES
from loop.archive import sample_parents
from loop.family import Family, update_family
from loop.niches import Niche, cells, niche_of
from loop.proposal import ArchiveView
from loop.researcher import Genome, OfflineResearcher, genome_from_code, render

BASELINE_FAMILY = {
    "softmax": Family.SOFTMAX,
    "linear": Family.ADDITIVE,
    "retnet": Family.DECAYED,
    "mamba2": Family.SSM,
    "deltanet": Family.DELTA,
    "gated_deltanet": Family.GATED_DELTA,
}


def baseline(name: str) -> str:
    return f"from kernels.baselines import {BASELINES[name].__name__} as Mixer\n"


@pytest.mark.parametrize("name", sorted(BASELINE_FAMILY))
def test_each_baseline_is_in_its_family(name: str) -> None:
    assert update_family(baseline(name)) is BASELINE_FAMILY[name]


@pytest.mark.parametrize(
    ("genome", "family"),
    [
        (Genome(), Family.DELTA),
        (Genome(decay="data", gate="silu"), Family.GATED_DELTA),
        (Genome(update="additive", feature="elu1", qk_l2=False), Family.ADDITIVE),
        (Genome(update="additive", decay="fixed"), Family.DECAYED),
        # A local softmax path beside an additive recurrence: the recurrence decides.
        (Genome(update="additive", path="local", path_size=8), Family.ADDITIVE),
        # A decayed second recurrence makes the mixer decayed.
        (Genome(update="additive", path="rnn", path_decay="data"), Family.DECAYED),
    ],
)
def test_generated_variants_are_classified_by_their_update_rule(
    genome: Genome, family: Family
) -> None:
    assert update_family(render(genome)) is family


def test_offline_researcher_proposals_get_the_family_of_their_genome() -> None:
    researcher = OfflineResearcher(seed=3)
    for step in range(12):
        proposal = researcher.propose([], [], step=step)
        genome = genome_from_code(proposal.code)
        assert genome is not None
        decayed = genome.decay != "none" or genome.path_decay != "none"
        expected = {
            ("delta", False): Family.DELTA,
            ("delta", True): Family.GATED_DELTA,
            ("additive", False): Family.ADDITIVE,
            ("additive", True): Family.DECAYED,
        }[(genome.update, decayed)]
        assert update_family(proposal.code) is expected, proposal.name


HAND_DELTA = """
import torch
from torch import nn

class Mixer(nn.Module):
    def forward(self, x):
        memory = self.init_state(x.shape[0])[0]
        for t in range(x.shape[1]):
            k, v = x[:, t], x[:, t]
            delta = v - torch.einsum("bkv,bk->bv", memory, k)
            memory = memory + torch.einsum("bk,bv->bkv", k, delta)
        return x
"""
HAND_SOFTMAX = """
import torch
from torch import nn

class Mixer(nn.Module):
    def forward(self, x):
        return torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True)
"""
HAND_DECAYED = """
from torch import nn

class Mixer(nn.Module):
    def forward(self, x):
        state = 0
        for t in range(x.shape[1]):
            state = self.gamma * state + x[:, t]
        return x
"""


@pytest.mark.parametrize(
    ("code", "family"),
    [
        (HAND_DELTA, Family.DELTA),
        (HAND_SOFTMAX, Family.SOFTMAX),
        (HAND_DECAYED, Family.DECAYED),
        ("from torch import nn\nMixer = nn.Identity\n", Family.OTHER),
        ("def (", Family.OTHER),
        ("# the delta rule and a decay, in words only\nMixer = None\n", Family.OTHER),
    ],
)
def test_hand_written_code_is_classified_from_its_syntax_tree(code: str, family: Family) -> None:
    assert update_family(code) is family


def view(
    cid: str,
    fit: float,
    family: str = "deltanet",
    accs: dict[str, float] | None = None,
    state: int = 4096,
    children: int = 0,
) -> ArchiveView:
    return ArchiveView(
        cid,
        cid,
        baseline(family),
        "",
        fit,
        {"64x8": 0.95, "256x64": 0.3} if accs is None else accs,
        state,
        children=children,
    )


def test_the_niche_is_family_state_bucket_and_accuracy_profile() -> None:
    cell = niche_of(view("a", 0.1, "retnet", {"64x8": 0.95, "128x16": 0.6, "256x64": 0.2}, 3000))
    # Levels by test-set name (128x16, 256x64, 64x8); log2(3000) = 11.55.
    assert cell == Niche(Family.DECAYED, 12, (1, 0, 2))
    lm = ArchiveView("b", "b", baseline("linear"), "", -0.12, {}, 2048)
    assert niche_of(lm) == Niche(Family.ADDITIVE, 11, (-3,))  # fitness bands of 0.05


def test_each_cell_keeps_its_fittest_member_as_elite() -> None:
    pool = [view("best", 0.3), view("other", 0.2, state=4 * 4096), view("mate", 0.1)]
    grid = cells(pool)
    assert [[v.candidate_id for v in m] for m in grid.values()] == [["best", "mate"], ["other"]]


def archive() -> list[ArchiveView]:
    """Four islands, eight cells, two cell mates below their elites."""
    return [
        view("d1", 0.30),
        view("d1-mate", 0.25),
        view("d2", 0.20, state=4 * 4096),
        view("d3", 0.10, accs={"64x8": 0.95, "256x64": 0.95}),
        view("g1", 0.15, "gated_deltanet"),
        view("g2", -0.05, "gated_deltanet", state=1024),
        view("l1", -0.20, "linear"),
        view("l1-mate", -0.30, "linear"),
        view("s1", 0.05, "softmax", state=2**16),
        view("s2", -0.10, "softmax", {"64x8": 0.2, "256x64": 0.1}, state=2**16),
    ]


ELITES = {"d1", "d2", "d3", "g1", "g2", "l1", "s1", "s2"}


def test_every_cell_is_visited_and_only_elites_lead() -> None:
    rng = random.Random(0)
    firsts = Counter(sample_parents(archive(), rng, k=1)[0].candidate_id for _ in range(3000))
    assert set(firsts) == ELITES
    # Islands are drawn uniformly: the lone linear elite leads about a quarter of the time.
    assert 0.2 < firsts["l1"] / 3000 < 0.3


def test_under_explored_parents_are_favoured() -> None:
    def share(children: int) -> float:
        pool = [view("a", 0.3, children=children), view("b", 0.3, state=4 * 4096)]
        rng = random.Random(1)
        picks = [sample_parents(pool, rng, k=1)[0].candidate_id for _ in range(2000)]
        return picks.count("a") / len(picks)

    assert share(0) > 0.5  # equal children: the fitter (first by rank) leads more often
    assert share(5) < 0.25  # five children later it gives way to its unexplored neighbour


def test_further_parents_mostly_stay_on_the_island_and_sometimes_migrate() -> None:
    families = {v.candidate_id: niche_of(v).family for v in archive()}
    for migration, low, high in ((0.25, 0.18, 0.32), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)):
        rng = random.Random(2)
        moved = total = 0
        for _ in range(1500):
            first, second = sample_parents(archive(), rng, k=2, migration=migration)
            if families[first.candidate_id] in (Family.DELTA, Family.SOFTMAX):
                total += 1  # islands with another cell: staying is possible
                moved += families[first.candidate_id] != families[second.candidate_id]
        assert low <= moved / total <= high, migration


def test_a_lone_elite_pairs_with_its_cell_mate_or_migrates() -> None:
    rng = random.Random(3)
    partners: Counter[bool] = Counter()
    for _ in range(1000):
        first, second = sample_parents(archive(), rng, k=2, migration=0.25)
        if first.candidate_id == "l1":
            partners[second.candidate_id == "l1-mate"] += 1
    assert partners[True] > partners[False] > 0


def test_parent_choice_is_deterministic_for_an_rng_and_returns_distinct_parents() -> None:
    draws = [sample_parents(archive(), random.Random(seed), k=3) for seed in range(50)]
    again = [sample_parents(archive(), random.Random(seed), k=3) for seed in range(50)]
    assert draws == again
    assert all(len({v.candidate_id for v in d}) == 3 for d in draws)
    assert len({tuple(v.candidate_id for v in d) for d in draws}) > 10
    assert len(sample_parents(archive()[:2], random.Random(0), k=5)) == 2
    assert sample_parents([], random.Random(0)) == []
