"""The offline Researcher: proposes mixers by mutating and crossing archived genomes, no LLM.

Each proposal is a function of (seed, step, parents, references, known digests) only, so a
campaign replays identically. Parents whose code carries no genome (LLM-written code, the
softmax baseline) cannot be varied structurally; with none usable, a fresh genome is drawn.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from loop.errors import LoopError
from loop.proposal import ArchiveView, Proposal, code_digest
from loop.researcher.codegen import render
from loop.researcher.describe import (
    change_reason,
    changed_genes,
    changes_phrase,
    component_label,
    scores_phrase,
)
from loop.researcher.evolve import crossover, mutate, random_genome
from loop.researcher.grammar import GENES, Genome, all_genomes, param_count, state_floats
from loop.researcher.parse import genome_from_code

log = logging.getLogger(__name__)


class GrammarExhausted(LoopError):
    """Every genome of the grammar is already known: switch to the llm researcher.

    Running the offline researcher again on this campaign proposes nothing new; start
    the next campaign with `researcher = "llm"` (or a fork with another grammar).
    """


@dataclass(frozen=True)
class _Source:
    """An archived candidate whose code declares a genome."""

    view: ArchiveView
    genome: Genome


@dataclass(frozen=True)
class _Plan:
    """A child genome and how it was made, before it is checked for novelty."""

    kind: str  # "mutation", "crossover", "random", or "fallback" (variations all known)
    child: Genome
    sources: tuple[_Source, ...]


@dataclass(frozen=True)
class OfflineResearcher:
    """Structured mutation (one or two genes) and crossover over the mixer grammar."""

    seed: int
    crossover_rate: float = 0.3  # chance of crossover when a second genome is available
    max_attempts: int = 64  # variations tried before falling back to the whole grammar

    def propose(
        self,
        parents: Sequence[ArchiveView],
        references: Sequence[ArchiveView],
        step: int,
        known_digests: Collection[str] = frozenset(),
    ) -> Proposal:
        """A new candidate whose code digest is not in `known_digests` nor any input's.

        Raises GrammarExhausted only when every genome of the grammar is known.
        """
        rng = random.Random(f"offline-researcher:{self.seed}:{step}")
        parent_sources = _sources(parents)
        reference_sources = _sources(references)
        taken = {s.genome for s in (*parent_sources, *reference_sources)}
        known = set(known_digests) | {code_digest(v.code) for v in (*parents, *references)}
        for _ in range(self.max_attempts):
            plan = self._plan(rng, parent_sources, reference_sources)
            code = render(plan.child)
            if plan.child not in taken and code_digest(code) not in known:
                return _proposal(plan, code, parents)
        log.info("variations exhausted; drawing from the whole grammar", extra={"step": step})
        pool = list(all_genomes())
        rng.shuffle(pool)
        for genome in pool:
            code = render(genome)
            if genome not in taken and code_digest(code) not in known:
                return _proposal(_Plan("fallback", genome, ()), code, parents)
        raise GrammarExhausted("every genome of the offline grammar has been proposed")

    def _plan(
        self,
        rng: random.Random,
        parents: Sequence[_Source],
        references: Sequence[_Source],
    ) -> _Plan:
        if not parents:
            return _Plan("random", random_genome(rng), ())
        first = rng.choice(parents)
        # A second parent is preferred as crossover partner; a reference stands in for one.
        partners = [s for s in parents if s.genome != first.genome] or [
            s for s in references if s.genome != first.genome
        ]
        if partners and rng.random() < self.crossover_rate:
            second = rng.choice(partners)
            child = crossover(first.genome, second.genome, rng)
            if child not in (first.genome, second.genome):
                return _Plan("crossover", child, (first, second))
        return _Plan("mutation", mutate(first.genome, rng), (first,))


def _sources(views: Sequence[ArchiveView]) -> list[_Source]:
    found = []
    for view in views:
        genome = genome_from_code(view.code)
        if genome is not None:
            found.append(_Source(view, genome))
    return found


def _proposal(plan: _Plan, code: str, parents: Sequence[ArchiveView]) -> Proposal:
    if plan.kind == "mutation":
        motivation = _mutation_text(plan.sources[0], plan.child)
    elif plan.kind == "crossover":
        motivation = _crossover_text(plan.sources[0], plan.sources[1], plan.child)
    else:
        motivation = _random_text(plan.child, parents, fallback=plan.kind == "fallback")
    return Proposal(
        name=plan.child.name,
        motivation=motivation,
        code=code,
        parent_ids=tuple(s.view.candidate_id for s in plan.sources),
        origin="offline",
    )


def _about(source: _Source) -> str:
    view = source.view
    return (
        f"{view.name} ({view.candidate_id}; "
        f"{scores_phrase(view.accuracies, view.fitness)}; state {_state(source)})"
    )


def _state(source: _Source) -> int:
    """The parent's measured state size where the archive has it (a baseline's own
    layout can differ from its nearest genome's), else the genome's."""
    measured = source.view.state_size
    return measured if measured is not None else state_floats(source.genome)


def _cost(child: Genome, parents: Sequence[_Source]) -> str:
    text = f"The child keeps {state_floats(child)} state numbers per sequence"
    if parents:
        text += " (parent " + ", ".join(str(_state(s)) for s in parents) + ")"
    return text + f" and has {param_count(child)} parameters at d_model 64, 2 heads."


def _target(source: _Source) -> str:
    """Which test set the change is aimed at, when the parent has been scored."""
    accuracies = source.view.accuracies
    if not accuracies:
        return ""
    weakest = min(accuracies, key=lambda name: accuracies[name])
    spread = max(accuracies.values()) - accuracies[weakest]
    if spread < 0.05:
        return (
            f" Recall is flat across test sets ({accuracies[weakest]:.2f} at worst), so the "
            "change probes a neighbour rather than fixing a weak set."
        )
    return (
        f" {source.view.name} recalls least on {weakest} ({accuracies[weakest]:.2f}, "
        f"{spread:.2f} below its best), where interference and state capacity bind; that set "
        "is where this change should show."
    )


def _mutation_text(parent: _Source, child: Genome) -> str:
    genes = changed_genes(parent.genome, child)
    return (
        f"Mutation of {_about(parent)}. Changed {changes_phrase(parent.genome, child, genes)}."
        f"{_target(parent)} {_cost(child, (parent,))}"
    )


def _crossover_text(first: _Source, second: _Source, child: Genome) -> str:
    taken = [g for g in GENES if child.gene(g) == second.genome.gene(g) != first.genome.gene(g)]
    kept = [g for g in GENES if child.gene(g) == first.genome.gene(g) != second.genome.gene(g)]
    taken_text = "; ".join(
        f"{component_label(child, g)} ({change_reason(first.genome, child, g)})" for g in taken
    )
    kept_text = ", ".join(component_label(child, g) for g in kept)
    return (
        f"Crossover of {_about(first)} with {_about(second)}. From {first.view.name} it keeps "
        f"{kept_text}; from {second.view.name} it takes {taken_text}. The bet: parts that "
        f"helped each parent's recall combine.{_target(first)} {_cost(child, (first, second))}"
    )


def _random_text(child: Genome, parents: Sequence[ArchiveView], *, fallback: bool) -> str:
    if fallback:
        opening = "Every variation of the parents tried is already in the archive"
    elif parents:
        names = ", ".join(f"{v.name} ({v.candidate_id})" for v in parents)
        opening = f"No parent carries a genome the grammar can read ({names})"
    else:
        opening = "No parents yet"
    parts = "; ".join(f"{gene}: {component_label(child, gene)}" for gene in GENES)
    return (
        f"{opening}, so this design is drawn fresh from the grammar to explore it: {parts}. "
        f"The code's docstring gives each part's reason. {_cost(child, ())}"
    )
