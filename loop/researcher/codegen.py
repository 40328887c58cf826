"""Genome -> Python source of a self-contained `Mixer` module, readable like hand-written code.

The source depends on the genome alone (no parent names, no timestamps), so its digest
identifies the genome. Only the parts a genome uses are emitted; `forward` and `step`
share every per-token computation through small methods that accept a leading time axis
or not, so they can differ only where the recurrence itself is parallel or sequential.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from loop.researcher.describe import genome_summary
from loop.researcher.grammar import Genome

_LINE = 100  # the project's line length; generated code keeps to it


@dataclass
class _Source:
    """Lines of one class body region, with helpers to keep calls within the line length."""

    lines: list[str] = field(default_factory=list)

    def add(self, indent: int, *lines: str) -> None:
        self.lines.extend((" " * indent + line) if line else "" for line in lines)

    def call(self, indent: int, lhs: str, function: str, args: list[str]) -> None:
        """`lhs = function(args)` on one line, or one argument per line when too long."""
        joined = ", ".join(args)
        if indent + len(f"{lhs} = {function}({joined})") <= _LINE:
            self.add(indent, f"{lhs} = {function}({joined})")
        elif indent + 4 + len(joined) <= _LINE:
            self.add(indent, f"{lhs} = {function}(", "    " + joined, ")")
        else:
            self.add(indent, f"{lhs} = {function}(")
            self.add(indent + 4, *(arg + "," for arg in args))
            self.add(indent, ")")


def render(genome: Genome) -> str:
    """The module source for `genome`: docstring, imports, GENOME literal, class Mixer."""
    body = _Source()
    _genome_literal(body, genome)
    _class(body, genome)
    text = "\n".join(body.lines)
    head = _Source()
    _docstring(head, genome)
    _imports(head, text)
    return "\n".join(head.lines) + "\n" + text + "\n"


_OPS = ("causal_conv1d", "causal_conv1d_step", "chunk_linear_rnn", "linear_rnn_step")


def _imports(src: _Source, body: str) -> None:
    """Exactly the imports the body uses (found by name), so none is left unused."""
    if re.search(r"\bmath\.", body):
        src.add(0, "import math", "")
    if re.search(r"\btorch\.", body):
        src.add(0, "import torch")
    if re.search(r"\bF\.", body):
        src.add(0, "import torch.nn.functional as F")
    src.add(0, "from torch import Tensor, nn", "")
    ops = [name for name in _OPS if re.search(rf"\b{name}\(", body)]
    src.add(0, f"from kernels.ops import {', '.join(ops)}", "")


def _docstring(src: _Source, genome: Genome) -> None:
    src.add(0, f'"""{genome.name}: a generated token mixer.')
    src.add(0, "", "Why each part is here (for multi-query associative recall):")
    for line in genome_summary(genome):
        src.add(0, *_wrap(line, 0, "  "))
    src.add(
        0,
        "",
        "The GENOME literal below is this design in the researcher's grammar; it is read",
        "back with ast.literal_eval, never by running this module.",
        '"""',
        "",
    )


def _genome_literal(src: _Source, genome: Genome) -> None:
    src.add(0, "GENOME = {")
    for key, value in genome.to_dict().items():
        src.add(4, f"{key!r}: {value!r},".replace("'", '"'))
    src.add(0, "}")
    constants = []
    if genome.conv:
        constants.append(f"CONV_WIDTH = {genome.conv}  # short convolution on q, k and v")
    if genome.path == "conv":
        constants.append(f"PATH_WIDTH = {genome.path_size}  # the convolution path over v")
    if genome.path == "local":
        constants.append(f"WINDOW = {genome.path_size}  # tokens the local path attends to")
    if constants:
        src.add(0, "", *constants)
    if genome.feature != "identity" or genome.qk_l2:
        _feature_function(src, genome)


def _wrap(text: str, indent: int, hanging: str) -> list[str]:
    """Greedy word wrap within the line length; continuation lines get `hanging`."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        prefix = "" if not lines and not current else hanging
        candidate = f"{current} {word}" if current else prefix + word
        if current and indent + len(candidate) > _LINE - 4:
            lines.append(current)
            current = hanging + word
        else:
            current = candidate
    lines.append(current)
    return lines


_FEATURE_EXPR = {
    "identity": "x",
    "elu1": "F.elu(x) + 1.0",
    "relu": "F.relu(x)",
    "silu": "F.silu(x)",
}


def _feature_function(src: _Source, genome: Genome) -> None:
    expr = _FEATURE_EXPR[genome.feature]
    doc = f"{genome.feature} feature map for q and k"
    if genome.qk_l2:
        expr = f"F.normalize({expr}, dim=-1)"
        doc += ", L2-normalised over the head dimension"
    src.add(0, "", "", "def _feature_map(x: Tensor) -> Tensor:")
    src.add(4, f'"""{doc[0].upper() + doc[1:]}."""', f"return {expr}")


def _class(src: _Source, genome: Genome) -> None:
    src.add(0, "", "", "class Mixer(nn.Module):")
    src.add(4, '"""The mixer; the module docstring says why each part is here."""', "")
    _init(src, genome)
    _forward(src, genome)
    _init_state(src, genome)
    _step(src, genome)
    _split(src, genome)
    _decay_method(src, genome.decay, "")
    if genome.path == "rnn":
        _decay_method(src, genome.path_decay, "path_")
    if genome.path == "local":
        _local_methods(src)
    if genome.path != "none":
        _fuse_method(src)
    _output_method(src, genome)


def _init(src: _Source, genome: Genome) -> None:
    src.add(4, "def __init__(self, d_model: int, n_heads: int, **options: object) -> None:")
    src.add(
        8,
        "super().__init__()",
        "if options:  # the genome fixes every choice; a stray option is a caller's mistake",
        '    raise TypeError(f"unexpected options {sorted(options)}")',
        "if d_model % n_heads != 0:",
        '    raise ValueError("d_model must be a multiple of n_heads")',
        "self.d_model = d_model",
        "self.n_heads = n_heads",
        "self.head_dim = d_model // n_heads",
        "self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=False)",
    )
    if genome.conv:
        src.add(
            8,
            "# Depthwise causal filter over the 3 * d_model channels of q, k and v.",
            "bound = 1.0 / math.sqrt(CONV_WIDTH)",
        )
        src.call(
            8,
            "self.qkv_conv",
            "nn.Parameter",
            ["torch.empty(3 * d_model, CONV_WIDTH).uniform_(-bound, bound)"],
        )
    if genome.update == "delta":
        src.add(8, "self.beta_proj = nn.Linear(d_model, n_heads)  # write strength per head")
    _decay_params(src, genome.decay, "")
    if genome.path == "rnn":
        _decay_params(src, genome.path_decay, "path_")
    if genome.path == "conv":
        src.add(8, "path_bound = 1.0 / math.sqrt(PATH_WIDTH)")
        src.call(
            8,
            "self.path_conv",
            "nn.Parameter",
            ["torch.empty(d_model, PATH_WIDTH).uniform_(-path_bound, path_bound)"],
        )
    if genome.path != "none":
        src.add(8, "self.router = nn.Linear(d_model, 2 * n_heads)  # per head: main vs second")
    if genome.norm == "rms":
        src.add(8, "self.norm_weight = nn.Parameter(torch.ones(self.head_dim))")
    if genome.gate != "none":
        src.add(8, "self.gate_proj = nn.Linear(d_model, d_model, bias=False)")
    src.add(8, "self.out_proj = nn.Linear(d_model, d_model, bias=False)", "")


def _decay_params(src: _Source, decay: str, prefix: str) -> None:
    if decay == "fixed":
        src.add(
            8,
            "# RetNet's rates: head h keeps gamma_h = 1 - 2^(-5 - h) of its state per token.",
            "heads = torch.arange(n_heads, dtype=torch.float32)",
            f'self.register_buffer("{prefix}fixed_log_decay", '
            "torch.log1p(-(2.0 ** (-5.0 - heads))))",
        )
    elif decay == "data":
        src.add(
            8,
            "# Mamba2's parametrisation: log decay = -exp(A) * softplus(dt(x) + dt_bias), with",
            "# A starting at 1..H and the step size dt starting log-spaced in [1e-3, 1e-1].",
            f"self.{prefix}dt_proj = nn.Linear(d_model, n_heads, bias=False)",
            f"{prefix}dt = torch.exp(torch.linspace(math.log(1e-3), math.log(1e-1), n_heads))",
        )
        src.call(
            8,
            f"self.{prefix}dt_bias",
            "nn.Parameter",
            [f"{prefix}dt + torch.log(-torch.expm1(-{prefix}dt))"],
        )
        src.call(
            8,
            f"self.{prefix}a_log",
            "nn.Parameter",
            ["torch.log(torch.arange(1, n_heads + 1, dtype=torch.float32))"],
        )
    elif decay == "data_floor":
        src.add(
            8,
            "# Forget gate from x, kept above a learned per-head floor (starting 0.5 to 0.95).",
            f"self.{prefix}forget_proj = nn.Linear(d_model, n_heads)",
            f"self.{prefix}floor_logit = nn.Parameter(torch.linspace(0.0, 3.0, n_heads))",
        )


def _rnn_args(genome: Genome, decay: str, prefix: str, x: str, suffix: str) -> list[str]:
    args = []
    if genome.update == "delta":
        args.append(f"beta{suffix}=beta")
    if decay != "none":
        args.append(f"log_decay{suffix}=self._{prefix}log_decay({x})")
    return args


def _forward(src: _Source, genome: Genome) -> None:
    src.add(4, "def forward(self, x: Tensor) -> Tensor:")
    src.add(8, '"""(B, T, D) -> (B, T, D), causal: the whole sequence at once."""')
    if genome.conv:
        src.add(8, "q, k, v = self._split(causal_conv1d(self.qkv_proj(x), self.qkv_conv))")
    else:
        src.add(8, "q, k, v = self._split(self.qkv_proj(x))")
    if genome.update == "delta":
        src.add(8, "beta = torch.sigmoid(self.beta_proj(x))")
    args = ["q", "k", "v", *_rnn_args(genome, genome.decay, "", "x", "")]
    src.call(8, "o, _", "chunk_linear_rnn", args)
    if genome.path == "conv":
        src.add(8, "other = self._heads(causal_conv1d(v.flatten(-2), self.path_conv))")
    elif genome.path == "local":
        src.add(8, "other = self._local_forward(q, k, v)")
    elif genome.path == "rnn":
        args = ["q", "k", "v", *_rnn_args(genome, genome.path_decay, "path_", "x", "")]
        src.call(8, "other, _", "chunk_linear_rnn", args)
    if genome.path != "none":
        src.add(8, "o = self._fuse(x, o, other)")
    src.add(8, "return self._output(x, o)", "")


def _state_parts(genome: Genome) -> list[tuple[str, str]]:
    """(variable name, shape) of each state tensor, in tuple order."""
    matrix = "batch, self.n_heads, self.head_dim, self.head_dim"
    parts = []
    if genome.conv:
        parts.append(("conv_state", "batch, 3 * self.d_model, CONV_WIDTH - 1"))
    parts.append(("rnn_state", matrix))
    if genome.path == "conv":
        parts.append(("path_state", "batch, self.d_model, PATH_WIDTH - 1"))
    elif genome.path == "local":
        window = "batch, WINDOW - 1, self.n_heads, self.head_dim"
        parts += [("window_keys", window), ("window_values", window)]
    elif genome.path == "rnn":
        parts.append(("path_rnn_state", matrix))
    return parts


def _init_state(src: _Source, genome: Genome) -> None:
    src.add(4, "def init_state(self, batch: int) -> tuple[Tensor, ...]:")
    src.add(
        8,
        '"""Zeros on the parameters\' device and dtype; the shapes do not depend on T."""',
        "ref = self.out_proj.weight",
    )
    shapes = [f"ref.new_zeros({shape})" for _, shape in _state_parts(genome)]
    if len(shapes) == 1:
        src.add(8, f"return ({shapes[0]},)", "")
    else:
        src.add(8, "return (", *(f"    {shape}," for shape in shapes), ")", "")


def _tuple(names: list[str], *, bare: bool) -> str:
    """A tuple display as ruff formats it; `bare` drops the parentheses where it may."""
    if len(names) == 1:
        return f"({names[0]},)"
    joined = ", ".join(names)
    return joined if bare else f"({joined})"


def _step(src: _Source, genome: Genome) -> None:
    parts = [name for name, _ in _state_parts(genome)]
    src.add(
        4,
        "def step(self, x_t: Tensor, state: tuple[Tensor, ...])"
        " -> tuple[Tensor, tuple[Tensor, ...]]:",
    )
    src.add(8, '"""One token: x_t (B, D) and the state -> (y_t (B, D), the new state)."""')
    src.add(8, f"{_tuple(parts, bare=True)} = state")
    if genome.conv:
        src.call(
            8,
            "u, conv_state",
            "causal_conv1d_step",
            ["self.qkv_proj(x_t)", "conv_state", "self.qkv_conv"],
        )
        src.add(8, "q, k, v = self._split(u)")
    else:
        src.add(8, "q, k, v = self._split(self.qkv_proj(x_t))")
    if genome.update == "delta":
        src.add(8, "beta = torch.sigmoid(self.beta_proj(x_t))")
    args = ["q", "k", "v", "rnn_state", *_rnn_args(genome, genome.decay, "", "x_t", "_t")]
    src.call(8, "o, rnn_state", "linear_rnn_step", args)
    if genome.path == "conv":
        src.call(
            8,
            "other, path_state",
            "causal_conv1d_step",
            ["v.flatten(-2)", "path_state", "self.path_conv"],
        )
        src.add(8, "other = self._heads(other)")
    elif genome.path == "local":
        src.call(
            8,
            "other, window_keys, window_values",
            "self._local_step",
            ["q", "k", "v", "window_keys", "window_values"],
        )
    elif genome.path == "rnn":
        args = ["q", "k", "v", "path_rnn_state"]
        args += _rnn_args(genome, genome.path_decay, "path_", "x_t", "_t")
        src.call(8, "other, path_rnn_state", "linear_rnn_step", args)
    if genome.path != "none":
        src.add(8, "o = self._fuse(x_t, o, other)")
    src.add(8, f"return self._output(x_t, o), {_tuple(parts, bare=False)}", "")


def _split(src: _Source, genome: Genome) -> None:
    if genome.path == "conv":
        src.add(4, "def _heads(self, x: Tensor) -> Tensor:")
        src.add(8, "return x.unflatten(-1, (self.n_heads, self.head_dim))", "")
    mapped = genome.feature != "identity" or genome.qk_l2
    q, k = ("_feature_map(q)", "_feature_map(k)") if mapped else ("q", "k")
    v = "F.silu(v)" if genome.value == "silu" else "v"
    after = "with the feature maps applied" if mapped or v != "v" else "as projected"
    src.add(4, "def _split(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:")
    src.add(
        8,
        f'"""(..., 3 * D) -> q, k, v of shape (..., H, head_dim), {after}."""',
        "q, k, v = u.unflatten(-1, (3, self.n_heads, self.head_dim)).unbind(-3)",
        f"return {q}, {k}, {v}",
        "",
    )


def _decay_method(src: _Source, decay: str, prefix: str) -> None:
    if decay == "none":
        return
    src.add(4, f"def _{prefix}log_decay(self, x: Tensor) -> Tensor:")
    src.add(8, '"""Log of the per-head decay for each token: (..., D) -> (..., H), all <= 0."""')
    if decay == "fixed":
        src.add(8, f"return self.{prefix}fixed_log_decay.expand(*x.shape[:-1], self.n_heads)", "")
    elif decay == "data":
        src.add(
            8,
            f"step_size = F.softplus(self.{prefix}dt_proj(x) + self.{prefix}dt_bias)",
            f"return -torch.exp(self.{prefix}a_log) * step_size",
            "",
        )
    else:
        src.add(
            8,
            f"floor = torch.sigmoid(self.{prefix}floor_logit)",
            f"keep = floor + (1.0 - floor) * torch.sigmoid(self.{prefix}forget_proj(x))",
            "return torch.log(keep)",
            "",
        )


def _local_methods(src: _Source) -> None:
    src.add(
        4,
        "def _local_forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:",
        '    """Softmax attention over the last WINDOW tokens, zero keys before the start."""',
        "    # Front padding stands for the zero-filled window a fresh state starts with.",
        "    pad = (0, 0, 0, 0, WINDOW - 1, 0)",
        "    keys = F.pad(k, pad).unfold(1, WINDOW, 1)  # (B, T, H, head_dim, WINDOW)",
        "    values = F.pad(v, pad).unfold(1, WINDOW, 1)",
        '    scores = torch.einsum("bthd,bthdw->bthw", q, keys) / math.sqrt(self.head_dim)',
        '    return torch.einsum("bthw,bthdw->bthd", scores.softmax(-1), values)',
        "",
        "def _local_step(",
        "    self, q: Tensor, k: Tensor, v: Tensor, keys: Tensor, values: Tensor",
        ") -> tuple[Tensor, Tensor, Tensor]:",
        '    """One token of `_local_forward`; keys and values hold the previous WINDOW - 1."""',
        "    keys = torch.cat([keys, k.unsqueeze(1)], dim=1)  # (B, WINDOW, H, head_dim)",
        "    values = torch.cat([values, v.unsqueeze(1)], dim=1)",
        '    scores = torch.einsum("bhd,bwhd->bhw", q, keys) / math.sqrt(self.head_dim)',
        '    out = torch.einsum("bhw,bwhd->bhd", scores.softmax(-1), values)',
        "    return out, keys[:, 1:], values[:, 1:]",
        "",
    )


def _fuse_method(src: _Source) -> None:
    src.add(
        4,
        "def _fuse(self, x: Tensor, main: Tensor, other: Tensor) -> Tensor:",
        '    """Per token and head, a softmax over the two paths, computed from x."""',
        "    weights = torch.softmax(self.router(x).unflatten(-1, (self.n_heads, 2)), dim=-1)",
        "    return weights[..., 0:1] * main + weights[..., 1:2] * other",
        "",
    )


def _output_method(src: _Source, genome: Genome) -> None:
    src.add(4, "def _output(self, x: Tensor, o: Tensor) -> Tensor:")
    steps = ["normalise"] if genome.norm == "rms" else []
    steps += ["gate"] if genome.gate != "none" else []
    steps.append("project")
    src.add(8, f'"""Heads (..., H, head_dim) -> (..., D): {", ".join(steps)}."""')
    if genome.norm == "rms":
        src.add(8, "o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight")
    src.add(8, "o = o.flatten(-2)")
    if genome.gate == "sigmoid":
        src.add(8, "o = o * torch.sigmoid(self.gate_proj(x))")
    elif genome.gate == "silu":
        src.add(8, "o = o * F.silu(self.gate_proj(x))")
    src.add(8, "return self.out_proj(o)")
