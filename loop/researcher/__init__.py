"""The Researcher: proposes candidate mixers as code.

- `grammar`: the genome of mixer components, its rules, size, state and parameter counts.
- `codegen`: genome -> readable, self-contained `Mixer` module source.
- `parse`: code -> genome, statically (GENOME literal or a baseline import).
- `evolve`: random genomes, mutation and crossover, deterministic for an rng.
- `describe`: words for genomes and their changes, for docstrings and motivations.
- `offline`: the LLM-free Researcher that ties them together.
"""

from loop.researcher.codegen import render
from loop.researcher.describe import describe_changes
from loop.researcher.evolve import crossover, mutate, random_genome
from loop.researcher.grammar import (
    PARAM_BUDGET,
    Genome,
    InvalidGenome,
    all_genomes,
    param_count,
    state_floats,
)
from loop.researcher.offline import GrammarExhausted, OfflineResearcher
from loop.researcher.parse import BASELINE_GENOMES, genome_from_code

__all__ = [
    "BASELINE_GENOMES",
    "PARAM_BUDGET",
    "Genome",
    "GrammarExhausted",
    "InvalidGenome",
    "OfflineResearcher",
    "all_genomes",
    "crossover",
    "describe_changes",
    "genome_from_code",
    "mutate",
    "param_count",
    "random_genome",
    "render",
    "state_floats",
]
