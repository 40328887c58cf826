"""The update-rule family of a mixer, read from its code's syntax tree (never run).

A coarse label for niching the search: softmax attention, plain additive linear attention,
additive with a decay (RetNet, GLA-like), the delta rule, the gated (decayed) delta rule,
SSM-like (Mamba-style selective state spaces), or other. Baselines are known by their
import; other code by what it calls and names:

- the loop's linear-RNN ops (`chunk_linear_rnn`, `linear_rnn_step`) mark a linear recurrence,
  a `beta` argument to them the delta rule, a `log_decay` argument a decay;
- identifiers mark the rest: `delta` or `beta` (the delta rule written by hand), `decay`,
  `forget`, `gamma` or `a_log` (a decay), `ssm`, `ssd`, `d_state`, `mamba` or
  `selective` (SSM-like); `softmax` or `scaled_dot_product_attention` calls without a
  linear-RNN op mark softmax attention.

Every recurrence in the module counts, a second path's included. It is a hint for
spreading the search, not a verdict on what the code does: code can name things freely.
"""

from __future__ import annotations

import ast
import enum
import functools
import re

from loop.syntax import parse


class Family(enum.StrEnum):
    """The update rule of a mixer's recurrence, coarsely."""

    SOFTMAX = "softmax"
    ADDITIVE = "additive"  # S += k v^T, no forgetting
    DECAYED = "decayed"  # additive with a fixed or data-dependent decay (RetNet, GLA)
    DELTA = "delta"  # S += beta k (v - S^T k)^T
    GATED_DELTA = "gated_delta"  # the delta rule with a decay
    SSM = "ssm"  # Mamba-style selective state space
    OTHER = "other"


BASELINE_FAMILIES = {
    "SoftmaxAttention": Family.SOFTMAX,
    "LinearAttention": Family.ADDITIVE,
    "RetNet": Family.DECAYED,
    "Mamba2Like": Family.SSM,
    "DeltaNet": Family.DELTA,
    "GatedDeltaNet": Family.GATED_DELTA,
}
RNN_OPS = frozenset({"chunk_linear_rnn", "linear_rnn_step"})
SOFTMAX_CALLS = frozenset({"softmax", "scaled_dot_product_attention"})
DECAY_WORDS = re.compile(r"decay|forget|gamma|a_log")
DELTA_WORDS = re.compile(r"delta|beta")
SSM_WORDS = re.compile(r"ssm|ssd|d_state|mamba|selective")
MAX_CODE_CHARS = 200_000  # bounds parsing hostile input, as the screen does


@functools.lru_cache(maxsize=2048)
def update_family(code: str) -> Family:
    """The family of `code`'s update rule; OTHER when the code does not parse or says
    nothing the rules above recognise. Cached: parents are drawn from the whole archive."""
    if len(code) > MAX_CODE_CHARS:
        return Family.OTHER
    try:
        tree = parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return Family.OTHER
    baseline = _baseline(tree)
    if baseline is not None:
        return baseline
    signals = _signals(tree)
    if "ssm" in signals:
        return Family.SSM
    if "delta" in signals:
        return Family.GATED_DELTA if "decay" in signals else Family.DELTA
    if "rnn" in signals:
        return Family.DECAYED if "decay" in signals else Family.ADDITIVE
    if "softmax" in signals:
        return Family.SOFTMAX
    if "decay" in signals:
        return Family.DECAYED
    return Family.OTHER


def _baseline(tree: ast.Module) -> Family | None:
    """The family of `from kernels.baselines import X as Mixer`."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "kernels.baselines":
            for alias in node.names:
                if alias.asname == "Mixer" and alias.name in BASELINE_FAMILIES:
                    return BASELINE_FAMILIES[alias.name]
    return None


def _signals(tree: ast.Module) -> set[str]:
    signals: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _called(node)
            if name in RNN_OPS:
                signals.add("rnn")
                for kw in node.keywords:
                    if kw.arg in ("beta", "beta_t") and not _is_none(kw.value):
                        signals.add("delta")
                    elif kw.arg in ("log_decay", "log_decay_t") and not _is_none(kw.value):
                        signals.add("decay")
            elif name in SOFTMAX_CALLS:
                signals.add("softmax")
        for word in _identifiers(node):
            if SSM_WORDS.search(word):
                signals.add("ssm")
            if DECAY_WORDS.search(word):
                signals.add("decay")
            if DELTA_WORDS.search(word):
                signals.add("delta")
    return signals


def _called(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _identifiers(node: ast.AST) -> list[str]:
    """Names a node introduces or reads, lower-cased (comments and strings never count)."""
    if isinstance(node, ast.Name):
        return [node.id.lower()]
    if isinstance(node, ast.Attribute):
        return [node.attr.lower()]
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
        return [node.name.lower()]
    if isinstance(node, ast.arg):
        return [node.arg.lower()]
    return []
