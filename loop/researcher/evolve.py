"""Random genomes, mutation and crossover: every result valid, every choice from a given rng.

All randomness comes from the `random.Random` passed in, and every set is ordered before a
choice is made, so a seed reproduces the same genomes on any machine.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from loop.researcher.grammar import (
    CONV_WIDTHS,
    DECAYS,
    DOMAINS,
    FEATURES,
    GATES,
    GENES,
    NORMS,
    UPDATES,
    VALUES,
    Genome,
    path_choices,
    try_genome,
    with_fields,
)

TWO_CHANGES = 0.3  # share of mutations that change two genes instead of one
SINGLE_PATH = 0.5  # share of random genomes without a second path


def random_genome(rng: random.Random) -> Genome:
    """A genome drawn gene by gene (not uniformly over the grammar, which is mostly fused)."""
    update = rng.choice(UPDATES)
    decay = rng.choice(DECAYS)
    if rng.random() < SINGLE_PATH:
        path, size, path_decay = "none", 0, "none"
    else:
        path, size, path_decay = rng.choice([c for c in path_choices(decay) if c[0] != "none"])
    genome = try_genome(
        feature=rng.choice(FEATURES),
        qk_l2=update == "delta" or rng.random() < 0.5,
        value=rng.choice(VALUES),
        update=update,
        decay=decay,
        conv=rng.choice(CONV_WIDTHS),
        norm=rng.choice(NORMS),
        gate=rng.choice(GATES),
        path=path,
        path_size=size,
        path_decay=path_decay,
    )
    if genome is None:  # every draw above respects the rules; a failure is a grammar bug
        raise AssertionError("random_genome drew an invalid genome")
    return genome


def gene_alternatives(genome: Genome, gene: str) -> list[Genome]:
    """Valid genomes that differ from `genome` in `gene` (plus repairs it forces), sorted."""
    names = GENES[gene]
    found: dict[str, Genome] = {}
    for values in itertools.product(*(DOMAINS[name] for name in names)):
        changes: dict[str, Any] = dict(zip(names, values, strict=True))
        if changes.get("update") == "delta":
            changes["qk_l2"] = True  # the delta rule needs unit keys; switching forces it
        child = with_fields(genome, **changes)
        if child is not None and child.gene(gene) != genome.gene(gene):
            found[child.to_json()] = child
    return [found[key] for key in sorted(found)]


def mutate(genome: Genome, rng: random.Random) -> Genome:
    """Change one gene, or two distinct genes (probability TWO_CHANGES); always valid."""
    count = 2 if rng.random() < TWO_CHANGES else 1
    child = genome
    touched: set[str] = set()
    for _ in range(count):
        options = [
            (gene, alternatives)
            for gene in GENES
            if gene not in touched and (alternatives := gene_alternatives(child, gene))
        ]
        gene, alternatives = rng.choice(options)
        child = rng.choice(alternatives)
        touched.add(gene)
    return child


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """A child that takes at least one differing gene from each parent.

    Parents differing in fewer than two genes cannot be mixed; then the child is `a` (or
    `b` if only `b` combines validly), and the caller mutates it to get something new.
    """
    differing = [gene for gene in GENES if a.gene(gene) != b.gene(gene)]
    if len(differing) < 2:
        return a
    subsets = [
        subset
        for size in range(1, len(differing))
        for subset in itertools.combinations(differing, size)
    ]
    rng.shuffle(subsets)
    for from_b in subsets:
        changes: dict[str, Any] = {}
        for gene in from_b:
            changes.update(zip(GENES[gene], b.gene(gene), strict=True))
        if changes.get("update", a.update) == "delta":
            changes["qk_l2"] = True
        child = with_fields(a, **changes)
        # The forced L2 repair can overwrite a's feature gene, so check the mix afterwards.
        if child is not None and all(
            any(child.gene(gene) == parent.gene(gene) for gene in differing) for parent in (a, b)
        ):
            return child
    return a
