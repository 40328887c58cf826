"""The harness-owned backbone around a candidate mixer: embedding, blocks, head.

Each block is pre-norm residual branches: a short causal depthwise convolution (kernel
3), then the mixer, then (with `mlp_hidden` > 0) a gated MLP (SwiGLU). The MQAR screening
backbone has no MLP, so what it can recall is what the mixer can recall; the language
model turns the MLP on, as a real small language model has one. `forward` runs whole
sequences; `init_state` and `step` run one token at a time with a flat tuple of tensors
as state, so both paths export as graphs of fixed shape and the evaluator can check that
they agree. `features` and `step_features` stop before the head: the exported graphs
return those, and the evaluator applies the head itself, a slice at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels.ops import causal_conv1d, causal_conv1d_step

State = tuple[Tensor, ...]


class MixerLike(Protocol):
    """The candidate interface as the backbone calls it (DESIGN section 3)."""

    def __call__(self, x: Tensor) -> Tensor: ...
    def init_state(self, batch: int) -> State: ...
    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]: ...


def swiglu_hidden(d_model: int, multiple: int = 64) -> int:
    """The usual SwiGLU width: 8/3 of d_model (as many weights as a 4x GELU MLP), rounded
    up to a multiple of `multiple` for the matmuls."""
    return -(-(8 * d_model) // (3 * multiple)) * multiple


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of the harness model; the MQAR screening defaults are DESIGN section 3's.

    `mlp_hidden` > 0 adds a SwiGLU MLP of that width to every block (the LM task's
    backbone; `swiglu_hidden(d_model)` is the usual width); 0 leaves it out (MQAR).
    """

    vocab_size: int = 1024
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    conv_kernel: int = 3
    tie_embeddings: bool = True
    mlp_hidden: int = 0

    def __post_init__(self) -> None:
        if self.mlp_hidden < 0:
            raise ValueError("mlp_hidden must not be negative (0: no MLP)")


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), gate and up as one matmul; position-wise, so its step
    is its forward on one token."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        out: Tensor = self.down(F.silu(gate) * up)
        return out


class _Block(nn.Module):
    """Pre-norm residual short conv, then pre-norm residual mixer, then (optionally) a
    pre-norm residual SwiGLU MLP."""

    def __init__(self, mixer: nn.Module, d_model: int, conv_kernel: int, mlp_hidden: int) -> None:
        super().__init__()
        self.conv_norm = nn.RMSNorm(d_model, eps=1e-6)
        # Same initial scale as nn.Conv1d's default for a depthwise conv of this width.
        bound = 1.0 / math.sqrt(conv_kernel)
        self.conv_weight = nn.Parameter(torch.empty(d_model, conv_kernel).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.zeros(d_model))
        self.mixer_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.mixer = mixer
        self.mlp_norm: nn.RMSNorm | None = None
        self.mlp: SwiGLU | None = None
        if mlp_hidden > 0:
            self.mlp_norm = nn.RMSNorm(d_model, eps=1e-6)
            self.mlp = SwiGLU(d_model, mlp_hidden)

    @property
    def typed_mixer(self) -> MixerLike:
        return cast(MixerLike, self.mixer)

    def _mlp(self, h: Tensor) -> Tensor:
        if self.mlp is None or self.mlp_norm is None:
            return h
        out: Tensor = h + self.mlp(self.mlp_norm(h))
        return out

    def forward(self, h: Tensor) -> Tensor:
        h = h + causal_conv1d(self.conv_norm(h), self.conv_weight, self.conv_bias)
        h = h + self.typed_mixer(self.mixer_norm(h))
        return self._mlp(h)

    def step(
        self, h_t: Tensor, conv_state: Tensor, mixer_state: State
    ) -> tuple[Tensor, Tensor, State]:
        y_t, conv_state = causal_conv1d_step(
            self.conv_norm(h_t), conv_state, self.conv_weight, self.conv_bias
        )
        h_t = h_t + y_t
        out, mixer_state = self.typed_mixer.step(self.mixer_norm(h_t), mixer_state)
        return self._mlp(h_t + out), conv_state, tuple(mixer_state)


class Backbone(nn.Module):
    """Token embedding, `n_layers` blocks around instances of `mixer_cls`, final norm, head.

    `mixer_cls(d_model, n_heads, **mixer_options)` builds each layer's mixer. With `seed`,
    all parameters are initialised from that seed without touching torch's global RNG.
    """

    def __init__(
        self,
        mixer_cls: Callable[..., nn.Module],
        config: BackboneConfig | None = None,
        mixer_options: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config or BackboneConfig()
        options = dict(mixer_options or {})
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self._build(mixer_cls, options)
        # Per-layer counts of mixer state tensors, fixed here so `step` can split the flat
        # state with plain Python ints (no tensor-dependent control flow in the graph).
        self.state_counts: tuple[int, ...] = tuple(
            len(tuple(block.typed_mixer.init_state(1))) for block in self._blocks()
        )

    def _build(self, mixer_cls: Callable[..., nn.Module], options: dict[str, Any]) -> None:
        cfg = self.config
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.blocks = nn.ModuleList(
            _Block(
                mixer_cls(cfg.d_model, cfg.n_heads, **options),
                cfg.d_model,
                cfg.conv_kernel,
                cfg.mlp_hidden,
            )
            for _ in range(cfg.n_layers)
        )
        self.final_norm = nn.RMSNorm(cfg.d_model, eps=1e-6)
        self.head: nn.Linear | None = None
        if not cfg.tie_embeddings:
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
            nn.init.normal_(self.head.weight, std=0.02)

    def _blocks(self) -> list[_Block]:
        return [block for block in self.blocks if isinstance(block, _Block)]

    @property
    def head_weight(self) -> Tensor:
        """The output projection (V, D): the embedding itself when tied."""
        return self.embedding.weight if self.head is None else self.head.weight

    def head_logits(self, h: Tensor) -> Tensor:
        """Logits from final hidden states of any leading shape (..., D) -> (..., V)."""
        return F.linear(self.final_norm(h), self.head_weight)

    def parameter_split(self) -> tuple[int, int]:
        """(embedding, non-embedding) parameter counts; the embedding side holds the token
        embedding and, when untied, the head."""
        embedding = self.embedding.weight.numel() + (
            0 if self.head is None else self.head.weight.numel()
        )
        total = sum(p.numel() for p in self.parameters())
        return embedding, total - embedding

    def hidden(self, tokens: Tensor) -> Tensor:
        """Final hidden states before the norm and head, (B, T) -> (B, T, D).

        Training applies the head only at positions that carry a loss (MQAR queries).
        """
        h: Tensor = self.embedding(tokens)
        for block in self._blocks():
            h = block(h)
        return h

    def features(self, tokens: Tensor) -> Tensor:
        """(B, T) int64 -> normalised final hidden states (B, T, D): logits before the head."""
        out: Tensor = self.final_norm(self.hidden(tokens))
        return out

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, T) int64 -> logits (B, T, V)."""
        return self.head_logits(self.hidden(tokens))

    def init_state(self, batch: int) -> State:
        """Flat state: per layer, the conv state (B, D, W-1) then the mixer's own tensors."""
        param = self.embedding.weight
        parts: list[Tensor] = []
        for block in self._blocks():
            parts.append(param.new_zeros(batch, self.config.d_model, self.config.conv_kernel - 1))
            parts.extend(block.typed_mixer.init_state(batch))
        return tuple(parts)

    def step(self, token_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One token for every sequence: token_t (B,) -> (logits (B, V), new flat state)."""
        features, new_state = self.step_features(token_t, state)
        return F.linear(features, self.head_weight), new_state

    def step_features(self, token_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One token: token_t (B,) -> (normalised final hidden state (B, D), new flat state)."""
        h_t = self.embedding(token_t)
        new_state: list[Tensor] = []
        offset = 0
        for block, count in zip(self._blocks(), self.state_counts, strict=True):
            conv_state = state[offset]
            mixer_state = tuple(state[offset + 1 : offset + 1 + count])
            offset += 1 + count
            h_t, conv_state, mixer_state = block.step(h_t, conv_state, mixer_state)
            new_state.append(conv_state)
            new_state.extend(mixer_state)
        out: Tensor = self.final_norm(h_t)
        return out, tuple(new_state)
