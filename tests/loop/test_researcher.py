"""The offline Researcher: its grammar, the code it writes, evolution and proposals.

Generated code is executed here, in the test process: these are our own renders of our
own genomes, so the test is trusted; candidates from elsewhere only ever run in the sandbox.
"""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from kernels.baselines import BASELINES
from loop.proposal import ArchiveView, code_digest
from loop.researcher import (
    BASELINE_GENOMES,
    PARAM_BUDGET,
    Genome,
    GrammarExhausted,
    InvalidGenome,
    OfflineResearcher,
    all_genomes,
    crossover,
    describe_changes,
    genome_from_code,
    mutate,
    param_count,
    random_genome,
    render,
    state_floats,
)
from loop.researcher.grammar import GENES
from loop.screen import ScreenConfig, check_source, screen_mixer

D_MODEL, N_HEADS, BATCH = 64, 2, 2
SEEDS = range(32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny shapes gain nothing from threads, and on a shared 2-core machine they thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load(code: str) -> Callable[..., nn.Module]:
    namespace: dict[str, object] = {"__name__": "candidate"}
    exec(compile(code, "<candidate>", "exec"), namespace)
    mixer = namespace["Mixer"]
    assert isinstance(mixer, type) and issubclass(mixer, nn.Module)
    return mixer


@cache
def _sample() -> tuple[Genome, ...]:
    """Random and mutated genomes for each seed, plus every baseline's genome."""
    genomes: dict[Genome, None] = dict.fromkeys(BASELINE_GENOMES.values())
    for seed in SEEDS:
        rng = random.Random(seed)
        parent = random_genome(rng)
        genomes[parent] = None
        genomes[mutate(parent, rng)] = None
    return tuple(genomes)


def _build(genome: Genome, dtype: torch.dtype, seed: int = 0) -> Any:
    """A fresh Mixer; typed Any because nn.Module hides the interface's methods from mypy."""
    torch.manual_seed(seed)
    return _load(render(genome))(D_MODEL, N_HEADS).to(dtype)


def _run_steps(mixer: Any, x: Tensor) -> tuple[Tensor, list[tuple[int, ...]]]:
    state = mixer.init_state(x.shape[0])
    assert isinstance(state, tuple) and all(isinstance(s, Tensor) for s in state)
    shapes = [tuple(s.shape) for s in state]
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        assert isinstance(state, tuple) and [tuple(s.shape) for s in state] == shapes
        assert all(s.dtype == x.dtype for s in state)
        outputs.append(y_t)
    return torch.stack(outputs, dim=1), shapes


def _ids(genomes: tuple[Genome, ...]) -> list[str]:
    return [g.name for g in genomes]


@pytest.mark.parametrize("genome", _sample(), ids=_ids(_sample()))
def test_generated_mixer_is_causal_recurrent_and_trainable(genome: Genome) -> None:
    code = render(genome)
    report = check_source(code)
    assert report.passed, report.message
    mixer = _build(genome, torch.float64)
    gen = torch.Generator().manual_seed(1)
    shapes_seen = []
    for length in (7, 33):
        x = torch.randn(BATCH, length, D_MODEL, generator=gen, dtype=torch.float64)
        y = mixer(x)
        assert y.shape == x.shape and torch.isfinite(y).all()

        cut = length // 2
        changed = x.clone()
        changed[:, cut:] = torch.randn(BATCH, length - cut, D_MODEL, generator=gen).double()
        assert torch.allclose(mixer(changed)[:, :cut], y[:, :cut], rtol=0, atol=1e-10)

        stepped, shapes = _run_steps(mixer, x)
        shapes_seen.append(shapes)
        assert (stepped - y).abs().max() <= 1e-4 * max(1.0, y.abs().max().item())
    assert shapes_seen[0] == shapes_seen[1]
    assert sum(s[0].numel() for s in mixer.init_state(1)) == state_floats(genome)

    mixer(x).square().mean().backward()
    for name, param in mixer.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(param.grad).all(), name
    assert sum(p.numel() for p in mixer.parameters()) == param_count(genome)


@pytest.mark.parametrize("genome", _sample()[::6], ids=_ids(_sample()[::6]))
def test_generated_mixer_step_matches_forward_in_float32(genome: Genome) -> None:
    mixer = _build(genome, torch.float32)
    x = torch.randn(BATCH, 33, D_MODEL, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = mixer(x)
        stepped, _ = _run_steps(mixer, x)
    assert (stepped - y).abs().max() <= 1e-3 * max(1.0, y.abs().max().item())


class _Step(nn.Module):
    """The step as a module with flat tensor arguments, the form torch.export takes."""

    def __init__(self, mixer: Any) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x_t: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        y, new_state = self.mixer.step(x_t, state)
        return (y, *new_state)


_LOCAL = Genome(decay="fixed", conv=3, path="local", path_size=4, gate="sigmoid")
_RNN = Genome(decay="data", gate="silu", path="rnn", path_decay="data_floor", conv=0)
_CONV = Genome(
    feature="elu1",
    qk_l2=False,
    update="additive",
    decay="data_floor",
    path="conv",
    path_size=3,
    norm="none",
)
_EXPORTED = (
    pytest.param(_LOCAL, id=_LOCAL.name),
    pytest.param(_RNN, id=_RNN.name),
    # Each export costs seconds; the two above cover the unusual parts (unfold, two RNNs).
    pytest.param(_CONV, id=_CONV.name, marks=pytest.mark.slow),
)


@pytest.mark.parametrize("genome", _EXPORTED)
def test_generated_mixer_exports_at_fixed_shapes(genome: Genome) -> None:
    mixer = _build(genome, torch.float32).eval()
    x = torch.randn(BATCH, 33, D_MODEL)
    program = torch.export.export(mixer, (x,), strict=False)
    assert torch.allclose(program.module()(x), mixer(x), atol=1e-5)
    state = mixer.init_state(BATCH)
    step = torch.export.export(_Step(mixer), (x[:, 0], *state), strict=False)
    expected = _Step(mixer)(x[:, 0], *state)
    for got, want in zip(step.module()(x[:, 0], *state), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def test_generated_mixer_passes_the_screen_at_odd_shapes() -> None:
    config = ScreenConfig(cost_lengths=(32, 128), cost_batch=2, cost_repeats=1, max_cost_ratio=None)
    for genome in (
        Genome(path="local", path_size=8),
        Genome(decay="fixed", path="conv", path_size=2),
    ):
        report = screen_mixer(_load(render(genome)), config=config)
        assert report.passed, report.message


def test_every_genome_fits_the_parameter_budget_near_the_baselines() -> None:
    largest_baseline = max(
        sum(p.numel() for p in BASELINES[name](D_MODEL, N_HEADS).parameters())
        for name in BASELINE_GENOMES
    )
    budget_ratio = PARAM_BUDGET / largest_baseline
    assert budget_ratio <= 1.15
    assert max(param_count(g) for g in all_genomes()) <= PARAM_BUDGET


def test_grammar_size_is_exact_and_names_are_unique() -> None:
    genomes = all_genomes()
    assert len(genomes) == len(set(genomes)) == 23_040
    assert len({g.name for g in genomes}) == len(genomes)


def test_invalid_genomes_are_refused() -> None:
    with pytest.raises(InvalidGenome, match="L2"):
        Genome(update="delta", qk_l2=False)
    with pytest.raises(InvalidGenome, match="decay differently"):
        Genome(decay="data", path="rnn", path_decay="data")
    with pytest.raises(InvalidGenome):
        Genome(conv=5)
    with pytest.raises(InvalidGenome):
        Genome(conv=True)  # a bool is not a width
    with pytest.raises(InvalidGenome):
        Genome(path="local", path_size=5)


def test_genome_round_trips_through_json_and_code() -> None:
    for genome in _sample():
        assert Genome.from_json(genome.to_json()) == genome
        assert genome_from_code(render(genome)) == genome
    with pytest.raises(InvalidGenome):
        Genome.from_json(json.dumps({**Genome().to_dict(), "extra": 1}))


def test_rendering_depends_on_the_genome_alone() -> None:
    genome = random_genome(random.Random(3))
    assert render(genome) == render(Genome.from_json(genome.to_json()))
    digests = {code_digest(render(g)) for g in _sample()}
    assert len(digests) == len(_sample())


def test_baseline_imports_map_to_their_genomes() -> None:
    classes = {name: cls.__name__ for name, cls in BASELINES.items()}
    for name, genome in BASELINE_GENOMES.items():
        code = f"from kernels.baselines import {classes[name]} as Mixer\n"
        assert genome_from_code(code) == genome
    assert genome_from_code("from kernels.baselines import SoftmaxAttention as Mixer\n") is None


@pytest.mark.parametrize(
    "code",
    [
        "def broken(:\n",
        "class Mixer:\n    pass\n",
        "GENOME = make_genome()\n",  # not a literal: must not be evaluated
        "GENOME = {'grammar': 1, 'feature': 'silu'}\n",
        "GENOME = {'grammar': 99}\n",
        "GENOME = [1, 2]\n",
        "from kernels.baselines import DeltaNet\n",  # not aliased to Mixer
    ],
)
def test_code_without_a_valid_genome_yields_none(code: str) -> None:
    assert genome_from_code(code) is None


def test_evolution_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[Genome]:
        rng = random.Random(seed)
        a, b = random_genome(rng), random_genome(rng)
        return [a, b, mutate(a, rng), crossover(a, b, rng)]

    for seed in SEEDS:
        assert run(seed) == run(seed)
    assert len({tuple(run(seed)) for seed in SEEDS}) == len(SEEDS)


def test_mutation_changes_one_or_two_genes() -> None:
    counts = set()
    for seed in range(100):
        rng = random.Random(seed)
        parent = random_genome(rng)
        child = mutate(parent, rng)
        changed = [g for g in GENES if parent.gene(g) != child.gene(g)]
        # Switching to the delta rule also forces L2 keys: one decision, two genes.
        forced = "update" in changed and "feature" in changed and child.update == "delta"
        assert 1 <= len(changed) <= 2 + forced
        counts.add(len(changed))
    assert {1, 2} <= counts


def test_crossover_mixes_both_parents() -> None:
    mixed = 0
    for seed in range(100):
        rng = random.Random(seed)
        a, b = random_genome(rng), random_genome(rng)
        child = crossover(a, b, rng)
        differing = [g for g in GENES if a.gene(g) != b.gene(g)]
        if len(differing) < 2:
            continue
        assert any(child.gene(g) == a.gene(g) for g in differing)
        assert any(child.gene(g) == b.gene(g) for g in differing)
        assert all(child.gene(g) in (a.gene(g), b.gene(g)) for g in GENES if g != "feature")
        mixed += 1
    assert mixed >= 80


def _view(candidate_id: str, code: str, **scores: float) -> ArchiveView:
    genome = genome_from_code(code)
    return ArchiveView(
        candidate_id=candidate_id,
        name=genome.name if genome else "llm-mixer",
        code=code,
        motivation="",
        fitness=0.1 if scores else None,
        accuracies={k.replace("_", ""): v for k, v in scores.items()},
        state_size=2048,
    )


DELTANET = _view(
    "c-delta",
    "from kernels.baselines import DeltaNet as Mixer\n",
    x64_8=0.99,
    x128_16=0.97,
    x128_32=0.8,
    x256_64=0.41,
)
GATED = _view("c-gated", "from kernels.baselines import GatedDeltaNet as Mixer\n", x64_8=0.98)
LLM = _view("c-llm", "import torch\n\nclass Mixer(torch.nn.Module):\n    pass\n")


def test_proposals_are_deterministic_for_seed_step_and_inputs() -> None:
    researcher = OfflineResearcher(seed=7)
    first = researcher.propose([DELTANET, GATED], [LLM], step=3)
    assert first == OfflineResearcher(seed=7).propose([DELTANET, GATED], [LLM], step=3)
    others = {researcher.propose([DELTANET, GATED], [LLM], step=s).digest for s in range(12)}
    assert len(others) > 6


def test_proposal_mutates_a_baseline_parent_and_says_why() -> None:
    for step in range(20):
        proposal = OfflineResearcher(seed=1).propose([DELTANET], [], step=step)
        child = genome_from_code(proposal.code)
        assert child is not None and child != BASELINE_GENOMES["deltanet"]
        assert proposal.origin == "offline" and proposal.parent_ids == ("c-delta",)
        assert proposal.name == child.name
        assert "Mutation of" in proposal.motivation and "x25664" in proposal.motivation
        assert "weakest" in proposal.motivation


def test_proposal_crosses_two_parents_with_genomes() -> None:
    kinds = set()
    for step in range(30):
        proposal = OfflineResearcher(seed=2).propose([DELTANET, GATED], [], step=step)
        kinds.add(len(proposal.parent_ids))
        if len(proposal.parent_ids) == 2:
            assert set(proposal.parent_ids) == {"c-delta", "c-gated"}
            assert proposal.motivation.startswith("Crossover of")
    assert kinds == {1, 2}


def test_proposal_without_usable_parents_draws_a_fresh_genome() -> None:
    proposal = OfflineResearcher(seed=3).propose([LLM], [], step=0)
    assert proposal.parent_ids == ()
    assert genome_from_code(proposal.code) is not None
    assert "No parent carries a genome" in proposal.motivation
    assert OfflineResearcher(seed=3).propose([], [], step=0).parent_ids == ()


def test_proposal_avoids_known_digests() -> None:
    researcher = OfflineResearcher(seed=4)
    known: set[str] = set()
    for _ in range(15):
        proposal = researcher.propose([GATED], [], step=0, known_digests=known)
        assert proposal.digest not in known
        known.add(proposal.digest)


def test_proposal_reports_an_exhausted_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    only = (BASELINE_GENOMES["deltanet"],)
    monkeypatch.setattr("loop.researcher.offline.all_genomes", lambda: only)
    researcher = OfflineResearcher(seed=5, max_attempts=1)
    known = {code_digest(render(only[0]))}
    monkeypatch.setattr("loop.researcher.offline.random_genome", lambda rng: only[0])
    with pytest.raises(GrammarExhausted):
        researcher.propose([], [], step=0, known_digests=known)


def test_proposal_falls_back_to_the_whole_grammar_when_variations_are_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deltanet = BASELINE_GENOMES["deltanet"]
    monkeypatch.setattr("loop.researcher.offline.mutate", lambda genome, rng: deltanet)
    proposal = OfflineResearcher(seed=6, max_attempts=3).propose([DELTANET], [], step=0)
    assert genome_from_code(proposal.code) not in (None, deltanet)
    assert proposal.parent_ids == ()
    assert proposal.motivation.startswith("Every variation of the parents tried")


def test_generated_mixer_refuses_unknown_options() -> None:
    with pytest.raises(TypeError, match="unexpected options"):
        _load(render(Genome()))(D_MODEL, N_HEADS, chunk_size=16)


def test_describe_changes_names_the_genes_that_moved() -> None:
    child = Genome(decay="data")
    changes = describe_changes(DELTANET.code, render(child))
    assert changes == ["decay: no decay -> data-dependent decay"]
    assert describe_changes(LLM.code, render(child)) == []
    assert describe_changes(None, render(child)) == []


def test_genome_literal_is_read_without_running_code() -> None:
    code = render(Genome()) + "\nraise SystemExit('executed')\n"
    assert genome_from_code(code) == Genome()
    tree = ast.parse(render(Genome()))
    assigned = [n for n in tree.body if isinstance(n, ast.Assign)]
    assert any(isinstance(t, ast.Name) and t.id == "GENOME" for n in assigned for t in n.targets)
