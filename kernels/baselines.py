"""The six baseline token mixers every candidate is scored against.

Each follows the Mixer interface (DESIGN section 3): `forward` (B, T, D) -> (B, T, D) is
causal; `init_state(batch)` returns a flat tuple of tensors whose shapes do not depend on T,
each with the batch as its leading dim; `step` consumes one token and agrees with `forward`
up to rounding. All of it is plain torch with static shapes, so it exports with
torch.export. Options are keyword arguments of each constructor; an unknown option raises.
Sizes are modest on purpose: the CPU screening task runs them at d_model=64, n_heads=2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels.layers import (
    ShortConv,
    a_log_init,
    dt_bias_init,
    head_dim,
    l2_normalize,
    rms_norm,
    split_heads,
)
from kernels.ops import chunk_linear_rnn, linear_rnn_step

State = tuple[Tensor, ...]


class SoftmaxAttention(nn.Module):
    """Causal softmax attention, the quadratic reference.

    Its recurrent state is a KV cache of fixed capacity `max_len` plus a position counter
    (in the parameters' dtype: exact below 2**24 in float32, below 256 in bfloat16). Past
    capacity the cache is a ring buffer, so the step attends to the last `max_len` tokens;
    `forward` applies the same sliding window when T > max_len, which keeps the two
    consistent at every length. No positional encoding: order reaches it through the
    backbone's short convolution (use_short_conv=True adds one on q, k, v). A per-head
    RMSNorm on the output keeps the averaged values at unit scale; without it, at width 64,
    MQAR training sat at chance for 1,500 steps.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        max_len: int = 512,
        use_short_conv: bool = False,
        conv_size: int = 4,
    ) -> None:
        super().__init__()
        if max_len < 1:
            raise ValueError(f"max_len={max_len} must be at least 1")
        self.n_heads = n_heads
        self.head_dim = head_dim(d_model, n_heads)
        self.max_len = max_len
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = ShortConv(3 * d_model, conv_size) if use_short_conv else None
        self.norm = nn.Parameter(torch.ones(self.head_dim))
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        mixed = self.qkv(x) if self.conv is None else self.conv(self.qkv(x))
        q, k, v = split_heads(mixed, 3 * self.n_heads).transpose(1, 2).chunk(3, dim=1)
        length = x.shape[1]
        if length <= self.max_len:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            pos = torch.arange(length, device=x.device)
            gap = pos[:, None] - pos[None, :]
            window = (gap >= 0) & (gap < self.max_len)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=window)
        y: Tensor = self.out(rms_norm(o.transpose(1, 2), self.norm).flatten(-2))
        return y

    def init_state(self, batch: int) -> State:
        w = self.out.weight
        cache = w.new_zeros(batch, self.n_heads, self.max_len, self.head_dim)
        kv = (cache, cache.clone(), w.new_zeros(batch))
        return kv if self.conv is None else (self.conv.init_state(batch), *kv)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        k_cache, v_cache, pos = state[-3:]
        mixed = self.qkv(x_t)
        if self.conv is not None:
            mixed, conv_state = self.conv.step(mixed, state[0])
        q, k, v = split_heads(mixed, 3 * self.n_heads).chunk(3, dim=1)  # (B, H, Dh) each
        slots = torch.arange(self.max_len, device=x_t.device, dtype=pos.dtype)
        write = (slots[None, :] == torch.remainder(pos, self.max_len)[:, None])[:, None, :, None]
        k_cache = torch.where(write, k[:, :, None, :], k_cache)
        v_cache = torch.where(write, v[:, :, None, :], v_cache)
        filled = (slots[None, :] <= pos[:, None])[:, None, :]  # (B, 1, L)
        scores = torch.einsum("bhd,bhld->bhl", q, k_cache) / math.sqrt(self.head_dim)
        weights = scores.masked_fill(~filled, float("-inf")).softmax(-1)
        o = torch.einsum("bhl,bhld->bhd", weights, v_cache)
        y: Tensor = self.out(rms_norm(o, self.norm).flatten(-2))
        kv = (k_cache, v_cache, pos + 1)
        return y, kv if self.conv is None else (conv_state, *kv)


class LinearAttention(nn.Module):
    """Additive linear attention with the elu+1 feature map (Katharopoulos et al., 2020).

    Normalisation: a per-head RMSNorm on the output (as fla's linear attention layer does)
    instead of the running denominator phi(q_t) . sum_s phi(k_s). The norm makes the
    denominator redundant (it is a positive per-head scalar the norm divides out), keeps
    the state a plain (K, V) matrix, and trains where the bare denominator sat at chance.
    use_short_conv=True adds a short conv with SiLU on q, k, v before the feature map.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        use_short_conv: bool = False,
        conv_size: int = 4,
        chunk_size: int = 32,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim(d_model, n_heads)
        self.chunk_size = chunk_size
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = ShortConv(3 * d_model, conv_size) if use_short_conv else None
        self.norm = nn.Parameter(torch.ones(self.head_dim))
        self.out = nn.Linear(d_model, d_model, bias=False)

    def _features(self, mixed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = split_heads(mixed, 3 * self.n_heads).chunk(3, dim=-2)
        return F.elu(q) + 1, F.elu(k) + 1, v

    def forward(self, x: Tensor) -> Tensor:
        mixed = self.qkv(x) if self.conv is None else self.conv(self.qkv(x))
        q, k, v = self._features(mixed)
        o, _ = chunk_linear_rnn(q, k, v, chunk_size=self.chunk_size)
        y: Tensor = self.out(rms_norm(o, self.norm).flatten(-2))
        return y

    def init_state(self, batch: int) -> State:
        w = self.out.weight
        memory = w.new_zeros(batch, self.n_heads, self.head_dim, self.head_dim)
        return (memory,) if self.conv is None else (self.conv.init_state(batch), memory)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        mixed = self.qkv(x_t)
        if self.conv is not None:
            mixed, conv_state = self.conv.step(mixed, state[0])
        q, k, v = self._features(mixed)
        o, memory = linear_rnn_step(q, k, v, state[-1])
        y: Tensor = self.out(rms_norm(o, self.norm).flatten(-2))
        return y, (memory,) if self.conv is None else (conv_state, memory)


def retnet_log_decays(n_heads: int) -> Tensor:
    """RetNet's multi-scale fixed decays: head h keeps gamma_h = 1 - 2**(-5-h) per token."""
    return torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(n_heads, dtype=torch.float64))).float()


class RetNet(nn.Module):
    """Retention: additive linear attention with a fixed decay per head (Sun et al., 2023).

    Per-head RMSNorm (RetNet's group norm) follows the retention. RetNet's SiLU output gate
    is an option (output_gate=True), off by default: at width 64 it kept MQAR training at
    chance for 1,500 steps, while without it the same model learns. No xPos rotation: the
    decay already orders the past and the backbone's short conv supplies local order.
    """

    log_decay: Tensor

    def __init__(
        self, d_model: int, n_heads: int, *, output_gate: bool = False, chunk_size: int = 32
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim(d_model, n_heads)
        self.chunk_size = chunk_size
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.gate = nn.Linear(d_model, d_model, bias=False) if output_gate else None
        self.norm = nn.Parameter(torch.ones(self.head_dim))
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.register_buffer("log_decay", retnet_log_decays(n_heads), persistent=False)

    def _finish(self, o: Tensor, x: Tensor) -> Tensor:
        gate = None if self.gate is None else split_heads(self.gate(x), self.n_heads)
        y: Tensor = self.out(rms_norm(o, self.norm, gate).flatten(-2))
        return y

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = split_heads(self.qkv(x), 3 * self.n_heads).chunk(3, dim=-2)
        log_decay = self.log_decay.expand(x.shape[0], x.shape[1], self.n_heads)
        o, _ = chunk_linear_rnn(q, k, v, log_decay=log_decay, chunk_size=self.chunk_size)
        return self._finish(o, x)

    def init_state(self, batch: int) -> State:
        w = self.out.weight
        return (w.new_zeros(batch, self.n_heads, self.head_dim, self.head_dim),)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        q, k, v = split_heads(self.qkv(x_t), 3 * self.n_heads).chunk(3, dim=-2)
        log_decay = self.log_decay.expand(x_t.shape[0], self.n_heads)
        o, s = linear_rnn_step(q, k, v, state[0], log_decay_t=log_decay)
        return self._finish(o, x_t), (s,)


class Mamba2Like(nn.Module):
    """Mamba2's block (Dao and Gu, 2024) around its SSD recurrence, at the baselines' width.

    Layout, as in Mamba2: one input projection gives (z, x, B, C, dt); a short causal conv
    with SiLU runs on (x, B, C) together; per head, dt = softplus(dt + dt_bias) and
    a = exp(-exp(A_log) * dt), and the SSD recurrence is

        h_t = a_t h_{t-1} + dt_t B_t x_t^T,    y_t = C_t^T h_t + D x_t

    (h is (d_state, head_dim) per head; heads in a group share B and C). Then Mamba2's gated
    RMSNorm, norm(y * SiLU(z)) over each group's channels, and the output projection. In
    linear-RNN terms q = C, k = B, v = dt x, log_decay = -exp(A_log) dt, scale 1.

    A starts uniform in [0.1, 1] rather than Mamba2's [1, 16] (two heads at width 64 need
    the longer initial memory). On MQAR's full recipe (2,000 steps, scripts/bench_mqar.py)
    this block reaches 0.916 mean accuracy (64x8: 1.000); the earlier layout (B and C
    shared by both heads, D starting at 1, no output gate) stayed at 0.050.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        expand: int = 1,
        n_groups: int | None = None,
        d_state: int | None = None,
        output_gate: bool = True,
        a_init_range: tuple[float, float] = (0.1, 1.0),
        dt_init_range: tuple[float, float] = (1e-3, 0.1),
        d_init: float = 0.0,
        conv_size: int = 4,
        chunk_size: int = 32,
    ) -> None:
        super().__init__()
        if expand < 1:
            raise ValueError(f"expand={expand} must be at least 1")
        self.n_heads = n_heads
        self.d_inner = expand * d_model
        self.head_dim = head_dim(self.d_inner, n_heads)
        self.n_groups = n_heads if n_groups is None else n_groups
        if self.n_groups < 1 or n_heads % self.n_groups != 0:
            raise ValueError(
                f"n_groups={self.n_groups} must divide n_heads={n_heads}; B and C are shared "
                "by the heads of a group"
            )
        self.d_state = self.head_dim if d_state is None else d_state
        self.output_gate = output_gate
        self.chunk_size = chunk_size
        self.z_dim = self.d_inner if output_gate else 0
        self.bc_dim = self.n_groups * self.d_state
        conv_channels = self.d_inner + 2 * self.bc_dim
        self.in_proj = nn.Linear(d_model, self.z_dim + conv_channels + n_heads, bias=False)
        self.conv = ShortConv(conv_channels, conv_size, bias=True)
        self.dt_bias = nn.Parameter(dt_bias_init(n_heads, *dt_init_range))
        self.A_log = nn.Parameter(a_log_init(n_heads, *a_init_range))
        self.D = nn.Parameter(torch.full((n_heads,), d_init))
        self.norm = nn.Parameter(torch.ones(self.d_inner // self.n_groups))
        self.out = nn.Linear(self.d_inner, d_model, bias=False)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z, xBC before the conv, dt) from the block's input."""
        conv_channels = self.d_inner + 2 * self.bc_dim
        z, xbc, dt = torch.split(self.in_proj(x), [self.z_dim, conv_channels, self.n_heads], dim=-1)
        return z, xbc, F.softplus(dt + self.dt_bias)

    def _heads(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., H, P) and B, C (..., H, N) from the conv's output, B and C per head."""
        xs, b, c = torch.split(xbc, [self.d_inner, self.bc_dim, self.bc_dim], dim=-1)
        per_group = self.n_heads // self.n_groups
        shape = (*xbc.shape[:-1], self.n_groups, per_group, self.d_state)

        def to_heads(m: Tensor) -> Tensor:
            grouped = split_heads(m, self.n_groups).unsqueeze(-2).expand(shape)
            return grouped.reshape(*xbc.shape[:-1], self.n_heads, self.d_state)

        return split_heads(xs, self.n_heads), to_heads(b), to_heads(c)

    def ssd_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The SSD's (x, B, C, dt) per head for a whole sequence: (B, T, H, P), (B, T, H, N)
        twice and (B, T, H). For tests and probes; `forward` computes the same."""
        _, xbc, dt = self._project(x)
        xs, b, c = self._heads(self.conv(xbc))
        return xs, b, c, dt

    def ssd(
        self, xs: Tensor, b: Tensor, c: Tensor, dt: Tensor, initial_state: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The SSD recurrence over a sequence (without D): (C_t^T h_t (B, T, H, P), h_T)."""
        log_decay = -self.A_log.exp() * dt
        return chunk_linear_rnn(
            c,
            b,
            xs * dt[..., None],
            log_decay=log_decay,
            scale=1.0,
            chunk_size=self.chunk_size,
            initial_state=initial_state,
        )

    def _finish(self, y: Tensor, xs: Tensor, z: Tensor) -> Tensor:
        y = y + self.D[:, None] * xs
        if self.output_gate:
            y = y * F.silu(split_heads(z, self.n_heads))
        grouped = split_heads(y.flatten(-2), self.n_groups)
        out: Tensor = self.out(rms_norm(grouped, self.norm).flatten(-2))
        return out

    def forward(self, x: Tensor) -> Tensor:
        z, xbc, dt = self._project(x)
        xs, b, c = self._heads(self.conv(xbc))
        y, _ = self.ssd(xs, b, c, dt)
        return self._finish(y, xs, z)

    def init_state(self, batch: int) -> State:
        w = self.out.weight
        ssm = w.new_zeros(batch, self.n_heads, self.d_state, self.head_dim)
        return self.conv.init_state(batch), ssm

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        conv_state, ssm = state
        z, xbc, dt = self._project(x_t)
        xbc, conv_state = self.conv.step(xbc, conv_state)
        xs, b, c = self._heads(xbc)
        log_decay = -self.A_log.exp() * dt
        y, ssm = linear_rnn_step(c, b, xs * dt[..., None], ssm, log_decay_t=log_decay, scale=1.0)
        return self._finish(y, xs, z), (conv_state, ssm)


class DeltaNet(nn.Module):
    """DeltaNet (Schlag et al., 2021; Yang et al., 2024): the delta rule, no decay.

    q, k, v pass a short causal conv with SiLU (or SiLU alone with use_short_conv=False);
    q and k are L2-normalised so the delta update is a contraction; beta = sigmoid(W x)
    per head; per-head RMSNorm on the output.
    """

    gated = False

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        use_short_conv: bool = True,
        conv_size: int = 4,
        chunk_size: int = 32,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim(d_model, n_heads)
        self.chunk_size = chunk_size
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.beta = nn.Linear(d_model, n_heads, bias=False)
        self.conv = ShortConv(3 * d_model, conv_size) if use_short_conv else None
        self.norm = nn.Parameter(torch.ones(self.head_dim))
        self.out = nn.Linear(d_model, d_model, bias=False)
        if self.gated:
            self.decay = nn.Linear(d_model, n_heads, bias=False)
            self.dt_bias = nn.Parameter(dt_bias_init(n_heads))
            self.A_log = nn.Parameter(a_log_init(n_heads))
            self.gate = nn.Linear(d_model, d_model, bias=False)

    def _qkv(self, mixed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = split_heads(mixed, 3 * self.n_heads).chunk(3, dim=-2)
        return l2_normalize(q), l2_normalize(k), v

    def _log_decay(self, x: Tensor) -> Tensor | None:
        if not self.gated:
            return None
        return -self.A_log.exp() * F.softplus(self.decay(x) + self.dt_bias)

    def _finish(self, o: Tensor, x: Tensor) -> Tensor:
        gate = split_heads(self.gate(x), self.n_heads) if self.gated else None
        y: Tensor = self.out(rms_norm(o, self.norm, gate).flatten(-2))
        return y

    def forward(self, x: Tensor) -> Tensor:
        mixed = self.qkv(x)
        mixed = F.silu(mixed) if self.conv is None else self.conv(mixed)
        q, k, v = self._qkv(mixed)
        o, _ = chunk_linear_rnn(
            q,
            k,
            v,
            beta=torch.sigmoid(self.beta(x)),
            log_decay=self._log_decay(x),
            chunk_size=self.chunk_size,
        )
        return self._finish(o, x)

    def init_state(self, batch: int) -> State:
        w = self.out.weight
        memory = w.new_zeros(batch, self.n_heads, self.head_dim, self.head_dim)
        return (memory,) if self.conv is None else (self.conv.init_state(batch), memory)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        mixed = self.qkv(x_t)
        if self.conv is None:
            mixed, conv_state = F.silu(mixed), None
        else:
            mixed, conv_state = self.conv.step(mixed, state[0])
        q, k, v = self._qkv(mixed)
        o, memory = linear_rnn_step(
            q,
            k,
            v,
            state[-1],
            beta_t=torch.sigmoid(self.beta(x_t)),
            log_decay_t=self._log_decay(x_t),
        )
        new_state = (memory,) if conv_state is None else (conv_state, memory)
        return self._finish(o, x_t), new_state


class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet (Yang et al., 2025): DeltaNet plus a Mamba2-style decay and output gate.

    alpha_t = exp(-exp(A_log) * softplus(W_a x + dt_bias)) per head scales the memory before
    each delta update; the output is RMSNorm(o) * SiLU(W_g x).
    """

    gated = True


BASELINES: dict[str, type[nn.Module]] = {
    "softmax": SoftmaxAttention,
    "linear": LinearAttention,
    "retnet": RetNet,
    "mamba2": Mamba2Like,
    "deltanet": DeltaNet,
    "gated_deltanet": GatedDeltaNet,
}
