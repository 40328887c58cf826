"""The space of mixers the offline Researcher searches: a genome of components and its rules.

A genome names one choice per component of a linear-RNN token mixer. Only genomes in
canonical form exist (fields a choice makes irrelevant hold their neutral value), so two
distinct genomes always render to different code and the grammar's size is exact.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import cache
from typing import Any, Literal, get_args

from loop.errors import LoopError

GRAMMAR_VERSION = 1

Feature = Literal["identity", "elu1", "relu", "silu"]
Value = Literal["identity", "silu"]
Update = Literal["additive", "delta"]
Decay = Literal["none", "fixed", "data", "data_floor"]
Norm = Literal["none", "rms"]
Gate = Literal["none", "sigmoid", "silu"]
Path = Literal["none", "conv", "local", "rnn"]

FEATURES: tuple[Feature, ...] = get_args(Feature)
VALUES: tuple[Value, ...] = get_args(Value)
UPDATES: tuple[Update, ...] = get_args(Update)
DECAYS: tuple[Decay, ...] = get_args(Decay)
NORMS: tuple[Norm, ...] = get_args(Norm)
GATES: tuple[Gate, ...] = get_args(Gate)
PATHS: tuple[Path, ...] = get_args(Path)
CONV_WIDTHS: tuple[int, ...] = (0, 2, 3, 4)  # 0: no short convolution on q/k/v
PATH_SIZES: Mapping[str, tuple[int, ...]] = {
    "none": (0,),
    "conv": (2, 3, 4),  # width of the short-convolution path
    "local": (4, 8, 16),  # window of the sliding softmax path
    "rnn": (0,),
}

# Genes are what mutation and crossover move as a unit: a gene's fields only make sense
# together (the path kind with its size and decay; the activation with its normalisation).
GENES: Mapping[str, tuple[str, ...]] = {
    "feature": ("feature", "qk_l2"),
    "value": ("value",),
    "update": ("update",),
    "decay": ("decay",),
    "conv": ("conv",),
    "norm": ("norm",),
    "gate": ("gate",),
    "path": ("path", "path_size", "path_decay"),
}

DOMAINS: Mapping[str, tuple[Any, ...]] = {
    "feature": FEATURES,
    "qk_l2": (False, True),
    "value": VALUES,
    "update": UPDATES,
    "decay": DECAYS,
    "conv": CONV_WIDTHS,
    "norm": NORMS,
    "gate": GATES,
    "path": PATHS,
    "path_size": tuple(sorted({s for sizes in PATH_SIZES.values() for s in sizes})),
    "path_decay": DECAYS,
}


class InvalidGenome(LoopError):
    """A genome broke a grammar rule; build it through `Genome.from_dict` or the evolve ops.

    The message lists the rules broken. Code whose GENOME literal breaks them is read as
    declaring no genome; a caller building one by hand fixes the fields named.
    """


@dataclass(frozen=True)
class Genome:
    """One mixer design. Defaults are DeltaNet as flash-linear-attention ships it."""

    feature: Feature = "silu"  # activation on q and k
    qk_l2: bool = True  # L2-normalise q and k per head after the activation
    value: Value = "silu"  # activation on v (flash-linear-attention's conv applies silu)
    update: Update = "delta"  # additive write, or delta rule with a learned beta
    decay: Decay = "none"  # forgetting of the main state
    conv: int = 4  # kernel of the short causal convolution on q, k, v; 0 = none
    norm: Norm = "rms"  # normalisation of each head's output
    gate: Gate = "none"  # output gate computed from x
    path: Path = "none"  # second path fused with the main one by a learned router
    path_size: int = 0  # conv width or local window of the second path
    path_decay: Decay = "none"  # decay of a second linear-RNN path

    def __post_init__(self) -> None:
        problems = genome_problems(self)
        if problems:
            raise InvalidGenome("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain literals only, so the dict can sit in code and be read by ast.literal_eval."""
        return {"grammar": GRAMMAR_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genome:
        """Inverse of `to_dict`; raises InvalidGenome on unknown keys, types or rules."""
        if data.get("grammar") != GRAMMAR_VERSION:
            raise InvalidGenome(f"grammar version {data.get('grammar')!r} is not supported")
        names = {f.name for f in fields(cls)}
        extra = set(data) - names - {"grammar"}
        if extra:
            raise InvalidGenome(f"unknown genome fields {sorted(extra)}")
        values = {name: data[name] for name in names if name in data}
        missing = names - set(values)
        if missing:
            raise InvalidGenome(f"missing genome fields {sorted(missing)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Genome:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidGenome(f"genome JSON does not parse: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidGenome("genome JSON must be an object")
        return cls.from_dict(data)

    def gene(self, name: str) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in GENES[name])

    @property
    def name(self) -> str:
        """A descriptive, unique name, e.g. 'delta-silu-l2-decay-dd-conv4-rms-gate'."""
        parts = ["delta" if self.update == "delta" else "add", _FEATURE_TOKEN[self.feature]]
        if self.qk_l2:
            parts.append("l2")
        if self.value == "silu":
            parts.append("vsilu")
        if self.decay != "none":
            parts.append("decay-" + _DECAY_TOKEN[self.decay])
        if self.conv:
            parts.append(f"conv{self.conv}")
        if self.norm == "rms":
            parts.append("rms")
        if self.gate != "none":
            parts.append("gate" if self.gate == "sigmoid" else "silugate")
        if self.path == "conv":
            parts.append(f"fuse-conv{self.path_size}")
        elif self.path == "local":
            parts.append(f"fuse-local{self.path_size}")
        elif self.path == "rnn":
            parts.append("fuse-rnn-" + _DECAY_TOKEN[self.path_decay])
        return "-".join(parts)


_FEATURE_TOKEN: Mapping[str, str] = {
    "identity": "id",
    "elu1": "elu1",
    "relu": "relu",
    "silu": "silu",
}
_DECAY_TOKEN: Mapping[str, str] = {
    "none": "nodecay",
    "fixed": "fixed",
    "data": "dd",
    "data_floor": "ddfloor",
}


def genome_problems(genome: Genome) -> list[str]:
    """Every grammar rule the genome breaks (empty when valid)."""
    problems = []
    for name, domain in DOMAINS.items():
        value = getattr(genome, name)
        # bool is an int subclass: keep True from passing as a conv width and 1 as a flag.
        if type(value) is not type(domain[0]) or value not in domain:
            problems.append(f"{name}={value!r} is not one of {domain}")
    if problems:
        return problems
    if genome.update == "delta" and not genome.qk_l2:
        # The delta rule contracts the state only when ||k|| = 1 and beta is in (0, 1).
        problems.append("the delta rule needs L2-normalised keys (qk_l2=True)")
    if genome.path_size not in PATH_SIZES[genome.path]:
        problems.append(f"path {genome.path} takes sizes {PATH_SIZES[genome.path]}")
    if genome.path == "rnn":
        if genome.path_decay == genome.decay:
            problems.append("a second linear-RNN path must decay differently from the first")
    elif genome.path_decay != "none":
        problems.append("path_decay applies only to an rnn path")
    return problems


def try_genome(**values: Any) -> Genome | None:
    """The genome with these fields, or None where they break a rule."""
    try:
        return Genome(**values)
    except (InvalidGenome, TypeError):
        return None


def with_fields(genome: Genome, **changes: Any) -> Genome | None:
    """`genome` with fields replaced, or None where the result breaks a rule."""
    try:
        return replace(genome, **changes)
    except (InvalidGenome, TypeError):
        return None


def path_choices(decay: Decay) -> Iterator[tuple[Path, int, Decay]]:
    """Every valid (path, path_size, path_decay) beside a main path with `decay`."""
    for path in PATHS:
        for size in PATH_SIZES[path]:
            for path_decay in DECAYS if path == "rnn" else ("none",):
                if path != "rnn" or path_decay != decay:
                    yield path, size, path_decay


@cache
def all_genomes() -> tuple[Genome, ...]:
    """Every valid genome, in a fixed order."""
    found = []
    for feature, qk_l2, value, update, decay, conv, norm, gate in itertools.product(
        FEATURES, (False, True), VALUES, UPDATES, DECAYS, CONV_WIDTHS, NORMS, GATES
    ):
        if update == "delta" and not qk_l2:
            continue
        for path, size, path_decay in path_choices(decay):
            found.append(
                Genome(
                    feature, qk_l2, value, update, decay, conv, norm, gate, path, size, path_decay
                )
            )
    return tuple(found)


def state_floats(genome: Genome, d_model: int = 64, n_heads: int = 2) -> int:
    """Numbers in one mixer's recurrent state for one sequence (what MQAR compares at)."""
    head_dim = d_model // n_heads
    matrix = n_heads * head_dim * head_dim
    total = matrix
    if genome.conv:
        total += 3 * d_model * (genome.conv - 1)
    if genome.path == "rnn":
        total += matrix
    elif genome.path == "conv":
        total += d_model * (genome.path_size - 1)
    elif genome.path == "local":
        total += 2 * d_model * (genome.path_size - 1)
    return total


# The largest baseline, Gated DeltaNet, has 21,540 parameters at d_model 64, n_heads 2;
# generated mixers stay within about 10% of it so a win is not bought with width.
PARAM_BUDGET = 24_000


def param_count(genome: Genome, d_model: int = 64, n_heads: int = 2) -> int:
    """Parameters of the rendered Mixer, computed without building it."""
    head_dim = d_model // n_heads
    total = 3 * d_model * d_model + d_model * d_model  # q/k/v and output projections
    if genome.conv:
        total += 3 * d_model * genome.conv
    if genome.update == "delta":
        total += d_model * n_heads + n_heads
    total += _decay_params(genome.decay, d_model, n_heads)
    if genome.path == "rnn":
        total += _decay_params(genome.path_decay, d_model, n_heads)
    elif genome.path == "conv":
        total += d_model * genome.path_size
    if genome.path != "none":
        total += d_model * 2 * n_heads + 2 * n_heads  # router
    if genome.norm == "rms":
        total += head_dim
    if genome.gate != "none":
        total += d_model * d_model
    return total


def _decay_params(decay: Decay, d_model: int, n_heads: int) -> int:
    if decay == "data":
        return d_model * n_heads + 2 * n_heads  # dt projection, dt bias, A
    if decay == "data_floor":
        return d_model * n_heads + 2 * n_heads  # forget projection with bias, floor
    return 0  # the fixed decay is a buffer
