"""Words for genomes: what each component is, why it may help MQAR recall, what changed.

Used twice: in the docstring of generated code (a function of the genome alone, so the
code digest identifies the genome) and in a proposal's motivation (which also names the
parents and their scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from loop.researcher.grammar import GENES, Genome, state_floats
from loop.researcher.parse import genome_from_code

_FEATURE_WHY: Mapping[str, str] = {
    "identity": "q and k are used as projected (no feature map), the plainest linear attention",
    "elu1": "q and k pass through elu+1: positive features, like the softmax kernel's",
    "relu": "q and k pass through relu: positive, sparse features, so unrelated keys overlap less",
    "silu": "q and k pass through silu: smooth, mostly positive features, as in DeltaNet",
}
_UPDATE_WHY: Mapping[str, str] = {
    "additive": (
        "additive update (S += k v^T): pairs are superimposed, simple, but they interfere "
        "once the number of stored pairs nears the key dimension"
    ),
    "delta": (
        "delta rule with a learned per-token, per-head beta in (0, 1): each write first "
        "removes what the state already returns for its key, so values are overwritten "
        "instead of piling up, which keeps recall clean with many pairs"
    ),
}
_DECAY_WHY: Mapping[str, str] = {
    "none": "no decay: the state keeps everything, filler included",
    "fixed": (
        "fixed multi-scale decay (RetNet-style, one rate per head): a short and a long "
        "memory side by side"
    ),
    "data": (
        "data-dependent scalar decay per head and token (Mamba2-like): forget fast at "
        "filler, hold on while key-value pairs arrive"
    ),
    "data_floor": (
        "data-dependent decay with a learned per-head floor: input-driven forgetting that "
        "never drops below the floor, so stored pairs survive long gaps before the queries"
    ),
}
_GATE_WHY: Mapping[str, str] = {
    "none": "no output gate",
    "sigmoid": "sigmoid output gate from x: each token picks which channels of the recall pass",
    "silu": "silu output gate from x (as in Mamba2 and Gated DeltaNet): token-wise channel gating",
}


def component_label(genome: Genome, gene: str) -> str:
    """A short phrase for one gene's value, e.g. 'silu+L2' or 'local window 8'."""
    if gene == "feature":
        return genome.feature + ("+L2" if genome.qk_l2 else "")
    if gene == "value":
        return "silu on v" if genome.value == "silu" else "plain v"
    if gene == "update":
        return "delta rule" if genome.update == "delta" else "additive"
    if gene == "decay":
        return _decay_label(genome.decay)
    if gene == "conv":
        return f"short conv {genome.conv}" if genome.conv else "no short conv"
    if gene == "norm":
        return "per-head RMSNorm" if genome.norm == "rms" else "no output norm"
    if gene == "gate":
        return f"{genome.gate} gate" if genome.gate != "none" else "no gate"
    if genome.path == "conv":
        return f"conv path width {genome.path_size}"
    if genome.path == "local":
        return f"local window {genome.path_size}"
    if genome.path == "rnn":
        return f"second RNN path ({_decay_label(genome.path_decay)})"
    return "single path"


def _decay_label(decay: str) -> str:
    return {
        "none": "no decay",
        "fixed": "fixed multi-scale decay",
        "data": "data-dependent decay",
        "data_floor": "data-dependent decay with floor",
    }[decay]


def component_reason(genome: Genome, gene: str) -> str:
    """Why this gene's value may matter for associative recall, in a sentence."""
    if gene == "feature":
        text = _FEATURE_WHY[genome.feature]
        if genome.qk_l2:
            text += ", then L2-normalised per head so recall does not hinge on key magnitude"
        return text
    if gene == "value":
        if genome.value == "silu":
            return "v passes through silu, as after flash-linear-attention's short convolution"
        return "v is used as projected, so stored values span both signs freely"
    if gene == "update":
        return _UPDATE_WHY[genome.update]
    if gene == "decay":
        return _DECAY_WHY[genome.decay]
    if gene == "conv":
        if not genome.conv:
            return "no short convolution: each token's q, k, v see only that token"
        return (
            f"short causal convolution (kernel {genome.conv}) on q, k and v: a token sees "
            "its neighbours, so a key and the value after it can be bound in one write"
        )
    if gene == "norm":
        if genome.norm == "rms":
            return "RMSNorm per head keeps the readout scale steady as the state fills"
        return "no output normalisation: the readout scale follows the state"
    if gene == "gate":
        return _GATE_WHY[genome.gate]
    return _path_reason(genome)


def _path_reason(genome: Genome) -> str:
    fused = ", fused with the main path by a per-token softmax router computed from x"
    if genome.path == "conv":
        return (
            f"a short-convolution path (width {genome.path_size}) over v{fused}: cheap "
            "local mixing, leaving the recurrent state for long-range pairs"
        )
    if genome.path == "local":
        return (
            f"sliding-window softmax attention over the last {genome.path_size} tokens"
            f"{fused}: exact recall of recent pairs at a fixed state cost"
        )
    if genome.path == "rnn":
        return (
            f"a second linear-RNN state over the same q, k, v with "
            f"{_decay_label(genome.path_decay)}{fused}: two memories with different horizons"
        )
    return "one path only"


def genome_summary(genome: Genome, d_model: int = 64, n_heads: int = 2) -> list[str]:
    """One line per component, for the docstring of generated code."""
    lines = [f"- {gene}: {component_reason(genome, gene)}." for gene in GENES]
    floats = state_floats(genome, d_model, n_heads)
    lines.append(f"- state: {floats} numbers per sequence at d_model {d_model}, {n_heads} heads.")
    return lines


def scores_phrase(accuracies: Mapping[str, float], fitness: float | None) -> str:
    """'recall 64x8 0.99, 256x64 0.41 (mean 0.70, weakest 256x64)' or 'not yet scored'."""
    if not accuracies:
        return "not yet scored" if fitness is None else f"fitness {fitness:.3f}"
    sets = ", ".join(f"{name} {acc:.2f}" for name, acc in accuracies.items())
    mean = sum(accuracies.values()) / len(accuracies)
    weakest = min(accuracies, key=lambda name: accuracies[name])
    text = f"recall {sets} (mean {mean:.2f}, weakest {weakest})"
    if fitness is not None:
        text += f", fitness {fitness:.3f}"
    return text


def changes_phrase(before: Genome, after: Genome, genes: Sequence[str]) -> str:
    """'decay: no decay -> data-dependent decay (why...)' for each changed gene."""
    parts = []
    for gene in genes:
        parts.append(
            f"{gene}: {component_label(before, gene)} -> {component_label(after, gene)} "
            f"({change_reason(before, after, gene)})"
        )
    return "; ".join(parts)


# The value of each gene that means "this component is absent".
_ABSENT: Mapping[str, tuple[object, ...]] = {
    "decay": ("none",),
    "conv": (0,),
    "norm": ("none",),
    "gate": ("none",),
    "path": ("none", 0, "none"),
}


def change_reason(before: Genome, after: Genome, gene: str) -> str:
    """Why moving `gene` from `before` to `after` is worth a run.

    Removing a component is an ablation: it asks whether the parent's component earns its
    state and parameters. Anything else is argued from what the new value does.
    """
    absent = _ABSENT.get(gene)
    if absent is not None and after.gene(gene) == absent:
        return (
            f"an ablation: does the parent's {component_label(before, gene)} earn its keep? "
            f"Without it, {component_reason(after, gene)}"
        )
    return component_reason(after, gene)


def changed_genes(before: Genome, after: Genome) -> list[str]:
    """The genes whose values differ, in grammar order."""
    return [gene for gene in GENES if before.gene(gene) != after.gene(gene)]


def describe_changes(parent_code: str | None, child_code: str) -> list[str]:
    """Short phrases for what changed from parent to child, e.g. 'decay: no decay -> ...'.

    Empty when either side carries no genome the grammar can read (LLM-written code, the
    softmax baseline): then there is nothing structured to say.
    """
    if parent_code is None:
        return []
    before, after = genome_from_code(parent_code), genome_from_code(child_code)
    if before is None or after is None:
        return []
    return [
        f"{gene}: {component_label(before, gene)} -> {component_label(after, gene)}"
        for gene in changed_genes(before, after)
    ]
