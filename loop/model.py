"""The harness-owned backbone around a candidate mixer: embedding, blocks, head.

Each block is two pre-norm residual branches: a short causal depthwise convolution
(kernel 3), then the mixer. There is no MLP, so what the model can recall is what the
mixer can recall. `forward` runs whole sequences; `init_state` and `step` run one token
at a time with a flat tuple of tensors as state, so both paths export as graphs of fixed
shape and the evaluator can check that they agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, ...]


class MixerLike(Protocol):
    """The candidate interface as the backbone calls it (DESIGN section 3)."""

    def __call__(self, x: Tensor) -> Tensor: ...
    def init_state(self, batch: int) -> State: ...
    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]: ...


def _local_causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Depthwise causal FIR conv, x (B,T,C), weight (C,W): y_t = sum_i w[:,i] x_{t-W+1+i}."""
    width = weight.shape[1]
    padded = F.pad(x.transpose(1, 2), (width - 1, 0))
    return F.conv1d(padded, weight.unsqueeze(1), bias, groups=weight.shape[0]).transpose(1, 2)


def _local_causal_conv1d_step(
    x_t: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One token of the conv above; conv_state (B,C,W-1) holds the previous W-1 inputs."""
    window = torch.cat([conv_state, x_t.unsqueeze(-1)], dim=-1)
    y_t = (window * weight).sum(dim=-1)
    if bias is not None:
        y_t = y_t + bias
    return y_t, window[:, :, 1:]


# One implementation of the short conv for the whole project when the kernels package has
# it; the local copy keeps the harness usable while kernels/ is being built.
try:
    from kernels.ops import causal_conv1d, causal_conv1d_step
except ImportError:
    causal_conv1d = _local_causal_conv1d
    causal_conv1d_step = _local_causal_conv1d_step


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of the harness model; the MQAR screening defaults are DESIGN section 3's."""

    vocab_size: int = 1024
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    conv_kernel: int = 3
    tie_embeddings: bool = True


class _Block(nn.Module):
    """Pre-norm residual short conv, then pre-norm residual mixer."""

    def __init__(self, mixer: nn.Module, d_model: int, conv_kernel: int) -> None:
        super().__init__()
        self.conv_norm = nn.RMSNorm(d_model, eps=1e-6)
        # Same initial scale as nn.Conv1d's default for a depthwise conv of this width.
        bound = 1.0 / math.sqrt(conv_kernel)
        self.conv_weight = nn.Parameter(torch.empty(d_model, conv_kernel).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.zeros(d_model))
        self.mixer_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.mixer = mixer

    @property
    def typed_mixer(self) -> MixerLike:
        return cast(MixerLike, self.mixer)

    def forward(self, h: Tensor) -> Tensor:
        h = h + causal_conv1d(self.conv_norm(h), self.conv_weight, self.conv_bias)
        return h + self.typed_mixer(self.mixer_norm(h))

    def step(
        self, h_t: Tensor, conv_state: Tensor, mixer_state: State
    ) -> tuple[Tensor, Tensor, State]:
        y_t, conv_state = causal_conv1d_step(
            self.conv_norm(h_t), conv_state, self.conv_weight, self.conv_bias
        )
        h_t = h_t + y_t
        out, mixer_state = self.typed_mixer.step(self.mixer_norm(h_t), mixer_state)
        return h_t + out, conv_state, tuple(mixer_state)


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
            _Block(mixer_cls(cfg.d_model, cfg.n_heads, **options), cfg.d_model, cfg.conv_kernel)
            for _ in range(cfg.n_layers)
        )
        self.final_norm = nn.RMSNorm(cfg.d_model, eps=1e-6)
        self.head: nn.Linear | None = None
        if not cfg.tie_embeddings:
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
            nn.init.normal_(self.head.weight, std=0.02)

    def _blocks(self) -> list[_Block]:
        return [block for block in self.blocks if isinstance(block, _Block)]

    def head_logits(self, h: Tensor) -> Tensor:
        """Logits from final hidden states of any leading shape (..., D) -> (..., V)."""
        weight = self.embedding.weight if self.head is None else self.head.weight
        return F.linear(self.final_norm(h), weight)

    def hidden(self, tokens: Tensor) -> Tensor:
        """Final hidden states before the norm and head, (B, T) -> (B, T, D).

        Training applies the head only at positions that carry a loss (MQAR queries).
        """
        h: Tensor = self.embedding(tokens)
        for block in self._blocks():
            h = block(h)
        return h

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
        return self.head_logits(h_t), tuple(new_state)
