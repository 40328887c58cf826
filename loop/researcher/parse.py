"""Code -> genome, statically: the GENOME literal of generated code, or a baseline import.

Candidate code is hostile, so nothing here runs it: the source is parsed with `ast` and the
literal read with `ast.literal_eval`. A genome recovered from code someone else edited is a
hint about the design, not a proof of what the code does; the screen checks the code.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping

from loop import syntax
from loop.researcher.grammar import Genome, InvalidGenome

log = logging.getLogger(__name__)

MAX_CODE_CHARS = 200_000  # far above any generated module; bounds parsing hostile input

# The nearest genome to each baseline in kernels.baselines. Where a baseline does
# something the grammar cannot say, the comment names the difference.
BASELINE_GENOMES: Mapping[str, Genome] = {
    # elu+1 features, additive, no decay; its running denominator is replaced by RMSNorm.
    "linear": Genome(
        feature="elu1", qk_l2=False, value="identity", update="additive", conv=0, norm="rms"
    ),
    # Fixed multi-scale decay, per-head RMSNorm and a SiLU output gate, no feature map.
    "retnet": Genome(
        feature="identity",
        qk_l2=False,
        value="identity",
        update="additive",
        decay="fixed",
        conv=0,
        gate="silu",
    ),
    # SSD with one B/C group shared by all heads, v = x * dt and a D skip: the grammar keeps
    # per-head q/k and plain v, and applies the SiLU gate after the norm.
    "mamba2": Genome(qk_l2=False, update="additive", decay="data", gate="silu"),
    "deltanet": Genome(),
    "gated_deltanet": Genome(decay="data", gate="silu"),
}

BASELINE_CLASSES: Mapping[str, str] = {
    "LinearAttention": "linear",
    "RetNet": "retnet",
    "Mamba2Like": "mamba2",
    "DeltaNet": "deltanet",
    "GatedDeltaNet": "gated_deltanet",
}


def genome_from_code(code: str) -> Genome | None:
    """The genome that `code` declares, or None when it declares none (or a broken one).

    Two forms are recognised: a module-level `GENOME = {...}` literal (generated code), and
    `from kernels.baselines import X as Mixer` for a baseline the grammar can express.
    """
    if len(code) > MAX_CODE_CHARS:
        return None
    try:
        tree = syntax.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in tree.body:
        literal = _genome_literal(node)
        if literal is not None:
            return _genome_from_literal(literal)
        baseline = _baseline_import(node)
        if baseline is not None:
            return BASELINE_GENOMES.get(baseline)
    return None


def _genome_literal(node: ast.stmt) -> ast.expr | None:
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "GENOME" for t in node.targets
    ):
        return node.value
    if (
        isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "GENOME"
    ):
        return node.value
    return None


def _genome_from_literal(literal: ast.expr) -> Genome | None:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None
    if not isinstance(value, dict):
        return None
    try:
        return Genome.from_dict(value)
    except InvalidGenome as exc:
        log.debug("GENOME literal is not a valid genome", extra={"error": str(exc)})
        return None


def _baseline_import(node: ast.stmt) -> str | None:
    """The baseline key for `from kernels.baselines import X as Mixer`, else None."""
    if not isinstance(node, ast.ImportFrom) or node.module != "kernels.baselines":
        return None
    for alias in node.names:
        if alias.asname == "Mixer" and alias.name in BASELINE_CLASSES:
            return BASELINE_CLASSES[alias.name]
    return None
